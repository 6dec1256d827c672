"""TLS in the routing script, against a running pyproxy with real peers on 127.0.0.1:

- ``proto==tls`` in a condition, and the TLS peer variables of OpenSER's tlsops module as the
  README documents them ($tls_version, $tls_cipher_info, $tls_peer_subject, $tls_peer_subject_cn,
  $tls_peer_issuer, $tls_peer_san_uri, $tls_peer_san_dns -- every DNS name --, $tls_peer_verified)
  and tlsops' is_peer_verified(): the script copies them into headers (textops' append_hf) of the
  request it forwards to a UDP socket the test reads, for a client with a trusted certificate with
  several SANs, over TLS 1.2 and 1.3, and for a client without a certificate.
- OpenSER's stateless forward_tls(host, port), forward_udp(host, port) and forward_tcp(host, port):
  each reaches a server the test runs (TLS, UDP, TCP) with the proxy's Via of that transport on top.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid

import pytest
from cryptography.x509.oid import NameOID

from ._harness import (LOOP, free_port, options_request, read_tcp_message, tcp_connect, udp_exchange,
                       udp_socket)
from .test_tls import tls_server, tls_settings
from .test_tls_matrix import TLS12, TLS13, issue_cert, tls_client

TLS_VARIABLES = ("tls_version", "tls_cipher_info", "tls_peer_subject", "tls_peer_subject_cn", "tls_peer_issuer",
                 "tls_peer_san_uri", "tls_peer_san_dns", "tls_peer_verified")


def udp_listener(port: int, timeout: float = 5.0) -> socket.socket:
    """A UDP socket bound to `port` on 127.0.0.1 (a free_port()), reads bounded by `timeout`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOP, port))
    s.settimeout(timeout)
    return s


def header_name(variable: str) -> str:
    """$tls_peer_san_dns -> X-Tls-Peer-San-Dns"""
    return "X-" + "-".join(part.capitalize() for part in variable.split("_"))


VARIABLES_ROUTE = """route {
    if (proto==tls) {
        append_hf("X-Proto: $proto\\r\\n");
%(appends)s
        if (is_peer_verified()) { append_hf("X-Is-Peer-Verified: yes\\r\\n"); }
        else { append_hf("X-Is-Peer-Verified: no\\r\\n"); }
        forward_udp("127.0.0.1", %(sink)d);
        exit;
    }
    sl_send_reply("200", "Not TLS");
}"""


def variables_route(sink: int) -> str:
    appends = "\n".join(f'        append_hf("{header_name(v)}: ${v}\\r\\n");' for v in TLS_VARIABLES)
    return VARIABLES_ROUTE % {"appends": appends, "sink": sink}


