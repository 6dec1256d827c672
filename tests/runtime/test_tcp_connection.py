"""TCPConnection's write buffer over a real socket pair: when a stall starts to count; and over
a running proxy, what one batch of events writes to a connection leaving in one send."""

import socket
import time
from types import SimpleNamespace

import pytest

from pyproxy.assembly.loader import load_config_text
from pyproxy.config.values import Proto
from pyproxy.runtime.arbiter import Arbiter
from pyproxy.runtime.streams import READ_PAUSE
from pyproxy.runtime.tcp import TCPConnection

from ._harness import LOOP, free_port, options_request, read_tcp_message, status_of
from .test_tls import client_context, tls_settings

BIG = b"x" * (16 << 20)         # more than any socket buffer takes at once


def pair():
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    return TCPConnection(1, ours, Proto.TCP, ("127.0.0.1", 5060), ("127.0.0.1", 5061), 65536,
                         outbound=True, connecting=True), peer


def test_bytes_queued_while_connecting_that_do_not_fit_count_as_stalled():
    conn, peer = pair()
    with conn.sock, peer:
        assert conn.write_now(BIG) and conn.stalled_since is None     # not connected: no peer to blame
        conn.connecting = False
        assert conn.flush()
        assert conn.out and conn.stalled_since is not None


def test_a_peer_that_reads_everything_is_not_stalled():
    conn, peer = pair()
    with conn.sock, peer:
        conn.write_now(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        conn.connecting = False
        assert conn.flush() and not conn.out and conn.stalled_since is None
        conn.write_now(BIG)
        since = conn.stalled_since
        assert since is not None
        peer.setblocking(False)
        while conn.out:                 # the peer reads a little now and then: still stalled since then
            try:
                peer.recv(1 << 20)
            except BlockingIOError:
                pass
            conn.flush()
            if conn.out:
                assert conn.stalled_since == since
        assert conn.stalled_since is None


# Linux's struct tcp_info: tcpi_data_segs_in, the segments with data a socket has received.
TCP_INFO_DATA_SEGS_IN = 152


def data_segments_in(sock) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[TCP_INFO_DATA_SEGS_IN:TCP_INFO_DATA_SEGS_IN + 4], "little")


@pytest.mark.parametrize("proto", ["tcp", "tls"])
def test_the_replies_to_requests_read_at_once_leave_in_one_send(proxy_factory, pki, proto):
    """Three OPTIONS in one segment are read at once; their three 200s are written at the end
    of that batch of events as one send, so they arrive as one segment (each its own with one
    send per message: the proxy's sockets do not wait to fill a segment, TCP_NODELAY)."""
    tls_port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, tls_port) if proto == "tls" else "")
    port = tls_port if proto == "tls" else proxy.port
    raw = socket.create_connection((LOOP, port), timeout=5)
    with client_context(pki).wrap_socket(raw) if proto == "tls" else raw as s:
        lport = s.getsockname()[1]
        buf = bytearray()
        s.sendall(options_request(port, "warm-up", proto, lport))    # (TLS 1.3 tickets come before it)
        assert status_of(read_tcp_message(s, time.monotonic() + 10, buf)) == 200
        before = data_segments_in(s)
        s.sendall(b"".join(options_request(port, f"three-{n}", proto, lport) for n in range(3)))
        replies = [read_tcp_message(s, time.monotonic() + 10, buf) for _ in range(3)]
        assert [status_of(r) if r else None for r in replies] == [200] * 3, proxy.tail()
        assert data_segments_in(s) - before == 1


def test_a_connection_paused_by_a_batch_s_writes_is_read_again_when_the_kernel_takes_them():
    """Reading a connection pauses while more than READ_PAUSE bytes wait for its peer. A batch of
    events can queue that much before its end (the bench: hundreds of hand-offs for sipp's UAS
    connection in one batch); when the kernel then takes it all at once no writable event comes,
    and the end of the batch must resume the reading itself (else the connection is never read
    again)."""
    port = free_port()
    arbiter = Arbiter(load_config_text(f"fork=yes\nchildren=1\nlisten=udp:{LOOP}:{port}\nroute {{ drop; }}\n",
                                       "<test>"), SimpleNamespace(shm_mb=8, foreground=1))
    arbiter.build()
    worker = arbiter.new_worker(0)
    streams, loop = worker.streams, worker.loop
    listener = socket.create_server((LOOP, 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    accepted, peer = listener.accept()
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)    # takes the batch at once
    try:
        conn = streams.adopt(7, accepted, Proto.TCP, peer, (LOOP, port))
        client.sendall(options_request(port, "after-the-batch", "tcp", client.getsockname()[1]))
        loop.dispatching = True
        assert streams.write(conn, b"x" * (READ_PAUSE + 1))
        streams.on_readable(conn)           # more than READ_PAUSE waits for the peer: paused
        assert conn.reading_paused
        loop.dispatching = False
        for callback in loop.after_batch:
            callback()
        assert not conn.out and not conn.reading_paused
        assert loop.handlers[conn.fd][0] is not None        # read again
    finally:
        for c in list(streams.conns.values()):
            c.sock.close()
        client.close()
        listener.close()
        for bound in arbiter.listeners:
            bound.sock.close()
