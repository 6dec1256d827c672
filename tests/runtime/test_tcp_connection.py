"""TCPConnection's write buffer over a real socket pair: when a stall starts to count."""

import socket

from pyproxy.config.values import Proto
from pyproxy.runtime.tcp import TCPConnection

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
