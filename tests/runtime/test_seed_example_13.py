"""OpenSER's TLS manual, Example 1-13 (virtual SIPS hosting): its config runs as written but for its
placeholders, and the TLS client domain that ``avp_write("$fd", "$avp(i:400)")`` names is the one
``t_relay()`` connects with.

Proxy A runs the example (tests/config/seed/ex1-13.cfg): IP_n/portN, the certificate paths and
the CA list replaced by the test's, its two listen mistakes mended (it listens on port4 where its
server domain names port3, and never on IP_5:port5), and the loadmodule lines it leaves out (it
is an excerpt) plus a UDP socket for the caller. Proxy B is a TLS server that requires client
certificates; its tls_list tells which certificate A presented.
"""

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ._harness import LOOP, Proxy, free_port, options_request, status_of, udp_socket
from .test_mi import mi, tls_lines

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "seed" / "ex1-13.cfg"
ROUTE_B = """route { sl_send_reply("200", "OK"); }"""


def example_13(pki, ports: dict) -> str:
    """The example with its placeholders filled and its listen mistakes mended."""
    text = EXAMPLE.read_text()
    text = text.replace("listen=tls:IP_3:port4", "listen=tls:IP_3:port3\nlisten=tls:IP_5:port5")
    for n in (2, 3, 5):
        text = text.replace(f"IP_{n}:port{n}", f"{LOOP}:{ports[n]}")
    for name in ("atlanta.com", "biloxy.com", "local"):
        cert = {"atlanta.com": "atlanta.example.com", "biloxy.com": "biloxi.example.com",
                "local": "localhost"}[name]
        text = text.replace(f"/certs/{name}/cert.pem", f"{pki}/{cert}/cert.pem")
        text = text.replace(f"/certs/{name}/privkey.pem", f"{pki}/{cert}/privkey.pem")
    for ca in ("/certs/wellknownCAs", "/certs/GWproviderSelfSignedCA"):
        text = text.replace(ca, f"{pki}/ca/cacert.pem")
    assert not re.search(r"IP_\d|port\d|/certs/", text), "a placeholder is left"
    return text


def test_the_client_domain_named_by_the_avp_is_the_one_t_relay_uses(proxy_factory, reaper, pki, tmp_path):
    b_sock, b_ports = tmp_path / "b.sock", {"atlanta.com": free_port(), "biloxi.com": free_port()}
    proxy_factory(children=2, route=ROUTE_B, extra=tls_lines(pki, "localhost", b_ports["atlanta.com"], verify_client=1)
                  + f'listen=tls:{LOOP}:{b_ports["biloxi.com"]}\ntls_method=TLSv1\nmi_socket="{b_sock}"\n')
    ports = {n: free_port() for n in (2, 3, 5)}
    head = ('loadmodule "sl"\nloadmodule "avpops"\nloadmodule "tm"\n'
            f"disable_tls=no\ntls_ca_list=\"{pki}/ca/cacert.pem\"\n"
            f'tls_certificate="{pki}/localhost/cert.pem"\ntls_private_key="{pki}/localhost/privkey.pem"\n')
    folder = tmp_path / "a"
    folder.mkdir()
    a_port = free_port()
    cfg = folder / "pyproxy.cfg"
    cfg.write_text(f"log_stderror=yes\nchildren=2\nlisten=udp:{LOOP}:{a_port}\n" + head + example_13(pki, ports))
    a = start_example(reaper, cfg, a_port)
    with udp_socket(10.0) as u:
        for domain in ("atlanta.com", "biloxi.com"):
            request = options_request(a_port, f"{domain}-{uuid.uuid4().hex}", "udp", u.getsockname()[1],
                                      ruri=f"sip:bob@{LOOP}:{b_ports[domain]};transport=tls")
            request = request.replace(b"<sip:tester@127.0.0.1>", f"<sip:alice@{domain}>".encode())
            u.sendto(request, (LOOP, a_port))
            assert status_of(u.recvfrom(65536)[0]) == 200, a.tail()
    # From alice@atlanta.com: the atlanta.com client domain's certificate; biloxi.com's likewise
    # (to another port of B: an open connection is reused whatever the AVP says, as in the manual)
    seen = {int(e["local"].rsplit(":", 1)[1]): e["peer_subject"] for e in mi(b_sock, "tls_list") if e["established"]}
    assert seen[b_ports["atlanta.com"]].endswith("CN=atlanta.example.com")
    assert seen[b_ports["biloxi.com"]].endswith("CN=biloxi.example.com")


def start_example(reaper, cfg: Path, port: int) -> Proxy:
    """Start pyproxy on the example; it serves once its sockets are bound (the master says so).
    Its route relays everything, an OPTIONS to itself too, so the harness's readiness check
    cannot be used."""
    log = cfg.parent / "proxy.log"
    with open(log, "wb") as out:
        popen = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), "-D", "-E"], cwd=cfg.parent,
                             stdout=out, stderr=subprocess.STDOUT)
    proxy = Proxy(popen, port, log, 2)
    deadline = time.monotonic() + 15
    while "pyproxy started" not in proxy.log():
        assert proxy.alive() and time.monotonic() < deadline, "the example did not start\n" + proxy.tail()
        time.sleep(0.05)
    return proxy
