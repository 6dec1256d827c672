"""OpenSER's TLS manual, section 1.3 and Example 1-14: two domains, each with its proxy, users
that register and authenticate at their own, calls between the domains over mutual TLS, and a
distinctive ring (three Alert-Info headers) for calls that came over TLS or from an
authenticated local user.

Two pyproxy processes run etc/examples/openser-tls-example.cfg with only addresses, ports,
paths, domains and db_url changed: domA.net on 127.0.0.2, domB.net on 127.0.0.3 (the names come
from the test's own DNS server), certificates from `pyproxyctl tls rootCA` / `userCERT`.
Phones are raw sockets (_phones.py) on 127.0.0.1.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._harness import LOOP, Proxy, free_port, status_of
from ._phones import Phone, challenges, credentials, header

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "examples" / "openser-tls-example.cfg"
HOSTS = {"domA.net": "127.0.0.2", "domB.net": "127.0.0.3"}
ALERT_INFO = ["1", "Bellcore-dr4", "http://foo.bar/x.wav"]


def ctl(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def config_for(domain: str, other: str, ports: dict, folder: Path, dns_port: int) -> str:
    """The example for ``domain``: its address, ports, paths and db_url; the other domain's name
    where the example names domB.net as the peer."""
    text = EXAMPLE.read_text()
    ip = HOSTS[domain]
    if domain == "domB.net":        # the example is domA's: for domB, the two names trade places
        text = text.replace("domA.net", "@@A@@").replace("domB.net", "domA.net").replace("@@A@@", "domB.net")
    text = text.replace("listen=127.0.0.1\nlisten=tls:127.0.0.1:5061",
                        f"listen=udp:{ip}:{ports[domain]}\nlisten=tls:{ip}:{ports[domain + '/tls']}")
    text = text.replace(f't_relay_to_tls("{other}","5061")', f't_relay_to_tls("{other}","{ports[other + "/tls"]}")')
    text = text.replace('fifo="/tmp/openser_fifo"', f'fifo="{folder}/fifo"')
    text = text.replace("sqlite:///var/lib/pyproxy/pyproxy.db", f"sqlite://{folder}/pyproxy.db")
    text = text.replace("debug=3", f"debug=3\nlog_stderror=yes\ndns_server={LOOP}:{dns_port}")
    text = text.replace("log_stderror=no\n", "")
    text = text.replace('loadmodule "modules/usrloc/usrloc.so"', 'loadmodule "modules/usrloc/usrloc.so"\n'
                        f'modparam("usrloc", "db_url", "sqlite://{folder}/pyproxy.db")')
    text = text.replace('loadmodule "modules/uri_db/uri_db.so"', 'loadmodule "modules/uri_db/uri_db.so"\n'
                        f'modparam("uri_db", "db_url", "sqlite://{folder}/pyproxy.db")')
    script = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert f"\"{other}\",\"5061\"" not in script and "/var/lib" not in script
    return text


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """Both proxies running, alice@domA.net and bob@domB.net subscribers of their own."""
    from .conftest import DNSServer
    from ._harness import Reaper
    base = tmp_path_factory.mktemp("example14")
    zone = DNSServer({(name, "A"): [ip] for name, ip in HOSTS.items()})
    reaper = Reaper()
    ports = {key: free_port() for key in ("domA.net", "domA.net/tls", "domB.net", "domB.net/tls")}
    ctl("tls", "rootCA", str(base), cwd=base)
    proxies = {}
    try:
        for domain, other in (("domA.net", "domB.net"), ("domB.net", "domA.net")):
            folder = base / domain
            folder.mkdir()
            ctl("tls", "userCERT", domain, str(folder / "tls"), "--ca-dir", str(base / "rootCA"),
                "--ip", HOSTS[domain], cwd=base)
            cfg = folder / "pyproxy.cfg"
            cfg.write_text(config_for(domain, other, ports, folder, zone.port))
            user = "alice" if domain == "domA.net" else "bob"
            ctl("-f", str(cfg), "db", "init", cwd=folder)
            ctl("-f", str(cfg), "add", user, f"{user}-secret", cwd=folder)
            log = folder / "proxy.log"
            with open(log, "wb") as out:
                popen = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), "-D", "-E"], cwd=folder,
                                     stdout=out, stderr=subprocess.STDOUT)
            proxies[domain] = Proxy(popen, ports[domain], log, 4)
        for proxy in proxies.values():
            deadline = time.monotonic() + 20
            while "pyproxy started" not in proxy.log():
                assert proxy.alive() and time.monotonic() < deadline, "did not start\n" + proxy.tail()
                time.sleep(0.05)
        yield proxies, ports
    finally:
        reaper.stop_all()
        zone.close()


def phone(ports, domain: str, user: str) -> Phone:
    """A phone of ``domain``: its URIs name the proxy's port, which is not 5060 here (pyproxy takes
    an alias without a port for the ports it listens on, and a URI without one for 5060)."""
    return Phone(ports[domain], user=user, domain=at(ports, domain), proxy_host=HOSTS[domain])


def at(ports, domain: str) -> str:
    return f"{domain}:{ports[domain]}"


def authenticated(p: Phone, method: str, ruri: str, password: str, header_name: str, **kw) -> bytes:
    """Send a request, answer its 401/407 and return the final reply to the authenticated one."""
    p.send(p.request(method, ruri, **kw))
    first = p.final()
    status = status_of(first)
    assert status in (401, 407), first
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    auth = credentials(challenges(first, name)[-1], method, ruri, p.user, password,
                       header="Authorization" if status == 401 else "Proxy-Authorization")
    headers = kw.pop("headers", "") + auth
    p.send(p.request(method, ruri, headers, **kw))
    return p.final()


def register(p: Phone, password: str) -> bytes:
    """Register this phone as the user's only contact (earlier tests' phones are gone)."""
    cleared = authenticated(p, "REGISTER", f"sip:{p.domain}", password, "Authorization",
                            headers="Contact: *\r\nExpires: 0\r\n")
    assert status_of(cleared) == 200, cleared
    contact = f"Contact: <sip:{p.user}@{LOOP}:{p.port}>\r\nExpires: 600\r\n"
    return authenticated(p, "REGISTER", f"sip:{p.domain}", password, "Authorization", headers=contact)


def alert_infos(msg: bytes) -> list[str]:
    return [v.decode().strip() for v in re.findall(rb"(?im)^alert-info\s*:\s*(.+?)\r?$", msg.split(b"\r\n\r\n")[0])]


def test_the_two_domain_scenario(domains):
    proxies, ports = domains
    alice, bob = phone(ports, "domA.net", "alice"), phone(ports, "domB.net", "bob")
    try:
        # each registers at its own proxy with digest authentication (no qop: the manual's "0")
        assert status_of(register(alice, "alice-secret")) == 200
        assert status_of(register(bob, "bob-secret")) == 200

        # bob calls alice: domB challenges him (From: his own domain), relays over mutual TLS;
        # domA finds alice and adds the distinctive ring because the call came over TLS
        contact = f"Contact: <sip:bob@{LOOP}:{bob.port}>\r\n"
        alice_uri = f"sip:alice@{at(ports, 'domA.net')}"
        bob.send(bob.request("INVITE", alice_uri, contact, to=alice_uri, call_id="c14"))
        challenge = bob.final()
        assert status_of(challenge) == 407
        auth = credentials(challenges(challenge, "Proxy-Authenticate")[-1], "INVITE", alice_uri, "bob",
                           "bob-secret", header="Proxy-Authorization")
        bob.send(bob.request("INVITE", alice_uri, contact + auth, to=alice_uri, call_id="c14"))
        invite = alice.expect_request("INVITE", timeout=10)
        assert invite is not None, proxies["domB.net"].tail() + proxies["domA.net"].tail()
        assert alert_infos(invite) == ALERT_INFO
        assert header(invite, "P-hint") == "OUTBOUND"
        assert re.search(rb"(?im)^via\s*:\s*SIP/2\.0/TLS 127\.0\.0\.3:", invite), "it did not cross over TLS"

        # alice answers; bob gets the 200 back through both proxies
        alice_answers_200(alice, invite)
        final = bob.final(timeout=10)
        assert status_of(final) == 200, final

        # alice hangs up: her BYE follows the Record-Route back over TLS to bob
        bye = bye_along_route_set(alice, invite)
        alice.send(bye)
        got = bob.expect_request("BYE", timeout=10)
        assert got is not None, proxies["domA.net"].tail()
        assert re.search(rb"(?im)^via\s*:\s*SIP/2\.0/TLS 127\.0\.0\.2:", got), "the BYE did not cross over TLS"
    finally:
        alice.close()
        bob.close()


def test_an_unauthenticated_udp_caller_gets_no_distinctive_ring(domains):
    proxies, ports = domains
    alice = phone(ports, "domA.net", "alice")
    carol = Phone(ports["domA.net"], user="carol", domain="example.org", proxy_host=HOSTS["domA.net"])
    try:
        assert status_of(register(alice, "alice-secret")) == 200
        alice_uri = f"sip:alice@{at(ports, 'domA.net')}"
        carol.send(carol.request("INVITE", alice_uri, "Alert-Info: <http://evil/ring.wav>\r\n", to=alice_uri))
        invite = alice.expect_request("INVITE", timeout=10)
        assert invite is not None
        assert alert_infos(invite) == []            # not added, and the spoofed one removed
    finally:
        alice.close()
        carol.close()


def test_what_the_example_refuses(domains):
    proxies, ports = domains
    mallory = phone(ports, "domA.net", "alice")     # claims to be alice
    try:
        # an INVITE From: alice@domA.net without credentials, then with a wrong password: 407
        bob_uri = f"sip:bob@{at(ports, 'domB.net')}"
        mallory.send(mallory.request("INVITE", bob_uri, to=bob_uri))
        first = mallory.final()
        assert status_of(first) == 407
        wrong = credentials(challenges(first, "Proxy-Authenticate")[-1], "INVITE", bob_uri, "alice",
                            "guess", header="Proxy-Authorization")
        mallory.send(mallory.request("INVITE", bob_uri, wrong, to=bob_uri))
        assert status_of(mallory.final()) == 407
        # a REGISTER with a wrong password: 401, and nothing saved
        reply = authenticated(mallory, "REGISTER", f"sip:{mallory.domain}", "guess", "Authorization",
                              headers="Contact: <sip:mallory@10.9.9.9>\r\n")
        assert status_of(reply) == 401
        # alice's credentials used to register bob (To): check_to says 403
        reply = authenticated(mallory, "REGISTER", f"sip:{mallory.domain}", "alice-secret", "Authorization",
                              headers="Contact: <sip:mallory@10.9.9.9>\r\n", to=f"sip:bob@{mallory.domain}")
        assert status_of(reply) == 403
        # a call to a user nobody registered: 404
        stranger = Phone(ports["domA.net"], user="dave", domain="example.org", proxy_host=HOSTS["domA.net"])
        try:
            nobody = f"sip:nobody@{at(ports, 'domA.net')}"
            stranger.send(stranger.request("INVITE", nobody, to=nobody))
            assert status_of(stranger.final()) == 404
        finally:
            stranger.close()
    finally:
        mallory.close()


# -- a tiny UA's dialog handling -----------------------------------------------------------------
def alice_answers_200(alice: Phone, invite: bytes) -> None:
    head = invite.split(b"\r\n\r\n", 1)[0].decode()
    keep = [line for line in head.split("\r\n")[1:]
            if re.match(r"(?i)(via|from|to|call-id|cseq|record-route)\s*:", line)]
    keep = [line + ";tag=alice1" if re.match(r"(?i)to\s*:", line) else line for line in keep]
    keep.append(f"Contact: <sip:alice@{LOOP}:{alice.port}>")
    alice.send(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode())


def bye_along_route_set(alice: Phone, invite: bytes) -> bytes:
    """The callee's BYE: to the caller's Contact, along the Record-Route of the INVITE as it came
    (RFC 3261 12.1.1), sent to the first hop (alice's own proxy)."""
    lines = invite.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]

    def values(name):
        return [line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip().lower() == name]
    routes = [v.strip() for line in values("record-route") for v in line.split(",")]
    target = re.search(r"<([^>]+)>", values("contact")[0]).group(1)
    from_, to, call_id = values("from")[0], values("to")[0], values("call-id")[0]
    return (f"BYE {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOP}:{alice.port};branch=z9hG4bKbye{time.monotonic_ns()};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: {to};tag=alice1\r\nTo: {from_}\r\nCall-ID: {call_id}\r\nCSeq: 1 BYE\r\n"
            + "".join(f"Route: {r}\r\n" for r in routes) + "Content-Length: 0\r\n\r\n").encode()
