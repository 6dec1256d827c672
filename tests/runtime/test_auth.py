"""Digest authentication end to end (auth, auth_db, uri_db): phones on raw sockets register to a
real pyproxy whose subscribers pyproxyctl added to SQLite, PostgreSQL or MariaDB."""

import subprocess
import sys
import time

import pytest

from database.fresh import BACKENDS, fresh_database
from pyproxy.db import connect
from pyproxy.modules.auth.digest import Nonces

from ._harness import LOOP, status_of
from ._phones import Phone, challenges, contacts, credentials

ROUTE = """
loadmodule "tm"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "auth"
loadmodule "auth_db"
loadmodule "uri_db"
modparam("usrloc", "db_url", "{url}")
modparam("usrloc", "db_mode", 1)
modparam("auth_db", "db_url", "{url}")
modparam("auth_db", "password_column", "{column}")
modparam("auth_db", "calculate_ha1", {calculate})
modparam("uri_db", "db_url", "{url}")
modparam("auth", "secret", "{secret}")
modparam("auth", "digest_algorithms", "SHA-256,MD5")
route {{
    if (method=="OPTIONS" && uri==myself && $rU==$null) {{ sl_send_reply("200", "OK"); exit; }}
    if (method=="REGISTER") {{
        if (!www_authorize("{realm}", "subscriber")) {{
            www_challenge("{realm}", "{qop}");
            exit;
        }}
        if (!check_to()) {{ sl_send_reply("403", "Use To=id"); exit; }}
        consume_credentials();
        save("location");
        exit;
    }}
    if (!proxy_authorize("{realm}", "subscriber")) {{
        proxy_challenge("{realm}", "{qop}");
        exit;
    }}
    if (!check_from()) {{ sl_send_reply("403", "Use From=id"); exit; }}
    sl_send_reply("200", "Authenticated");
}}
"""
REALM = "domA.net"
SECRET = "a test secret"


