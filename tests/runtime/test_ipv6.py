"""IPv6 through a running proxy on ::1: OPTIONS over UDP and TCP, requests forwarded to an IPv6
next hop from IPv6 and from IPv4 clients (the Via written in brackets, the reply routed back)."""

import re
import socket
import time
import uuid

from ._harness import LOOP, free_port, read_tcp_message, status_of

V6 = "::1"


def request(ruri: str, proto: str, via_host: str, via_port: int, call_id: str) -> bytes:
    return (f"OPTIONS {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{proto} {via_host}:{via_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:tester@{via_host}>;tag={uuid.uuid4().hex[:10]}\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def udp(family: int, host: str) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(5)
    return s


def answer_200(uas: socket.socket) -> bytes:
    """Receive one request at the UAS and answer it 200 with its Vias; returns the request."""
    got, addr = uas.recvfrom(65536)
    head = got.split(b"\r\n\r\n")[0].split(b"\r\n")
    kept = [h for h in head[1:] if not h.lower().startswith((b"max-forwards", b"content-length"))]
    uas.sendto(b"\r\n".join([b"SIP/2.0 200 OK", *kept, b"Content-Length: 0", b"", b""]), addr)
    return got


def test_ipv6_sockets_answer_and_forward(proxy_factory):
    port6 = free_port()
    proxy = proxy_factory(children=2, extra=f"listen=udp:[{V6}]:{port6}\nlisten=tcp:[{V6}]:{port6}\n")
    with udp(socket.AF_INET6, V6) as client, udp(socket.AF_INET6, V6) as uas, \
            udp(socket.AF_INET, LOOP) as client4:
        # OPTIONS to the proxy itself over UDP and TCP on ::1
        client.sendto(request(f"sip:[{V6}]:{port6}", "UDP", f"[{V6}]", client.getsockname()[1],
                              f"v6-{uuid.uuid4().hex}"), (V6, port6))
        assert status_of(client.recvfrom(65536)[0]) == 200
        with socket.create_connection((V6, port6), timeout=5) as tcp:
            tcp.sendall(request(f"sip:[{V6}]:{port6}", "TCP", f"[{V6}]", tcp.getsockname()[1],
                                f"v6tcp-{uuid.uuid4().hex}"))
            assert status_of(read_tcp_message(tcp, time.monotonic() + 5, bytearray())) == 200
        # forwarded to an IPv6 next hop, from an IPv6 and from an IPv4 client
        target = f"sip:bob@[{V6}]:{uas.getsockname()[1]}"
        for sock, host, to in ((client, f"[{V6}]", (V6, port6)), (client4, LOOP, (LOOP, proxy.port))):
            sock.sendto(request(target, "UDP", host, sock.getsockname()[1], f"fwd-{uuid.uuid4().hex}"), to)
            forwarded = answer_200(uas)
            top = re.search(rb"Via: SIP/2.0/UDP ([^;\r]+);branch=", forwarded).group(1)
            assert top == f"[{V6}]:{port6}".encode(), forwarded    # sent from the IPv6 socket
            reply, _ = sock.recvfrom(65536)
            assert status_of(reply) == 200 and reply.count(b"Via:") == 1
    assert proxy.alive() and "Traceback" not in proxy.log(), proxy.tail()


def test_tls_over_ipv6(proxy_factory, pki):
    from .test_tls import client_context, tls_settings
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, free_port()) + f"listen=tls:[{V6}]:{port}\n")
    raw = socket.create_connection((V6, port), timeout=5)
    with client_context(pki).wrap_socket(raw) as s:
        s.sendall(request(f"sip:[{V6}]:{port};transport=tls", "TLS", f"[{V6}]", s.getsockname()[1],
                          f"v6tls-{uuid.uuid4().hex}"))
        assert status_of(read_tcp_message(s, time.monotonic() + 5, bytearray())) == 200
    assert proxy.alive()
