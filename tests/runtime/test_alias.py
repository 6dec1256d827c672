"""RFC 5923: a client that puts ;alias in its Via asks the proxy to reach its Via address over
the connection it opened, instead of opening a new one."""

import select
import time
import uuid

from ._harness import LOOP, free_port, options_request, read_tcp_message, status_of, tcp_connect, udp_socket


def test_via_alias_makes_the_connection_reusable(proxy_factory):
    """The alias reaches every worker through the supervisor, a moment after the 200: until then a
    request for the alias tries a new connection, which nobody accepts (477), so the UAC retries."""
    proxy = proxy_factory(children=2)
    nobody = free_port()            # the client's advertised port: nothing listens there
    with tcp_connect(proxy.port) as conn, udp_socket(5.0) as u:
        hello = options_request(proxy.port, f"alias-{uuid.uuid4().hex}", "tcp", nobody).replace(
            b";rport\r\n", b";rport;alias\r\n")
        conn.sendall(hello)
        assert status_of(read_tcp_message(conn, time.monotonic() + 5, bytearray())) == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            u.sendto(options_request(proxy.port, f"to-alias-{uuid.uuid4().hex}", "udp", u.getsockname()[1],
                                     ruri=f"sip:bob@{LOOP}:{nobody};transport=tcp"), (LOOP, proxy.port))
            readable, _, _ = select.select([conn, u], [], [], 5)
            if conn in readable or not readable:
                break
            assert status_of(u.recv(65536)) == 477
            time.sleep(0.05)
        forwarded = read_tcp_message(conn, time.monotonic() + 5, bytearray())
    assert forwarded is not None and forwarded.startswith(f"OPTIONS sip:bob@{LOOP}:{nobody}".encode())


def test_response_returns_on_the_connection_of_a_client_without_rport(proxy_factory):
    """RFC 3261 18.2.2: a TCP client whose Via has no rport (and names a port nobody listens on)
    gets the forwarded response on the connection it sent the request on, whichever worker
    reads the response."""
    proxy = proxy_factory(children=2)
    nobody = free_port()
    with udp_socket(5.0) as uas, tcp_connect(proxy.port) as conn:
        for n in range(4):      # responses arrive at either worker
            request = options_request(proxy.port, f"norport-{n}-{uuid.uuid4().hex}", "tcp", nobody,
                                      ruri=f"sip:bob@{LOOP}:{uas.getsockname()[1]}").replace(b";rport\r\n", b"\r\n")
            conn.sendall(request)
            forwarded, addr = uas.recvfrom(65536)
            head = forwarded.split(b"\r\n\r\n")[0].split(b"\r\n")
            kept = [h for h in head[1:] if not h.lower().startswith((b"max-forwards", b"content-length"))]
            uas.sendto(b"\r\n".join([b"SIP/2.0 200 OK", *kept, b"Content-Length: 0", b"", b""]), addr)
            response = read_tcp_message(conn, time.monotonic() + 5, bytearray())
            assert status_of(response) == 200 and b"cport" not in response