def ctl(url: str, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "--db-url", url, *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(params=BACKENDS)
def users_db(request, tmp_path):
    """A database with alice (secret) in domA.net, made with pyproxyctl."""
    with fresh_database(request.param, tmp_path) as url:
        ctl(url, "db", "init")
        ctl(url, "add", "--plaintext", f"alice@{REALM}", "secret")     # (calculate_ha1=1 reads it)
        yield url


def start(proxy_factory, url, qop="0", calculate=1):
    column = "password" if calculate else "ha1"
    return proxy_factory(children=2, route=ROUTE.format(url=url, realm=REALM, qop=qop, secret=SECRET,
                                                        column=column, calculate=calculate))


def register(phone, password="secret", user="alice", qop=False, algorithm=None, nc=1, challenge=None):
    """REGISTER, answer the challenge; the final reply."""
    if challenge is None:
        first = phone.register(expires=600)
        assert status_of(first) == 401, first
        offered = challenges(first)
        assert [c["algorithm"] for c in offered] == ["SHA-256", "MD5"]
        assert all(("qop" in c) == qop for c in offered)
        challenge = offered[0] if algorithm != "MD5" else offered[1]
    auth = credentials(challenge, "REGISTER", f"sip:{phone.domain}", user, password, nc=nc)
    return phone.register(expires=600, headers=auth)


def bindings(url: str) -> list:
    return [tuple(r) for r in connect(url).query("SELECT username, contact FROM location")]


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_register_with_digest(proxy_factory, users_db, algorithm):
    proxy = start(proxy_factory, users_db)
    alice = Phone(proxy.port, domain=REALM)
    try:
        ok = register(alice, algorithm=algorithm)
        assert status_of(ok) == 200, ok
        assert len(contacts(ok)) == 1
    finally:
        alice.close()


def test_a_wrong_password_gets_401_and_no_binding(proxy_factory, users_db):
    proxy = start(proxy_factory, users_db, calculate=0)        # the stored HA1 this time
    alice = Phone(proxy.port, domain=REALM)
    try:
        assert status_of(register(alice, password="guess")) == 401
        assert status_of(register(alice, user="mallory")) == 401
        assert bindings(users_db) == []
        logged = proxy.log()       # (written before the 401 went): at the default level, for fail2ban
        assert f"NOTICE: authorization of alice@{REALM} from {LOOP} failed: wrong password" in logged
        assert f"NOTICE: authorization of mallory@{REALM} from {LOOP} failed: no such user" in logged
        assert status_of(register(alice)) == 200
        assert bindings(users_db) == [("alice", f"sip:alice@{LOOP}:{alice.port};transport=udp")]
    finally:
        alice.close()


def test_calculate_ha1_without_a_clear_text_password_says_so(proxy_factory, tmp_path):
    """pyproxyctl keeps only the HA1s unless asked: a calculate_ha1=1 setup then fails every
    login, and the log names the subscriber and the fix."""
    url = f"sqlite://{tmp_path}/users.db"
    ctl(url, "db", "init")
    ctl(url, "add", f"alice@{REALM}", "secret")
    proxy = start(proxy_factory, url)
    alice = Phone(proxy.port, domain=REALM)
    try:
        assert status_of(register(alice)) == 401
        said = "subscriber alice: no clear-text password in password"
        deadline = time.monotonic() + 30
        while said not in proxy.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert said in proxy.log(), proxy.tail()
        ctl(url, "passwd", "--plaintext", f"alice@{REALM}", "secret")
        assert status_of(register(alice)) == 200
    finally:
        alice.close()


def test_check_to_refuses_registering_someone_else(proxy_factory, users_db, tmp_path):
    proxy = start(proxy_factory, users_db)
    alice = Phone(proxy.port, domain=REALM)
    try:
        first = alice.register(expires=600, to=f"sip:bob@{REALM}")
        auth = credentials(challenges(first)[0], "REGISTER", f"sip:{REALM}", "alice", "secret")
        assert status_of(alice.register(expires=600, headers=auth, to=f"sip:bob@{REALM}")) == 403
        assert bindings(users_db) == []
    finally:
        alice.close()


def test_qop_auth_refuses_a_replayed_nonce_count(proxy_factory, users_db):
    proxy = start(proxy_factory, users_db, qop="1")
    alice = Phone(proxy.port, domain=REALM)
    try:
        first = alice.register(expires=600)
        challenge = challenges(first)[0]
        assert status_of(register(alice, qop=True, challenge=challenge, nc=1)) == 200
        assert status_of(register(alice, qop=True, challenge=challenge, nc=1)) == 401      # replayed
        assert status_of(register(alice, qop=True, challenge=challenge, nc=2)) == 200
    finally:
        alice.close()


def test_an_expired_nonce_is_stale(proxy_factory, users_db):
    proxy = start(proxy_factory, users_db)
    alice = Phone(proxy.port, domain=REALM)
    try:
        old = Nonces(SECRET.encode(), 300).make(0)          # ours (same secret), expired long ago
        reply = register(alice, challenge={"realm": REALM, "nonce": old, "algorithm": "MD5"})
        assert status_of(reply) == 401
        assert all(c.get("stale") == "true" for c in challenges(reply))
    finally:
        alice.close()


def test_proxy_authorize_and_check_from(proxy_factory, users_db):
    proxy = start(proxy_factory, users_db)
    alice = Phone(proxy.port, domain=REALM)
    try:
        alice.send(alice.request("INVITE", f"sip:bob@{REALM}"))
        first = alice.final()
        assert status_of(first) == 407
        challenge = challenges(first, "Proxy-Authenticate")[0]
        auth = credentials(challenge, "INVITE", f"sip:bob@{REALM}", "alice", "secret", header="Proxy-Authorization")
        alice.send(alice.request("INVITE", f"sip:bob@{REALM}", auth))
        assert status_of(alice.final()) == 200
        wrong = credentials(challenge, "INVITE", f"sip:bob@{REALM}", "alice", "guess", header="Proxy-Authorization")
        alice.send(alice.request("INVITE", f"sip:bob@{REALM}", wrong))
        assert status_of(alice.final()) == 407
        alice.user = "carol"        # alice's credentials, carol in From
        alice.send(alice.request("INVITE", f"sip:bob@{REALM}", auth))
        assert status_of(alice.final()) == 403
    finally:
        alice.close()


GOOD = f'username="alice", realm="{REALM}", nonce="n", uri="sip:{REALM}", response="{"0" * 32}"'


@pytest.mark.parametrize("value", [
    "Digest " + GOOD.replace('username="alice", ', ""),
    "Digest " + GOOD + ', username="alice"',
    'Digest username="alice, realm="' + REALM + '"',
    "Digest " + GOOD.replace('nonce="n"', 'nonce="' + "a" * 10240 + '"'),
    "Digest " + GOOD.replace("0" * 32, "g" * 32),
    "Digest " + GOOD.replace('username="alice"', "username=\"a'; DROP TABLE subscriber; --\""),
])
def test_malformed_authorization_gets_4xx_and_the_proxy_goes_on(proxy_factory, tmp_path, value):
    url = f"sqlite://{tmp_path}/users.db"
    ctl(url, "db", "init")
    ctl(url, "add", "--plaintext", f"alice@{REALM}", "secret")
    proxy = start(proxy_factory, url)
    alice = Phone(proxy.port, domain=REALM)
    try:
        reply = alice.register(expires=600, headers=f"Authorization: {value}\r\n")
        assert status_of(reply) in (400, 401), reply
        assert status_of(register(alice)) == 200            # still serving, and alice still there
        assert [r[0] for r in connect(url).query("SELECT username FROM subscriber")] == ["alice"]
    finally:
        alice.close()
