"""The registrar end to end: phones (raw sockets) register to a real pyproxy and are called
through it, over UDP and TCP; registrations are shared by the workers, outlive a killed worker,
and outlive a restart when kept in SQLite, PostgreSQL or MariaDB; bad REGISTERs get their 4xx."""

import os
import signal
import subprocess
import sys
import time

import pytest
from database.fresh import BACKENDS, fresh_database

from pyproxy.db import connect

from ._harness import LOOP, status_of
from ._phones import Phone, contacts, first_line, header

ROUTE = """
loadmodule "tm"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", {mode})
modparam("usrloc", "db_url", "{url}")
modparam("usrloc", "timer_interval", 1)
modparam("registrar", "max_contacts", 5)
route {{
    if (method=="OPTIONS" && uri==myself && $rU==$null) {{ sl_send_reply("200", "OK"); exit; }}
    if (method=="REGISTER") {{ save("location"); exit; }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""


def start(proxy_factory, tmp_path, mode=0, url=None, children=2):
    url = url or f"sqlite://{tmp_path}/location.db"
    return proxy_factory(children=children, route=ROUTE.format(mode=mode, url=url))


def db_init(url: str) -> None:
    """What an operator runs once for a database server: pyproxyctl db init."""
    done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "--db-url", url, "db", "init"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def phones():
    made = []

    def make(*args, **kw):
        made.append(Phone(*args, **kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


def call(caller: Phone, callee: Phone, user: str = "alice"):
    """caller INVITEs user@proxy; callee must get it and answers 486: the caller gets the 486."""
    caller.send(caller.request("INVITE", f"sip:{user}@{LOOP}:{caller.proxy_port}", to=f"sip:{user}@{LOOP}",
                               call_id=f"call-{time.monotonic_ns()}"))
    invite = callee.expect_request("INVITE")
    assert invite is not None, "the INVITE did not reach the registered phone"
    callee.answer(invite, 486, "Busy Here")
    final = caller.final()
    assert final is not None and status_of(final) == 486, final
    return invite


def test_a_phone_on_tcp_is_called_over_its_connection(proxy_factory, tmp_path, phones):
    proxy = start(proxy_factory, tmp_path)
    alice = phones(proxy.port, "tcp")
    # a Contact that names nothing listening: only the connection the REGISTER came on reaches her
    ok = alice.register(f"<sip:alice@{LOOP}:9;transport=tcp>", expires=300)
    assert status_of(ok) == 200, ok
    assert contacts(ok) == [f"<sip:alice@{LOOP}:9;transport=tcp>;expires=300".encode()]
    invite = call(phones(proxy.port, "udp", user="bob"), alice)
    assert first_line(invite) == f"INVITE sip:alice@{LOOP}:9;transport=tcp SIP/2.0"


@pytest.mark.parametrize("contact", ["10.0.0.1:5060", f"{LOOP}:5060"])
def test_a_phone_behind_a_nat_is_called_where_it_registered_from(proxy_factory, tmp_path, phones, contact):
    """Its Via names another address than the one its REGISTER came from (the NAT's outside):
    nothing listens at its Contact (its private address), so it is called at its source."""
    proxy = start(proxy_factory, tmp_path)
    alice = phones(proxy.port)
    register = alice.request("REGISTER", f"sip:{LOOP}", f"Contact: <sip:alice@{contact}>\r\nExpires: 300\r\n")
    alice.send(register.replace(f"Via: SIP/2.0/UDP {LOOP}:{alice.port};".encode(), b"Via: SIP/2.0/UDP 10.0.0.1:5060;"))
    assert status_of(alice.final()) == 200
    invite = call(phones(proxy.port, user="bob"), alice)
    assert first_line(invite) == f"INVITE sip:alice@{contact} SIP/2.0"


def test_a_contact_registered_from_elsewhere_is_called_at_the_contact(proxy_factory, tmp_path, phones):
    """No NAT between (its Via is where it came from): the Contact as registered is called, as
    for a phone that sends from another port than it listens on, or a REGISTER made on another
    device's behalf (RFC 3261 10.2's third-party registration)."""
    proxy = start(proxy_factory, tmp_path)
    registrar_client, desk = phones(proxy.port), phones(proxy.port)
    ok = registrar_client.register(f"<sip:alice@{LOOP}:{desk.port}>", expires=300)
    assert status_of(ok) == 200, ok
    invite = call(phones(proxy.port, user="bob"), desk)
    assert first_line(invite) == f"INVITE sip:alice@{LOOP}:{desk.port} SIP/2.0"


def test_query_refresh_and_unregister(proxy_factory, tmp_path, phones):
    proxy = start(proxy_factory, tmp_path)
    alice = phones(proxy.port)
    assert status_of(alice.register("<sip:alice@10.0.0.1>;expires=120")) == 200
    assert status_of(alice.register("<sip:alice@10.0.0.2>;q=0.5", expires=600)) == 200
    listed = alice.register(None)
    # what is left of each expiry: as given, or a second less if a second began meanwhile
    assert sorted(contacts(listed)) in [[f"<sip:alice@10.0.0.1>;expires={a}".encode(),
                                         f"<sip:alice@10.0.0.2>;expires={b};q=0.5".encode()]
                                        for a, b in ((120, 600), (119, 599), (119, 600), (120, 599))]
    assert status_of(alice.register("*", expires=0)) == 200
    assert contacts(alice.register(None)) == []
    bob = phones(proxy.port, user="bob")
    bob.send(bob.request("INVITE", f"sip:alice@{LOOP}", to=f"sip:alice@{LOOP}"))
    assert status_of(bob.final()) == 404


def test_every_worker_sees_every_registration_and_a_killed_worker_loses_none(proxy_factory, tmp_path, phones):
    proxy = start(proxy_factory, tmp_path, children=4)
    for n in range(8):          # Call-IDs spread over the four workers
        assert status_of(phones(proxy.port, user=f"u{n}").register(f"<sip:u{n}@10.0.0.{n}>")) == 200
    worker = proxy.workers()[1]
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while proxy.workers().get(1) in (None, worker):
        assert time.monotonic() < deadline, "worker 1 was not respawned\n" + proxy.tail()
        time.sleep(0.1)
    for n in range(8):
        listed = phones(proxy.port, user=f"u{n}").register(None)
        found = contacts(listed)
        assert len(found) == 1 and found[0].startswith(f"<sip:u{n}@10.0.0.{n}>;expires=".encode()), (n, listed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", [1, 2, 3])
def test_registrations_survive_a_restart_in_a_database(proxy_factory, tmp_path, phones, backend, mode):
    with fresh_database(backend, tmp_path) as url:
        if backend != "sqlite":     # the embedded database is made at first start; a server's is not
            db_init(url)
        proxy = start(proxy_factory, tmp_path, mode, url)
        assert status_of(phones(proxy.port).register("<sip:alice@10.0.0.1:5060>", expires=900)) == 200
        assert status_of(phones(proxy.port, user="o'hara").register("<sip:x@10.0.0.9>")) == 200
        assert proxy.stop() == 0
        rows = connect(url).query("SELECT username, contact FROM location ORDER BY username")
        assert [tuple(r) for r in rows] == [("alice", "sip:alice@10.0.0.1:5060"), ("o'hara", "sip:x@10.0.0.9")]
        again = start(proxy_factory, tmp_path, mode, url)
        listed = phones(again.port).register(None)
        assert len(contacts(listed)) == 1 and contacts(listed)[0].startswith(b"<sip:alice@10.0.0.1:5060>;expires=")
        again.stop()


def test_expired_contacts_are_gone(proxy_factory, tmp_path, phones):
    proxy = proxy_factory(children=2, route=ROUTE.format(mode=0, url="") .replace(
        'modparam("registrar", "max_contacts", 5)', 'modparam("registrar", "min_expires", 1)'))
    alice = phones(proxy.port)
    assert status_of(alice.register("<sip:alice@10.0.0.1>", expires=1)) == 200
    deadline = time.monotonic() + 10
    while contacts(alice.register(None)):
        assert time.monotonic() < deadline
        time.sleep(0.3)


@pytest.mark.parametrize("what, extra, status", [
    ("too many contacts", "".join(f"Contact: <sip:a@10.0.{i // 250}.{i % 250}>\r\n" for i in range(1000)), 403),
    ("a Contact without a host", "Contact: <sip:alice@>\r\n", 400),
    ("an Expires past 2**32-1", "Contact: <sip:alice@10.0.0.1>\r\nExpires: 99999999999\r\n", 400),
    ("a too brief expiry", "Contact: <sip:alice@10.0.0.1>;expires=5\r\n", 423),
    ("a star with Expires", "Contact: *\r\nExpires: 60\r\n", 400),
    ("a bad q", "Contact: <sip:alice@10.0.0.1>;q=7\r\n", 400),
])
def test_bad_registers_get_their_4xx_and_write_nothing(proxy_factory, tmp_path, phones, what, extra, status):
    proxy = start(proxy_factory, tmp_path)
    alice = phones(proxy.port)
    reply = alice.register(None, headers=extra)
    assert status_of(reply) == status, (what, reply)
    if status == 423:
        assert header(reply, "Min-Expires") == "60"
    assert contacts(alice.register(None)) == []
    assert proxy.answers() == (200, 200)


def test_sql_metacharacters_in_a_user_are_stored_as_they_are(proxy_factory, tmp_path, phones):
    proxy = start(proxy_factory, tmp_path, 3)
    user = "x'%3B--"
    evil = phones(proxy.port, user=user)
    assert status_of(evil.register("<sip:evil@10.0.0.1>")) == 200
    rows = connect(f"sqlite://{tmp_path}/location.db").query("SELECT username FROM location")
    assert [r[0] for r in rows] == [user]


def test_a_database_that_goes_away_gives_500_and_comes_back(proxy_factory, tmp_path, phones):
    with fresh_database("postgres", tmp_path) as url:
        db_init(url)
        proxy = start(proxy_factory, tmp_path, 3, url)
        alice = phones(proxy.port)
        assert status_of(alice.register("<sip:alice@10.0.0.1>")) == 200
        name = url.rsplit("/", 1)[1]
        admin = connect("postgres://postgres@127.0.0.1:5432/postgres")
        try:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ?", (name,))
            reply = alice.register("<sip:alice@10.0.0.2>")
            assert status_of(reply) == 500, reply
            assert "location database" in first_line(reply)
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            deadline = time.monotonic() + 15
            while status_of(alice.register("<sip:alice@10.0.0.2>")) != 200:
                assert time.monotonic() < deadline, proxy.tail()
                time.sleep(0.3)
        finally:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            admin.close()
        assert "database" in proxy.log() and proxy.alive()


def test_pyproxyctl_ul_shows_and_removes_registrations(proxy_factory, tmp_path, phones):
    sock = tmp_path / "mi.sock"
    proxy = proxy_factory(children=2, extra=f'mi_socket="{sock}"\n',
                          route=ROUTE.format(mode=0, url=f"sqlite://{tmp_path}/location.db"))
    assert status_of(phones(proxy.port).register("<sip:alice@10.0.0.1:5070>", expires=300)) == 200
    assert status_of(phones(proxy.port, user="bob").register("<sip:bob@10.0.0.2>")) == 200

    def ctl(*args, status=0):
        done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "ul", "-s", str(sock), *args],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == status, done.stderr
        return done.stdout.splitlines() if status == 0 else done.stderr

    shown = ctl("show")
    assert shown[0] == "alice: 1 contact(s)" and shown[2] == "bob: 1 contact(s)"
    assert shown[1].startswith("  <sip:alice@10.0.0.1:5070>;expires=") and "from sip:127.0.0.1:" in shown[1]
    assert ctl("show", "bob")[0] == "bob: 1 contact(s)"
    assert ctl("show", f"sip:bob@{LOOP}")[0] == f"sip:bob@{LOOP}: 1 contact(s)"     # as phones write an AOR
    assert "AOR not found" in ctl("show", "ghost", status=1)        # (Kamailio's 404): a script can tell
    assert "AOR not found" in ctl("rm", "ghost", status=1)
    assert ctl("rm", "alice") == ["alice: 1 contact(s) removed"]
    assert contacts(phones(proxy.port).register(None)) == []
    left = ctl("show")
    assert left[0] == "bob: 1 contact(s)" and len(left) == 2 and left[1].startswith("  <sip:bob@10.0.0.2>;expires=")


def test_a_user_registered_from_two_phones_is_called_on_both(proxy_factory, tmp_path, phones):
    """append_branches (the default): lookup() forks to every contact, t_relay() sends each branch
    where its phone registered from; one answers busy, the other rings and answers too."""
    proxy = start(proxy_factory, tmp_path)
    desk, mobile = phones(proxy.port), phones(proxy.port, "tcp")
    for phone in (desk, mobile):
        phone.call_id = f"reg-{phone.port}"       # each phone its own registration
        assert status_of(phone.register(expires=600)) == 200
    assert len(contacts(desk.register(None))) == 2
    bob = phones(proxy.port, user="bob")
    bob.send(bob.request("INVITE", f"sip:alice@{LOOP}", to=f"sip:alice@{LOOP}", call_id="fork-1"))
    on_desk, on_mobile = desk.expect_request("INVITE"), mobile.expect_request("INVITE")
    assert on_desk is not None and on_mobile is not None, proxy.tail()
    desk.answer(on_desk, 486, "Busy Here")
    mobile.answer(on_mobile, 603, "Decline")
    assert status_of(bob.final(timeout=10)) == 603       # RFC 3261 16.7: the 6xx wins


def test_save_flags_memory_only_and_one_device(proxy_factory, tmp_path, phones):
    """save("location", 5): 0x01 keeps the binding out of the database of db_mode 1 (only the
    workers' shared file has it), 0x04 makes the REGISTER's contact the user's only one."""
    url = f"sqlite://{tmp_path}/location.db"
    route = ROUTE.format(mode=1, url=url).replace('save("location");', 'save("location", 5);')
    proxy = proxy_factory(children=2, route=route)
    alice = phones(proxy.port)
    assert status_of(alice.register("<sip:alice@10.0.0.1>")) == 200
    assert status_of(alice.register("<sip:alice@10.0.0.2>")) == 200
    assert [c.split(b";")[0] for c in contacts(alice.register(None))] == [b"<sip:alice@10.0.0.2>"]
    assert connect(url).query("SELECT contact FROM location") == []


def test_registrations_are_shared_when_the_workers_run_as_another_user(proxy_factory, phones):
    """user=nobody: the master makes the shared file and its lock files before it drops its
    privileges, and gives them to that user, so the workers can write them."""
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    proxy = proxy_factory(children=2, extra="user=nobody\n", route=ROUTE.format(mode=0, url=""))
    for n in range(8):      # users through both workers
        assert status_of(phones(proxy.port, user=f"u{n}").register(f"<sip:u{n}@10.0.0.{n}>")) == 200, proxy.tail()
    for n in range(8):
        assert len(contacts(phones(proxy.port, user=f"u{n}").register(None))) == 1
