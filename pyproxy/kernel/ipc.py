"""Messages between pyproxy's processes, and the channels that carry them.

- **hand-off** (worker -> worker, one Unix datagram socket per worker): a SIP message and where
  it came from, for the worker that owns its Call-ID; or bytes to write on a TCP connection,
  for the worker that owns that connection; or several of these in one Batch.
- **supervisor channel** (one SOCK_SEQPACKET pair per worker): new connections (the fd rides along
  with SCM_RIGHTS) from the supervisor; connection events (opened outbound, closed, alias) from
  the worker.
- **master -> supervisor**: a worker died, forget its connections; the supervisor then tells the
  channel's next reader (the respawned worker) where its predecessor's unread connections end.

Each message is one of the named tuples below; encode() and decode() are the one place where they
become bytes: ``marshal`` of (kind number, fields...), fast, and only our own processes speak on
these sockets. A transport travels as its text ("udp"), a missing number as -1 or 0 (marshal
knows no enums).
"""

from __future__ import annotations

import marshal
import os
import re
import socket
import struct
import zlib
from collections import deque
from typing import NamedTuple


# -- worker hand-off socket -----------------------------------------------------------------------
class Handoff(NamedTuple):
    """A SIP message for the worker that owns its Call-ID, and how it came in."""
    proto: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    conn_id: int        # 0: not over a connection
    conn_owner: int     # -1: not known
    data: bytes
    tls: dict | None    # the TLS peer's summary, for a message that came over TLS


class SendOn(NamedTuple):
    """Bytes to write on a TCP/TLS connection, for the worker that owns it."""
    conn_id: int
    data: bytes
    host: str           # when set, the host a TLS server's certificate must name (RFC 5922)


class Batch(NamedTuple):
    """Several encoded hand-offs (Handoff, SendOn) for one worker in one datagram: what one batch
    of events hands to that worker."""
    items: list[bytes]


class Control(NamedTuple):
    """mi -> worker: a management command; the worker answers with ControlAnswer pieces."""
    request_id: int
    command: str


class ControlAnswer(NamedTuple):
    """worker -> mi, on the mi socket: a piece of the encoded answer, ``last`` on the final one."""
    request_id: int
    worker: int
    last: bool
    part: bytes


# -- supervisor channel (and master -> supervisor) ------------------------------------------------
class NewConn(NamedTuple):
    """supervisor -> worker, with the connection's fd: it is yours."""
    conn_id: int
    proto: str
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int


class Outbound(NamedTuple):
    """worker -> supervisor: I opened this connection."""
    conn_id: int
    owner: int
    proto: str
    peer_ip: str
    peer_port: int
    domain: int         # index of its TLS client domain (tls_match_domain_on_reuse)


class Closed(NamedTuple):
    """worker -> supervisor: this connection is gone."""
    conn_id: int


class Alias(NamedTuple):
    """worker -> supervisor: this connection also reaches ip:port (RFC 5923)."""
    conn_id: int
    proto: str
    ip: str
    port: int


class WorkerDied(NamedTuple):
    """master -> supervisor: forget the worker's connections; its successor is ``incarnation``."""
    index: int
    incarnation: int


class Epoch(NamedTuple):
    """supervisor -> worker: what follows on the channel is for this incarnation of the worker."""
    incarnation: int


_KINDS = (Handoff, SendOn, Control, ControlAnswer, NewConn, Outbound, Closed, Alias, WorkerDied, Epoch, Batch)
_NUMBER = {kind: number for number, kind in enumerate(_KINDS)}


def encode(item: tuple) -> bytes:
    return marshal.dumps((_NUMBER[type(item)], *item))


_make = tuple.__new__       # a named tuple's own __new__ is Python code


def decode(payload) -> tuple:
    """The named tuple that encode() made ``payload`` of (bytes or a memoryview); made without
    checking its fields' count: only encode() wrote this."""
    fields = marshal.loads(payload)
    return _make(_KINDS[fields[0]], fields[1:])


MAX_DATAGRAM = 256 * 1024
MI_CHUNK = 192 * 1024       # a worker's answer to the mi process, per datagram (with room for the header)


def answer_datagrams(request_id: int, worker: int, result) -> list[bytes]:
    """A worker's answer to a Control command, as the ControlAnswer datagrams that carry it (a
    long one, tls_list of thousands of connections, takes several)."""
    answer = marshal.dumps(result)
    starts = range(0, len(answer), MI_CHUNK)
    return [encode(ControlAnswer(request_id, worker, start == starts[-1], answer[start:start + MI_CHUNK]))
            for start in starts]


def answer_of(parts: list[bytes]):
    """The result that answer_datagrams() split into ``parts`` (in order)."""
    return marshal.loads(b"".join(parts))


class DatagramReader:
    """Reads encoded datagrams into one buffer kept for the socket's life.

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
        return decode(self.view[:size])


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


_FD = struct.Struct("i")     # a descriptor in SCM_RIGHTS ancillary data (socket.send_fds builds an array)
_FD_SPACE = socket.CMSG_SPACE(_FD.size)


def receive_with_fd(sock: socket.socket, size: int) -> tuple[bytes, int | None]:
    """A message from an Outbox, and the descriptor passed with it (None: none)."""
    payload, ancillary, _, _ = sock.recvmsg(size, _FD_SPACE)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(data) >= _FD.size:
            return payload, _FD.unpack_from(data)[0]
    return payload, None


class Outbox:
    """Messages for a non-blocking socket, sent in order: what the socket cannot take now waits
    (up to ``limit`` messages) and goes when it drains, instead of being dropped. An item is the
    payload, or (payload, descriptor to pass with it): that descriptor is closed once passed."""

    def __init__(self, sock: socket.socket, loop, limit: int, on_drop) -> None:
        self.sock, self.loop, self.limit, self.on_drop = sock, loop, limit, on_drop
        self.waiting: deque = deque()

    def send(self, payload: bytes, passed: int | None = None) -> None:
        if self.waiting or not self._send(payload, passed):
            if len(self.waiting) >= self.limit:
                self.on_drop(payload, "it is too far behind")
                if passed is not None:
                    os.close(passed)
                return
            if not self.waiting:
                self.loop.set_writer(self.sock.fileno(), self.drain)
            self.waiting.append((payload, passed))

    def drain(self) -> None:
        while self.waiting and self._send(*self.waiting[0]):
            self.waiting.popleft()
        if not self.waiting:
            self.loop.set_writer(self.sock.fileno(), None)

    def _send(self, payload: bytes, passed: int | None) -> bool:
        """True when sent (or lost for good, which on_drop was told); False: try again later."""
        try:
            if passed is None:
                self.sock.send(payload)
            else:
                self.sock.sendmsg((payload,), ((socket.SOL_SOCKET, socket.SCM_RIGHTS, _FD.pack(passed)),))
        except BlockingIOError:
            return False
        except OSError as e:
            self.on_drop(payload, e.strerror)
        if passed is not None:
            os.close(passed)    # the receiver has its own copy now
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
