"""Several UDP sockets: the one a message leaves from, and so the address its next hop sees and
answers to, is chosen as OpenSER did (get_send_socket): the socket the message came in on, or with
mhomed=yes the one bound to the address the kernel routes the destination by."""

import uuid

import pytest

from pyproxy.sip import parse_message

from ._harness import LOOP, free_port, options_request, status_of, udp_socket

SECOND = "127.0.0.2"        # on lo with 127.0.0.1; the kernel sends to 127.0.0.1 from 127.0.0.1


def relay(arrive_at: str, proxy_port: int) -> tuple[tuple, str, tuple]:
    """A request sent to arrive_at:proxy_port for a UAS on 127.0.0.1, answered 200 by that UAS.
    Returns where the forwarded request came from, its top Via, and where the 200 came back from."""
    with udp_socket(5.0) as uac, udp_socket(5.0) as uas:
        ruri = f"sip:bob@{LOOP}:{uas.getsockname()[1]}"
        uac.sendto(options_request(proxy_port, f"mh-{uuid.uuid4().hex}", "udp", uac.getsockname()[1], ruri),
                   (arrive_at, proxy_port))
        data, forwarded_from = uas.recvfrom(65535)
        request = parse_message(data)
        via = request.top_via
        answer = (b"SIP/2.0 200 OK\r\n" + b"".join(f"{line}\r\n".encode() for line in (
            *(f"Via: {v}" for v in request.header_values("Via")), f"From: {request.header('From')}",
            f"To: {request.header('To')};tag=uas", f"Call-ID: {request.call_id}",
            f"CSeq: {request.header('CSeq')}", "Content-Length: 0")) + b"\r\n")
        uas.sendto(answer, (via.host, via.port))
        reply, replied_from = uac.recvfrom(65535)
        assert status_of(reply) == 200
        return forwarded_from, f"{via.host}:{via.port}", replied_from


def test_a_message_leaves_from_the_socket_it_came_in_on(proxy_factory):
    second = free_port()
    proxy = proxy_factory(children=2, extra=f"listen=udp:{SECOND}:{second}")
    for arrive_at, port in ((SECOND, second), (LOOP, proxy.port)):
        forwarded_from, via, replied_from = relay(arrive_at, port)
        assert forwarded_from == (arrive_at, port) and via == f"{arrive_at}:{port}", proxy.tail()
        assert replied_from == (arrive_at, port)     # the UAC hears back from where it sent to


@pytest.mark.parametrize("arrive_at_second", [True, False])
def test_mhomed_sends_from_the_address_the_kernel_routes_by(proxy_factory, arrive_at_second):
    second = free_port()
    proxy = proxy_factory(children=2, extra=f"mhomed=yes\nlisten=udp:{SECOND}:{second}")
    forwarded_from, via, _ = relay(*((SECOND, second) if arrive_at_second else (LOOP, proxy.port)))
    assert forwarded_from == (LOOP, proxy.port) and via == f"{LOOP}:{proxy.port}", proxy.tail()
