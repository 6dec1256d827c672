"""Framing and the first parsing step: bytes -> Request / Response (sans-IO).

parse_message() takes one datagram, StreamParser one TCP/TLS byte stream. Both only split the
start line and the header lines (unfolding nothing yet), index canonical header names and frame
the body with Content-Length; header values are parsed later, when read (message.py).

Strictness, decided once for both paths:
- lines end in CRLF; a bare CR or LF in the start line or a header line is an error;
- the header section must end with an empty line. A datagram without one (RFC 4475 baddn.dat
  ends right after its last header) is rejected with 400, just as a stream would keep waiting;
- more than one Content-Length header is an error (RFC 4475 mcl01), as is a non-numeric one.
"""

from __future__ import annotations

import enum
import re

from . import accel, grammar
from .errors import MessageTooLarge, RemoteSIPError
from .headers import _by_bytes, has_bare_cr_or_lf, index_head, show, unfold
from .message import Message, Request, Response
from .serialize import Edits
from .via import Via

__all__ = ["parse_message", "StreamParser", "KeepAlive"]

if accel.use_types is not None:
    accel.use_types(Request, Response, Via, Edits)  # what head_message() builds, serialized() reads


class KeepAlive(enum.Enum):
    """CRLF keep-alives on a stream (RFC 5626 3.5.1)."""

    PING = "ping"  # CRLF CRLF: the peer wants a pong
    PONG = "pong"  # a single CRLF: the answer to our ping


def parse_head(data: bytes, head_end: int) -> Message:
    """Build a Request/Response from data[:head_end] (start line + headers, no final CRLFCRLF).

    ``raw`` and ``body`` are left for the caller, which knows how the body is framed.
    """
    head = data[:head_end]
    if accel.head_message is not None:
        # A plain head, split and built in C: what the lines below make of it, with what C
        # found well-formed (the top and second Via, CSeq, Max-Forwards, a good Call-ID) in
        # the message's cache; the rest is parsed when read. Else the Python path judges it.
        msg = accel.head_message(head, _by_bytes)
        if msg is not None:
            return msg
    lines = head.split(b"\r\n")
    if has_bare_cr_or_lf(lines):
        raise RemoteSIPError("bare CR or LF in the header section")
    start = lines[0]
    hstart = len(start) + 2  # raw[hstart:head_end] is the header block (empty if no headers)
    names, lines = index_head(head, lines)
    cl = _content_length(names, lines)
    if start[:4] == b"SIP/":
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
        version, _, rest = start.partition(b" ")
        code, sp, reason = rest.partition(b" ")
        if not sp or len(code) != 3 or not code.isdigit():
            raise RemoteSIPError(f"bad status line {show(start)}")
        return Response(start, names, lines, hstart, head_end, cl,
                        "SIP/2.0" if version == b"SIP/2.0" else _version(version, start),
                        int(code), reason.decode("utf-8", "surrogateescape"))
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF: exactly one SP between elements
    # and none trailing (RFC 4475 lwsstart, trws, lwsruri: we take the strict side).
    parts = start.split(b" ")
    if len(parts) != 3 or not (parts[0] and parts[1] and parts[2]):
        raise RemoteSIPError(f"bad request line {show(start)}")
    method, ruri, version = parts
    return Request(start, names, lines, hstart, head_end, cl,
                   "SIP/2.0" if version == b"SIP/2.0" else _version(version, start),
                   method.decode("utf-8", "surrogateescape"), ruri.decode("utf-8", "surrogateescape"))


def _version(version: bytes, start: bytes) -> str:
    # Any SIP-Version parses; validate() answers 505 unless it is SIP/2.0 (RFC 4475 badvers).
    if not grammar.SIP_VERSION_BYTES.fullmatch(version):
        raise RemoteSIPError(f"bad SIP version in start line {show(start)}")
    return version.decode("ascii")


def _content_length(names: list[str], lines: list[bytes]) -> int | None:
    count = names.count("content-length")
    if count != 1:
        if count:
            raise RemoteSIPError("more than one Content-Length header")
        return None
    line = lines[names.index("content-length")]
    value = line[line.find(b":") + 1:]
    if value.find(b"\r\n") >= 0:
        value = unfold(value)
    value = value.strip(b" \t")
    if not value.isdigit():
        raise RemoteSIPError(f"bad Content-Length header {show(value)}")
    # Above 9 digits no message can match it; keep the int small instead of converting it.
    return int(value) if len(value) <= 9 else 10**9


