"""Two registrars sharing one PostgreSQL database (usrloc db_mode=3): a registration made through
one is seen by both, and a call through the other reaches the phone through the first (RFC 3327
Path with the address the phone registered from), over the TLS connection the phone keeps open."""

import subprocess
import sys

from database.fresh import fresh_database

from ._harness import LOOP, free_port, status_of
from ._phones import Phone, contacts, header
from .test_mi import tls_lines

ROUTE = """
loadmodule "tm"
loadmodule "rr"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "path"
modparam("usrloc", "db_mode", 3)
modparam("usrloc", "db_url", "{url}")
modparam("registrar", "use_path", 1)
route {{
    if (method=="OPTIONS" && uri==myself && $rU==$null) {{ sl_send_reply("200", "OK"); exit; }}
    if (method=="REGISTER") {{
        add_path_received();
        save("location");
        exit;
    }}
    if (loose_route()) {{ t_relay(); exit; }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""


def test_two_nodes_share_registrations_and_route_through_the_one_the_phone_is_on(proxy_factory, pki, tmp_path):
    with fresh_database("postgres", tmp_path) as url:
        done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "--db-url", url, "db", "init"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        tls_port = free_port()
        node1 = proxy_factory(children=2, route=ROUTE.format(url=url), extra=tls_lines(pki, "localhost", tls_port))
        node2 = proxy_factory(children=2, route=ROUTE.format(url=url),
                              extra=tls_lines(pki, "localhost", free_port()))
        alice = Phone(tls_port, "tls", "alice", LOOP)
        bob = Phone(node2.port, "udp", "bob", LOOP)
        try:
            # a Contact nothing listens on: only alice's TLS connection to node 1 reaches her
            ok = alice.register(f"<sip:alice@{LOOP}:9;transport=tls>", expires=600)
            assert status_of(ok) == 200, ok
            assert header(ok, "Path").startswith(f"<sip:{LOOP}:{tls_port};transport=tls;lr;received=")
            for node in (node1, node2):         # both see it
                query = Phone(node.port, "udp", "alice", LOOP)
                try:
                    listed = query.register(None)
                    found = contacts(listed)
                    assert len(found) == 1 and found[0].startswith(f"<sip:alice@{LOOP}:9;transport=tls>;expires=".encode())
                finally:
                    query.close()
            # bob's call through node 2 goes to node 1 (the Path), which sends it down alice's connection
            bob.send(bob.request("INVITE", f"sip:alice@{LOOP}:{node2.port}", to=f"sip:alice@{LOOP}"))
            invite = alice.expect_request("INVITE", timeout=10)
            assert invite is not None, node2.tail() + node1.tail()
            vias = [line for line in invite.split(b"\r\n") if line.lower().startswith(b"via:")]
            assert len(vias) == 3               # bob, node 2, node 1
            alice.answer(invite, 486, "Busy Here")
            assert status_of(bob.final(timeout=10)) == 486
        finally:
            alice.close()
            bob.close()
