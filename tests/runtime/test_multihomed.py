"""Several UDP sockets: the one a message leaves from, and so the address its next hop sees and
answers to, is chosen as OpenSER did (get_send_socket): the socket the message came in on, or with
mhomed=yes the one bound to the address the kernel routes the destination by."""

import socket
import time
import uuid

import pytest

from pyproxy.sip import parse_message

from ._harness import LOOP, free_port, options_request, read_tcp_message, status_of, udp_socket

SECOND = "127.0.0.2"        # on lo with 127.0.0.1; the kernel sends to 127.0.0.1 from 127.0.0.1


def relay(arrive_at: str, proxy_port: int, uas: socket.socket | None = None,
          uas_host: str = LOOP, user: str = "bob") -> tuple[tuple, str, tuple]:
    """A request sent to arrive_at:proxy_port for a UAS (on 127.0.0.1 unless given, reached as
    ``uas_host``), answered 200 by that UAS. Returns where the forwarded request came from, its
    top Via, and where the 200 came back from."""
    with udp_socket(5.0) as uac, (uas or udp_socket(5.0)) as uas:
        uas.settimeout(5.0)
        ruri = f"sip:{user}@{uas_host}:{uas.getsockname()[1]}"
        uac.sendto(options_request(proxy_port, f"mh-{uuid.uuid4().hex}", "udp", uac.getsockname()[1], ruri),
                   (arrive_at, proxy_port))
        data, forwarded_from = uas.recvfrom(65535)
        request = parse_message(data)
        assert str(request.ruri) == ruri
        via = request.top_via
        answer = (b"SIP/2.0 200 OK\r\n" + b"".join(f"{line}\r\n".encode() for line in (
            *(f"Via: {v}" for v in request.header_values("Via")), f"From: {request.header('From')}",
            f"To: {request.header('To')};tag=uas", f"Call-ID: {request.call_id}",
            f"CSeq: {request.header('CSeq')}", "Content-Length: 0")) + b"\r\n")
        uas.sendto(answer, (via.host.strip("[]"), via.port))
        reply, replied_from = uac.recvfrom(65535)
        assert status_of(reply) == 200
        return forwarded_from[:2], f"{via.host}:{via.port}", replied_from


def test_a_message_leaves_from_the_socket_it_came_in_on(proxy_factory):
    """The second address is listed first: neither socket is "the first" for both arrivals."""
    second = free_port()
    proxy = proxy_factory(children=2, head=f"listen=udp:{SECOND}:{second}")
    for arrive_at, port in ((SECOND, second), (LOOP, proxy.port)):
        forwarded_from, via, replied_from = relay(arrive_at, port)
        assert forwarded_from == (arrive_at, port) and via == f"{arrive_at}:{port}", proxy.tail()
        assert replied_from == (arrive_at, port)     # the UAC hears back from where it sent to


@pytest.mark.parametrize("arrive_at_second", [True, False])
def test_mhomed_sends_from_the_address_the_kernel_routes_by(proxy_factory, arrive_at_second):
    """The kernel routes 127.0.0.1 by 127.0.0.1, the second socket of the config."""
    second = free_port()
    proxy = proxy_factory(children=2, head=f"mhomed=yes\nlisten=udp:{SECOND}:{second}")
    forwarded_from, via, _ = relay(*((SECOND, second) if arrive_at_second else (LOOP, proxy.port)))
    assert forwarded_from == (LOOP, proxy.port) and via == f"{LOOP}:{proxy.port}", proxy.tail()


def test_a_name_dns_answers_later_leaves_from_a_socket_of_its_family(proxy_factory, dns_zone):
    """A request that came in over IPv4 for a name with only an IPv6 address: which socket sends
    it is known only when DNS has answered, and its Via names that socket."""
    v6_port = free_port()
    zone = dns_zone({("v6.example.test", "AAAA"): ["::1"]})
    proxy = proxy_factory(children=1, extra=f"dns_server={LOOP}:{zone.port}\nlisten=udp:[::1]:{v6_port}")
    uas = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    uas.bind(("::1", 0))
    forwarded_from, via, _ = relay(LOOP, proxy.port, uas, "v6.example.test")
    assert forwarded_from == ("::1", v6_port) and via == f"[::1]:{v6_port}", proxy.tail()


def test_our_via_is_written_in_and_nothing_else(proxy_factory, dns_zone):
    """The Request-URI holds the text that stands for our sent-by while DNS is asked: it stays."""
    second = free_port()
    zone = dns_zone({("v4.example.test", "A"): [LOOP]})
    proxy = proxy_factory(children=1, head=f"listen=udp:{SECOND}:{second}", extra=f"dns_server={LOOP}:{zone.port}")
    forwarded_from, via, _ = relay(LOOP, proxy.port, uas_host="v4.example.test", user="source.pyproxy.invalid")
    assert forwarded_from == (LOOP, proxy.port) and via == f"{LOOP}:{proxy.port}", proxy.tail()


def test_a_stream_via_names_the_socket_of_the_family_dns_gave(proxy_factory, dns_zone):
    """TCP sockets on 127.0.0.1 and ::1, a name with only ::1: the Via names [::1]'s socket."""
    v6_port = free_port()
    zone = dns_zone({("v6.example.test", "AAAA"): ["::1"]})
    proxy = proxy_factory(children=1, extra=f"dns_server={LOOP}:{zone.port}\nlisten=tcp:[::1]:{v6_port}")
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as uas, udp_socket(5.0) as uac:
        uas.settimeout(5.0)
        ruri = f"sip:bob@v6.example.test:{uas.getsockname()[1]};transport=tcp"
        uac.sendto(options_request(proxy.port, f"mh-{uuid.uuid4().hex}", "udp", uac.getsockname()[1], ruri),
                   (LOOP, proxy.port))
        conn, _ = uas.accept()
        with conn:
            request = parse_message(read_tcp_message(conn, time.monotonic() + 5, bytearray()))
    via = request.top_via
    assert (via.transport, via.host, via.port) == ("TCP", "[::1]", v6_port), proxy.tail()


def test_a_477_leaves_from_the_socket_the_request_came_in_on(proxy_factory):
    """A TCP next hop that refuses the connection (found out after forward() returned)."""
    second, closed = free_port(), free_port()
    proxy = proxy_factory(children=1, head=f"listen=udp:{SECOND}:{second}")
    with udp_socket(5.0) as uac:
        uac.sendto(options_request(proxy.port, f"mh-{uuid.uuid4().hex}", "udp", uac.getsockname()[1],
                                   f"sip:bob@{LOOP}:{closed};transport=tcp"), (LOOP, proxy.port))
        reply, replied_from = uac.recvfrom(65535)
    assert status_of(reply) == 477 and replied_from == (LOOP, proxy.port), proxy.tail()