def parse_message(data: bytes, max_size: int = 65536) -> Request | Response:
    """Parse one datagram (UDP semantics, see the module comment)."""
    if accel.datagram_message is not None:
        msg = accel.datagram_message(data, _by_bytes, max_size)
        if msg is not None:         # the plain common case, all done in C; else judged below
            return msg
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > max_size:
        raise MessageTooLarge(f"message of {len(data)} octets is larger than {max_size}")
    if data[:2] == b"\r\n":
        # RFC 3261 7.5 asks this of streams; for a datagram it is harmless and saves a 400.
        skip = 0
        while data.startswith(b"\r\n", skip):
            skip += 2
        data = data[skip:]
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        raise RemoteSIPError("no empty line ending the header section" if data else "empty message")
    msg = parse_head(data, head_end)
    body_start = head_end + 4
    size = len(data)
    if msg._cl is None:
        end = size  # RFC 3261 18.3: over UDP the body then runs to the end of the datagram
    else:
        end = body_start + msg._cl
        if end > size:
            raise RemoteSIPError(f"Content-Length {msg._cl} is larger than the {size - body_start}"
                                 " octets of body received")
    # Octets after Content-Length are ignored, never forwarded (RFC 4475 3.1.1.8 dblreq).
    msg.raw = data if end == size else data[:end]
    msg.body = data[body_start:end]
    return msg


# Content-Length = ( "Content-Length" / "l" ) HCOLON 1*DIGIT -- any value, as a whole line
_CONTENT_LENGTH_LINE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*(?=\r\n)",
                                  re.IGNORECASE)    # with its folded continuation lines


def parse_without_content_length(data: bytes) -> Request | Response:
    """Parse what a datagram holds, ignoring its Content-Length lines (the body is the rest of
    the data, its size unlimited): to answer a request whose framing is broken (RFC 4475 ncl,
    mcl01), or to take back a message whose text was rewritten. Serializing it writes a fresh
    Content-Length."""
    end = data.find(b"\r\n\r\n") + 2
    if end < 2:
        raise RemoteSIPError("no empty line ending the header section")
    return parse_message(_CONTENT_LENGTH_LINE.sub(b"", data[:end]) + data[end:], len(data) + 1)


class StreamParser:
    """Frames the messages of one TCP/TLS connection; feed() bytes, then drain next_event().

    next_event() returns a Request/Response, a KeepAlive, or None when more data is needed. A
    lone CRLF is reported as PONG as soon as it is buffered (RFC 5626 peers send the 4-octet
    ping in one write; waiting for more data would hide a pong until the next message). After a
    RemoteSIPError the stream is dead: every later call raises it again; close the connection.
    """

    def __init__(self, max_size: int = 65536) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._scan = 0       # where to resume looking for the end of the header section
        self._pending = None  # (message, head bytes, total size) once the head is parsed
        self._error: RemoteSIPError | None = None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_event(self) -> Request | Response | KeepAlive | None:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteSIPError as exc:
            self._error = exc
            self._buf = bytearray()
            raise

    def _next(self):
        buf = self._buf
        if self._pending is None:
            if not buf:
                return None
            if buf[0] == 13:
                return self._keepalive(buf)
            if accel.stream_message is not None:
                msg = accel.stream_message(buf, _by_bytes, self._max)
                if msg is not None:         # a whole message of the plain common case, in C
                    del buf[:len(msg.raw)]
                    self._scan = 0
                    return msg
            head_end = buf.find(b"\r\n\r\n", self._scan)
            if head_end < 0:
                if len(buf) > self._max:
                    raise MessageTooLarge(f"header section larger than {self._max} octets")
                self._scan = max(0, len(buf) - 3)
                return None
            if head_end + 4 > self._max:
                raise MessageTooLarge(f"header section larger than {self._max} octets")
            head = bytes(buf[:head_end + 4])
            msg = parse_head(head, head_end)
            if msg._cl is None:
                raise RemoteSIPError("no Content-Length header: it is mandatory on streams")
            total = head_end + 4 + msg._cl
            if total > self._max:
                raise MessageTooLarge(f"message of {total} octets is larger than {self._max}", msg)
            self._pending = (msg, head, total)
        msg, head, total = self._pending
        if len(buf) < total:
            return None
        msg.raw = head + bytes(buf[len(head):total]) if total > len(head) else head
        msg.body = msg.raw[len(head):]
        del buf[:total]
        self._pending = None
        self._scan = 0
        return msg

    @staticmethod
    def _keepalive(buf: bytearray) -> KeepAlive | None:
        if len(buf) < 2:
            return None
        if buf[1] != 10:
            raise RemoteSIPError("bare CR between messages")
        if len(buf) >= 4 and buf[2] == 13 and buf[3] == 10:
            del buf[:4]
            return KeepAlive.PING
        if len(buf) == 3 and buf[2] == 13:
            return None  # the first three octets of a ping, most likely
        del buf[:2]
        return KeepAlive.PONG
