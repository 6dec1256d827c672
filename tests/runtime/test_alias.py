"""RFC 5923: a client that puts ;alias in its Via asks the proxy to reach its Via address over
the connection it opened, instead of opening a new one."""

import time
import uuid

from ._harness import LOOP, free_port, options_request, read_tcp_message, status_of, tcp_connect, udp_socket


def test_via_alias_makes_the_connection_reusable(proxy_factory):
    proxy = proxy_factory(children=2)
    nobody = free_port()            # the client's advertised port: nothing listens there
    with tcp_connect(proxy.port) as conn:
        hello = options_request(proxy.port, f"alias-{uuid.uuid4().hex}", "tcp", nobody).replace(
            b";rport\r\n", b";rport;alias\r\n")
        conn.sendall(hello)
        assert status_of(read_tcp_message(conn, time.monotonic() + 5, bytearray())) == 200
        with udp_socket(5.0) as u:
            u.sendto(options_request(proxy.port, f"to-alias-{uuid.uuid4().hex}", "udp", u.getsockname()[1],
                                     ruri=f"sip:bob@{LOOP}:{nobody};transport=tcp"), (LOOP, proxy.port))
            forwarded = read_tcp_message(conn, time.monotonic() + 5, bytearray())
    assert forwarded is not None and forwarded.startswith(f"OPTIONS sip:bob@{LOOP}:{nobody}".encode())