def headers_of(message: bytes) -> dict[str, str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    return {name: value.strip() for name, _, value in
            (line.partition(":") for line in head.split("\r\n")[1:])}


def send_over_tls(port: int, ctx: ssl.SSLContext, sink: socket.socket, timeout: float = 5.0):
    """An OPTIONS over a new TLS connection; returns (the headers of what reached the UDP `sink`,
    the client's view of the session: (version, cipher name))."""
    raw = socket.create_connection((LOOP, port), timeout=timeout)
    with ctx.wrap_socket(raw) as tls:
        call_id = f"vars-{uuid.uuid4().hex}"
        tls.sendall(options_request(port, call_id, "tls", tls.getsockname()[1]))
        data, _ = sink.recvfrom(65536)
        session = (tls.version(), tls.cipher()[0])
    headers = headers_of(data)
    assert headers["Call-ID"] == call_id, data
    return headers, session


@pytest.fixture(scope="module")
def carol(pki, tmp_path_factory):
    """A client certificate from the trusted CA with a three-part subject, three DNS names, a sip:
    URI and an IP address as subjectAltNames."""
    return issue_cert(tmp_path_factory.mktemp("script-certs") / "carol", pki / "ca",
                      [(NameOID.COUNTRY_NAME, "AT"), (NameOID.ORGANIZATION_NAME, "Example Org"),
                       (NameOID.COMMON_NAME, "carol.example.com")],
                      dns=["carol.example.com", "phone.example.net", "*.carol.example.org"],
                      uris=["sip:carol.example.com"], ips=["192.0.2.7"])


def test_proto_tls_and_the_tls_peer_variables(proxy_factory, pki, carol):
    port, sink_port = free_port(), free_port()
    with udp_listener(sink_port) as sink:
        proxy = proxy_factory(children=2, route=variables_route(sink_port),
                              extra=tls_settings(pki, port, verify_client=1, require=0)
                              + 'loadmodule "textops"\nloadmodule "tlsops"\n')
        # not TLS: the condition is false (UDP and TCP)
        assert udp_exchange(proxy.port, timeout=2.0).startswith(b"SIP/2.0 200 Not TLS\r\n")
        with tcp_connect(proxy.port) as s:
            s.sendall(options_request(proxy.port, f"tcp-{uuid.uuid4().hex}", "tcp", s.getsockname()[1]))
            assert read_tcp_message(s, time.monotonic() + 2, bytearray()).startswith(b"SIP/2.0 200 Not TLS\r\n")

        for version in (TLS12, TLS13):
            got, (tls_version, cipher) = send_over_tls(port, tls_client(pki, carol, version), sink)
            assert got["X-Proto"] == "tls"
            assert got["X-Tls-Version"] == tls_version == version.name.replace("v1_", "v1.")
            assert got["X-Tls-Cipher-Info"] == cipher
            assert got["X-Tls-Peer-Subject"] == "/C=AT/O=Example Org/CN=carol.example.com"
            assert got["X-Tls-Peer-Subject-Cn"] == "carol.example.com"
            assert got["X-Tls-Peer-Issuer"] == "/CN=pyproxy root CA"
            assert got["X-Tls-Peer-San-Uri"] == "sip:carol.example.com"
            assert got["X-Tls-Peer-San-Dns"] == "carol.example.com,phone.example.net,*.carol.example.org"
            assert got["X-Tls-Peer-Verified"] == "1"
            assert got["X-Is-Peer-Verified"] == "yes"

        # no certificate (allowed with tls_require_client_certificate=0): every peer field is $null
        got, (tls_version, cipher) = send_over_tls(port, tls_client(pki), sink)
        assert got["X-Proto"] == "tls"
        assert (got["X-Tls-Version"], got["X-Tls-Cipher-Info"]) == (tls_version, cipher)
        for variable in ("tls_peer_subject", "tls_peer_subject_cn", "tls_peer_issuer", "tls_peer_san_uri",
                         "tls_peer_san_dns"):
            assert got[header_name(variable)] == "<null>", (variable, got)
        assert got["X-Tls-Peer-Verified"] == "0"
        assert got["X-Is-Peer-Verified"] == "no"
    assert proxy.alive() and "Traceback" not in proxy.log(), proxy.tail()


FORWARD_ROUTE = """route {
    if (uri==myself && $rU==$null) { sl_send_reply("200", "OK"); exit; }
    if ($rU=="totls") { forward_tls("127.0.0.1", %(tls)d); exit; }
    if ($rU=="toudp") { forward_udp("127.0.0.1", %(udp)d); exit; }
    if ($rU=="totcp") { forward_tcp("127.0.0.1", %(tcp)d); exit; }
    sl_send_reply("404", "No Such Route");
}"""


def send_udp(proxy, user: str) -> tuple[str, int]:
    """A UDP OPTIONS for sip:USER@proxy, sent and left (the receivers do not answer): its Call-ID
    and the sender's port."""
    call_id = f"{user}-{uuid.uuid4().hex}"
    with udp_socket() as u:
        u.sendto(options_request(proxy.port, call_id, "udp", u.getsockname()[1],
                                 ruri=f"sip:{user}@{LOOP}:{proxy.port}"), (LOOP, proxy.port))
        return call_id, u.getsockname()[1]


def assert_forwarded(message: bytes | None, call_id: str, sender_port: int, via: str) -> None:
    """The request arrived with our Via of that transport on top and the sender's below it."""
    assert message is not None and message.startswith(b"OPTIONS sip:"), message
    headers = [ln for ln in message.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]]
    vias = [ln.split(":", 1)[1].strip() for ln in headers if ln.lower().startswith("via:")]
    assert len(vias) == 2 and vias[0].startswith(f"{via};branch=z9hG4bK"), vias
    assert vias[1].startswith(f"SIP/2.0/UDP {LOOP}:{sender_port};"), vias
    assert f"Call-ID: {call_id}" in headers, headers


def test_forward_tls_udp_tcp(proxy_factory, pki):
    tls_port, tls_target, udp_target, tcp_target = free_port(), free_port(), free_port(), free_port()
    route = FORWARD_ROUTE % {"tls": tls_target, "udp": udp_target, "tcp": tcp_target}
    proxy = proxy_factory(children=2, route=route, extra=tls_settings(pki, tls_port))

    server_ctx, tls_listener = tls_server(pki, "localhost", tls_target)
    with tls_listener:
        call_id, sender = send_udp(proxy, "totls")
        conn, _ = tls_listener.accept()
        conn.settimeout(5)
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            got = read_tcp_message(tls, time.monotonic() + 5, bytearray())
    assert_forwarded(got, call_id, sender, f"SIP/2.0/TLS {LOOP}:{tls_port}")

    with udp_listener(udp_target) as listener:
        call_id, sender = send_udp(proxy, "toudp")
        got = listener.recvfrom(65536)[0]
    assert_forwarded(got, call_id, sender, f"SIP/2.0/UDP {LOOP}:{proxy.port}")

    tcp_listener = socket.create_server((LOOP, tcp_target))
    tcp_listener.settimeout(5)
    with tcp_listener:
        call_id, sender = send_udp(proxy, "totcp")
        conn, _ = tcp_listener.accept()
        with conn:
            got = read_tcp_message(conn, time.monotonic() + 5, bytearray())
    assert_forwarded(got, call_id, sender, f"SIP/2.0/TCP {LOOP}:{proxy.port}")
    assert proxy.alive() and "Traceback" not in proxy.log(), proxy.tail()
