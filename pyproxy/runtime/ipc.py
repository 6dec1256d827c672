"""Messages between pyproxy's processes, and the channels that carry them.

- **hand-off** (worker -> worker, one Unix datagram socket per worker): a SIP message and where
  it came from, for the worker that owns its Call-ID; or bytes to write on a TCP connection,
  for the worker that owns that connection.
- **supervisor channel** (one SOCK_SEQPACKET pair per worker): new connections (the fd rides along
  with SCM_RIGHTS) from the supervisor; connection events (opened outbound, closed, alias) from
  the worker.
- **master -> supervisor**: a worker died, forget its connections; the supervisor then tells the
  channel's next reader (the respawned worker) where its predecessor's unread connections end.

Payloads are ``marshal``-encoded tuples: fast, and only our own processes speak on these sockets.
"""

from __future__ import annotations

import marshal
import re
import socket
import zlib
from collections import deque

# hand-off kinds
MESSAGE = 1         # (MESSAGE, proto, src_ip, src_port, dst_ip, dst_port, conn_id, conn_owner, data, tls)
SEND = 2            # (SEND, conn_id, data, host): host, when set, the certificate must name (RFC 5922)
CONTROL = 3         # mi -> worker: (CONTROL, request_id, command); the worker answers on the mi socket
                    # with (request_id, worker_index, result)

# supervisor channel kinds
NEW_CONN = 1        # supervisor -> worker: (NEW_CONN, conn_id, proto, peer_ip, peer_port, local_ip, local_port) + fd
OUTBOUND = 2        # worker -> supervisor: (OUTBOUND, conn_id, owner, proto, peer_ip, peer_port)
CLOSED = 3          # worker -> supervisor: (CLOSED, conn_id)
ALIAS = 4           # worker -> supervisor: (ALIAS, conn_id, proto, ip, port)
WORKER_DIED = 5     # master -> supervisor: (WORKER_DIED, index, incarnation of its successor)
EPOCH = 6           # supervisor -> worker: (EPOCH, incarnation): what follows is for that incarnation

MAX_DATAGRAM = 256 * 1024
MI_CHUNK = 192 * 1024       # a worker's answer to the mi process, per datagram (with room for the header)
dumps, loads = marshal.dumps, marshal.loads


class DatagramReader:
    """Reads marshal-encoded datagrams into one buffer kept for the socket's life.

    A fresh ``recv(MAX_DATAGRAM)`` per hand-off costs more than the hand-off itself: glibc serves
    a 256 KiB allocation with mmap and gives it back with munmap, every time (about 12 us).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(MAX_DATAGRAM)
        self.view = memoryview(self.buffer)

    def read(self):
        """The next item; BlockingIOError when there is none (non-blocking socket)."""
        size = self.sock.recv_into(self.buffer)
        return loads(self.view[:size])


def datagram_pair() -> tuple[socket.socket, socket.socket]:
    """(receiving end, sending end) of a worker's hand-off socket; big buffers for bursts."""
    recv_end, send_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (recv_end, send_end):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    recv_end.setblocking(False)
    send_end.setblocking(False)
    return recv_end, send_end


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, worker end) of a supervisor channel; big buffers: thousands of
    connections closing at once (a NAT restarting) are thousands of messages."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.setblocking(False)
    return a, b


class Outbox:
    """Messages for a non-blocking socket, sent in order: what the socket cannot take now waits
    (up to ``limit`` messages) and goes when it drains, instead of being dropped. An item is the
    payload, or (payload, socket to pass with it): that socket is closed once passed."""

    def __init__(self, sock: socket.socket, loop, limit: int, on_drop) -> None:
        self.sock, self.loop, self.limit, self.on_drop = sock, loop, limit, on_drop
        self.waiting: deque = deque()

    def send(self, payload: bytes, passed: socket.socket | None = None) -> None:
        if self.waiting or not self._send(payload, passed):
            if len(self.waiting) >= self.limit:
                self.on_drop(payload, "it is too far behind")
                if passed is not None:
                    passed.close()
                return
            if not self.waiting:
                self.loop.set_writer(self.sock.fileno(), self.drain)
            self.waiting.append((payload, passed))

    def drain(self) -> None:
        while self.waiting and self._send(*self.waiting[0]):
            self.waiting.popleft()
        if not self.waiting:
            self.loop.set_writer(self.sock.fileno(), None)

    def _send(self, payload: bytes, passed: socket.socket | None) -> bool:
        """True when sent (or lost for good, which on_drop was told); False: try again later."""
        try:
            if passed is None:
                self.sock.send(payload)
            else:
                socket.send_fds(self.sock, [payload], [passed.fileno()])
        except BlockingIOError:
            return False
        except OSError as e:
            self.on_drop(payload, e.strerror)
        if passed is not None:
            passed.close()      # the receiver has its own copy now
        return True


# Call-ID: find it in the raw bytes without parsing the message (RFC 3261 20.8, compact form i).
_CALL_ID = re.compile(rb"\n(?:[Cc][Aa][Ll][Ll]-[Ii][Dd]|[Ii])[ \t]*:[ \t]*([^\r\n]*)")


def call_id_of(data: bytes) -> bytes | None:
    end = data.find(b"\r\n\r\n")
    m = _CALL_ID.search(data, 0, len(data) if end < 0 else end + 2)
    return m.group(1).strip() if m else None


def owner_of(call_id: bytes, workers: int) -> int:
    """The worker (0-based) that processes every message of this call."""
    return zlib.crc32(call_id) % workers
