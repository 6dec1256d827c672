"""Recorded edits ("lumps") and the one-pass serializer that applies them.

Rules:
- untouched header lines are copied byte-for-byte; with no per-line edit the whole received
  header block is copied as one slice;
- added lines go above the first header (``top``, newest first) or below the last (``bottom``);
- Via value edits (removing top values, received/rport) rewrite only the lines they touch;
- Content-Length is rewritten only if the body changed, and added if it was missing (streams
  need it); a message with no edit and a Content-Length serializes to ``raw`` itself.
"""

from __future__ import annotations

import re

from . import accel, grammar
from .errors import LocalSIPError, RemoteSIPError
from .headers import canonical, split_list
from .via import Via, parse_via

__all__ = ["Edits", "header_line", "serialize", "via_lines"]

# The functions below take a Message (message.py, which builds on this module, not the reverse).


class Edits:
    """The edits recorded on one message."""

    __slots__ = ("top", "bottom", "drop", "subst", "via_pop", "via_params", "body_changed",
                 "ruri_changed")

    def __init__(self) -> None:
        self.top: list[tuple[str, bytes]] = []     # (canonical name, line), top-most first
        self.bottom: list[tuple[str, bytes]] = []  # (canonical name, line), in order
        self.drop: set[int] = set()                # indices of received lines removed
        self.subst: dict[int, bytes] = {}          # index of a received line -> its replacement
        self.via_pop = 0                           # received Via values removed from the top
        self.via_params: tuple[str | None, int | None] | None = None  # (received, rport)
        self.body_changed = False
        self.ruri_changed = False

    def copy(self) -> Edits:
        new = Edits()
        new.top, new.bottom, new.drop, new.subst = list(self.top), list(self.bottom), set(self.drop), dict(self.subst)
        new.via_pop, new.via_params = self.via_pop, self.via_params
        new.body_changed, new.ruri_changed = self.body_changed, self.ruri_changed
        return new


_NO_EDITS = Edits()


_GOOD_NAMES: set[str] = set()      # names header_line() has checked (the script's, a few dozen)


def header_line(name: str, value: str) -> tuple[str, bytes]:
    """(canonical name, b"Name: value") for a header our own code adds."""
    if name not in _GOOD_NAMES:
        if not grammar.TOKEN.fullmatch(name):
            raise LocalSIPError(f"bad header name {name!r}")
        if len(_GOOD_NAMES) < 1024:
            _GOOD_NAMES.add(name)
    if "\r" in value or "\n" in value:
        raise LocalSIPError(f"header value with CR/LF for {name}: {value[:40]!r}")
    key = canonical(name)
    if key == "content-length":
        raise LocalSIPError("Content-Length is managed by serialize(); use set_body()")
    return key, f"{name}: {value}".encode("utf-8", "surrogateescape")


def serialize(msg, top: bytes | None = None) -> bytes:
    """``top``: one more header line, above all others (our Via on a request forwarded statelessly)."""
    if accel.serialized is not None:
        data = accel.serialized(msg, top)     # the common edits of a forward, in C; else None
        if data is not None:
            return data
    edits = msg._edits
    cl = msg._cl
    if edits is None:
        if cl is not None and top is None:
            return msg.raw
        edits = _NO_EDITS
    parts = [msg._start_line() if edits.ruri_changed else msg._start]     # (set_ruri(): Request's)
    if top is not None:
        parts.append(top)
    if edits.top:
        parts += [line for _, line in edits.top]
    body_changed = edits.body_changed
    if msg._lines:
        drop = edits.drop
        if not (drop or edits.subst or edits.via_pop or edits.via_params or (body_changed and cl is not None)):
            parts.append(msg.raw[msg._hstart:msg._hend])
        else:
            if body_changed and cl is not None:     # its new one is written below
                drop = drop | {msg._names.index("content-length")}
            block = None if accel.edited_block is None else \
                accel.edited_block(msg._lines, msg._names, edits.subst, drop, edits.via_pop, edits.via_params)
            if block is None:           # not the common case (or no accelerator)
                parts += _edited_lines(msg, edits, drop)
            elif block:
                parts.append(block)
    if edits.bottom:
        parts += [line for _, line in edits.bottom]
    if body_changed or cl is None:
        parts.append(b"Content-Length: %d" % len(msg.body))
    parts += (b"", msg.body)            # the empty line, then the body: one join, one copy
    return b"\r\n".join(parts)


def _edited_lines(msg, edits: Edits, drop):
    # Precedence: a removed line stays removed; a replaced line beats a Via value rewrite.
    out: list[bytes | None] = list(msg._lines)
    if edits.via_pop or edits.via_params:
        for i, line in via_lines(msg, edits.via_pop, edits.via_params, edits.drop).items():
            out[i] = line
    for i, line in edits.subst.items():
        out[i] = line
    for i in drop:
        out[i] = None
    return filter(None, out)        # (via_lines() drops a line whose values all went, too)


def via_lines(msg, pop: int, params: tuple | None, drop) -> dict[int, bytes | None]:
    """Rewritten received Via lines: index -> new line, or None to drop the line.

    Received Via values are numbered from the top across lines ("Via: a, b" holds two): values
    numbered below ``pop`` are removed; value 0 gets ``params`` = (received, rport).
    """
    out: dict[int, bytes | None] = {}
    if not pop and not params:
        return out
    position = 0
    for i in msg._indices("via"):
        if i in drop:
            continue
        value = msg._value(i)
        if position == 0 and "," not in value:     # the common cases: the top line holds one value
            if pop == 1 and not params:
                out[i] = None
                break
            if not pop:
                out[i] = _wire_name(msg._lines[i]) + b": " + _with_params(value, params).encode(
                    "utf-8", "surrogateescape")
                break
        values = split_list(value)
        kept = []
        for value in values:
            if position == 0 and params:
                value = _with_params(value, params)
            if position >= pop:
                kept.append(value)
            position += 1
        if kept != values:
            out[i] = _wire_name(msg._lines[i]) + b": " + ", ".join(kept).encode("utf-8", "surrogateescape") \
                if kept else None
        if position >= pop and position > 0:
            break
    return out


# A Via parameter of that name, with its value if it has one (no quoted string in the value).
_RECEIVED = re.compile(r";[ \t]*received[ \t]*(?:=[^;]*)?(?=;|$)", re.IGNORECASE)
_RPORT = re.compile(r";[ \t]*rport[ \t]*(?:=[^;]*)?(?=;|$)", re.IGNORECASE)


def _wire_name(line: bytes) -> bytes:
    return line[:line.find(b":")].rstrip(b" \t")


def _with_params(value: str, params: tuple[str | None, int | None]) -> str:
    received, rport = params
    if '"' not in value:
        # The hot path (every forwarded request with rport): the value was parsed already when
        # the edit was recorded, so a textual rewrite of its parameters is enough: each replaced
        # where it stands, else added at the end.
        # (the replacement is a function: a string would be read as a template, its "\\" too)
        for pattern, name, given in ((_RECEIVED, "received", received), (_RPORT, "rport", rport)):
            if given is not None:
                param = f";{name}={given}"
                value, found = pattern.subn(lambda _: param, value, 1)
                if not found:
                    value += param
        return value
    try:
        via = parse_via(value)
    except RemoteSIPError as exc:
        raise LocalSIPError(f"cannot set received/rport on a bad Via: {exc.reason}") from None
    new = dict(via.params)
    if received is not None:
        new["received"] = received
    if rport is not None:
        new["rport"] = str(rport)
    return str(Via(via.protocol, via.transport, via.host, via.port, new))
