"""RFC 3261 section 10.3, steps 5 to 8, as pure functions: what a REGISTER asks for, and what the
bindings of its address of record become. No database and no sockets here (store.py keeps the
bindings; the module's save() runs these inside one step of the store).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from ...sip import SIPError
from ...sip.address import STAR
from ..usrloc.store import Binding

MAX_DELTA = 2 ** 32 - 1         # RFC 3261 20.19: delta-seconds from 0 to 2**32-1


class Refused(Exception):
    """The REGISTER fails with this status (and headers, such as Min-Expires for 423)."""

    def __init__(self, status: int, reason: str, headers=()):
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.headers = status, reason, tuple(headers)


@dataclass(frozen=True)
class Limits:
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 0        # 0: no limit
    max_contacts: int = 0       # 0: no limit
    default_q: float = 1.0


class Wanted(NamedTuple):
    """One Contact of the REGISTER: the URI and how long it is to last (0: remove). (Named tuples
    for these two: made once per REGISTER, and a frozen dataclass costs three times as much.)"""
    contact: str
    expires: int
    q: float


class Where(NamedTuple):
    """What every new or refreshed binding records of its REGISTER: Binding's fields of these
    names, in its order (so that a Binding is made with positional arguments: with keywords, it
    cost two and a half times as much)."""
    received: str
    path: str | None
    socket: str
    user_agent: str


assert Binding._fields[5:9] == Where._fields, "Where must follow Binding's fields"


class Register(NamedTuple):
    contacts: tuple[Wanted, ...]        # empty: a query; None: "Contact: *"
    callid: str
    cseq: int


def read_register(msg, limits: Limits) -> Register:
    """The REGISTER's contacts, expiries and q values; Refused for what RFC 3261 rejects."""
    try:
        callid, cseq = msg.call_id, msg.cseq[0]
    except SIPError:
        raise Refused(400, "Bad Call-ID or CSeq") from None
    header = _expires(msg.header("expires"), "Expires")
    try:
        values = msg.contacts
    except SIPError as e:
        raise Refused(400, f"Bad Contact ({e})"[:120]) from None
    if values and values[0] is STAR:
        # 10.3 step 6: "*" only alone and with Expires: 0
        if len(values) > 1 or header != 0:
            raise Refused(400, "Contact * needs Expires: 0 and no other Contact")
        return Register(None, callid, cseq)
    wanted = []
    for value in values:
        if value is STAR:
            raise Refused(400, "Contact * needs Expires: 0 and no other Contact")
        uri = value.uri
        if uri.scheme in ("sip", "sips") and not uri.host:
            raise Refused(400, "Bad Contact URI: no host")
        expires = _expires(value.params.get("expires"), "Contact expires")
        if expires is None:
            expires = header if header is not None else limits.default_expires
        if expires and limits.min_expires and expires < limits.min_expires:
            raise Refused(423, "Interval Too Brief", [("Min-Expires", str(limits.min_expires))])
        if limits.max_expires and expires > limits.max_expires:
            expires = limits.max_expires
        wanted.append(Wanted(str(uri), expires, _q(value.params.get("q"), limits.default_q)))
    return Register(tuple(wanted), callid, cseq)


def _expires(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 10 or int(text) > MAX_DELTA:
        raise Refused(400, f"Bad {what} value")
    return int(text)


def _q(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        q = float(text)
    except ValueError:
        q = -1.0
    if not 0.0 <= q <= 1.0 or len(text) > 5:
        raise Refused(400, "Bad q value")
    return q


def updated(current: list[Binding], req: Register, now: int, limits: Limits, where: Where,
            only_these: bool = False) -> list[Binding] | None:
    """The AOR's bindings after ``req`` (10.3 steps 6-7); None when nothing changes (a query).
    ``where`` holds what every new or refreshed binding records. ``only_these``: the request's
    contacts replace every other binding (save()'s flag 0x04, one device per user)."""
    if req.contacts is None:            # "*": every binding goes, unless the request is stale
        for b in current:
            _check_order(b, req)
        return []
    if not req.contacts:
        return None
    by_contact = {b.contact: b for b in current}
    if only_these:
        by_contact = {c: b for c, b in by_contact.items() if any(w.contact == c for w in req.contacts)}
    for want in req.contacts:
        old = by_contact.get(want.contact)
        if old is not None:
            _check_order(old, req)
        if want.expires == 0:
            by_contact.pop(want.contact, None)
            continue
        by_contact[want.contact] = Binding(want.contact, now + want.expires, want.q, req.callid, req.cseq,
                                           *where, 0, 0, None, now)   # (flags, cflags, methods: none)
    bindings = list(by_contact.values())
    if limits.max_contacts and len(bindings) > limits.max_contacts:
        raise Refused(403, f"Too many registered contacts (at most {limits.max_contacts})")
    return bindings


def _check_order(binding: Binding, req: Register) -> None:
    """10.3 step 6: the same Call-ID with a CSeq not higher than the binding's: aborted."""
    if binding.callid == req.callid and req.cseq <= binding.cseq:
        raise Refused(400, "Invalid CSeq number")


_q_of = attrgetter("q")


def contact_headers(bindings: list[Binding], now: int) -> list[tuple[str, str]]:
    """The 200 OK's Contact: every binding with what is left of its expiry (10.3 step 8), highest
    q first, in one header line with the values comma-separated (RFC 3261 7.3.1), as OpenSER's
    registrar wrote it (a line each took its own checks and encoding)."""
    if not bindings:
        return []
    if len(bindings) > 1:
        bindings = sorted(bindings, key=_q_of, reverse=True)     # (stable: equal q in saved order)
    values = []
    for b in bindings:
        q = "" if b.q == 1.0 else f";q={b.q:.3g}"
        values.append(f"<{b.contact}>;expires={max(0, b.expires - now)}{q}")
    return [("Contact", ", ".join(values))]
