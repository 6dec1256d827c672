"""One TCP connection inside the worker that owns it: framing in, buffered writes out, idleness.

The worker owns the socket for the connection's whole life; other workers reach it through the
owner (hand-off). Reads go through the SIP stream parser; a framing error closes the connection
(RFC 4475: a stream cannot be resynchronised).
"""

from __future__ import annotations

import time

from ..config.values import Proto
from ..sip import StreamParser


class TCPConnection:
    __slots__ = ("conn_id", "sock", "fd", "proto", "peer_ip", "peer_port", "local_ip", "local_port",
                 "parser", "out", "last_active", "stalled_since", "connecting", "closed", "outbound",
                 "opened", "pipe", "tls_info", "domain", "target", "waiting", "reading_paused")

    def __init__(self, conn_id: int, sock, proto: Proto, peer: tuple, local: tuple, max_size: int,
                 outbound: bool = False, connecting: bool = False, pipe=None):
        self.conn_id = conn_id
        self.sock = sock
        self.fd = sock.fileno()
        self.proto = proto
        self.peer_ip, self.peer_port = peer[0], peer[1]
        self.local_ip, self.local_port = local[0], local[1]
        self.parser = StreamParser(max_size)
        self.out = bytearray()
        self.last_active = time.monotonic()
        self.stalled_since: float | None = None      # since when bytes have waited in ``out``
        self.connecting = connecting
        self.closed = False
        self.outbound = outbound
        self.opened = self.last_active
        self.pipe = pipe                # TLS: the TLSPipe holding this connection's SSL object
        self.tls_info: dict | None = None   # the peer summary, once the handshake is done
        self.domain = None              # TLS: the domain whose context the connection uses
        self.target: str | None = None  # outbound TLS: the host name the certificate must match
        self.waiting: list[tuple] = []  # requests written before it was up: (data, host, route, tried, rcv)
        self.reading_paused = False     # until the peer reads what waits for it

    @property
    def established(self) -> bool:
        """Connected and, for TLS, the peer accepted: what is written now reaches the peer."""
        return not self.connecting and (self.pipe is None or self.pipe.accepted)

    def write_now(self, data) -> bool:
        """Write what the kernel takes; keep the rest. False when the peer is gone."""
        if self.connecting:
            self.out += data        # flush() sends it once connected (and times a stall from then)
            return True
        if self.out:
            self.out += data
            return self.flush()
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent < len(data):
            self.out += data[sent:]
            if self.stalled_since is None:
                self.stalled_since = time.monotonic()
        self.last_active = time.monotonic()
        return True

    def flush(self) -> bool:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        del self.out[:sent]
        if not self.out:
            self.stalled_since = None
        elif self.stalled_since is None:    # what was queued while connecting does not fit either
            self.stalled_since = time.monotonic()   # (a peer reading a little now and then stays stalled)
        return True
