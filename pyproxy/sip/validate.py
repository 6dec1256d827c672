"""Message.validate(): the checks a proxy makes before routing a message (RFC 3261 16.3).

Each check raises RemoteSIPError with the status to answer: 505 for a SIP version other than
SIP/2.0, 501 for an unknown method whose CSeq names another method (RFC 4475 mismatch02), 400
otherwise. Where RFC 4475 lets an element be liberal (trws, lwsstart, escruri, baddate, quotbal,
regbadct, badaspec...), we reject: simple and consistent.
"""

from __future__ import annotations

from . import grammar
from .address import STAR
from .errors import RemoteSIPError

__all__ = ["validate", "check_head", "KNOWN_METHODS"]

KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE"
    .split())

# RFC 3261 8.1.1: "A valid SIP request formulated by a UAC MUST, at a minimum, contain the
# following header fields: To, From, CSeq, Call-ID, Max-Forwards, and Via". Max-Forwards is left
# out: RFC 2543 requests (RFC 4475 inv2543) lack it and must still be accepted.
_REQUIRED = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
_REQUIRED_KEYS = frozenset(_REQUIRED)

# Headers whose grammar allows one value only (RFC 4475 3.3.8 multi01).
_SINGLE = {"call-id": "Call-ID", "from": "From", "to": "To", "cseq": "CSeq",
           "max-forwards": "Max-Forwards", "content-length": "Content-Length",
           "content-type": "Content-Type", "date": "Date", "expires": "Expires"}


def validate(msg, deep: bool = True) -> None:
    """Raise RemoteSIPError (with the status to answer) if ``msg`` is not fit to route.

    ``deep=False`` is the per-message check of a proxy: the start line, the headers every message
    must have, single-value headers, the top Via, Call-ID, CSeq and Max-Forwards -- what routing
    reads. The other headers (From, To, Contact, Route...) are parsed when something reads them,
    as OpenSER did. ``deep=True`` also parses those (a registrar, or the conformance tests).
    """
    if msg.version != "SIP/2.0":
        raise RemoteSIPError(f"unsupported SIP version {msg.version}", 505)
    if msg.is_request:
        _check_request_line(msg)
    if "head-ok" not in msg._cache:     # (the C accelerator's scan found that check_head() passes)
        check_head(msg)
    if not deep:
        return
    msg.vias
    msg.from_
    msg.to
    contacts = msg.contacts
    if STAR in contacts and len(contacts) > 1:
        raise RemoteSIPError("bad Contact header: '*' must be the only value")
    msg.routes
    msg.record_routes
    date = msg.header("date")
    # RFC 3261 20.17: "SIP only supports recent RFC 1123 formats for dates ... must be GMT"
    if date is not None and not grammar.DATE.fullmatch(date):
        raise RemoteSIPError(f"bad Date header {date[:40]!r}: not an RFC 1123 date in GMT")


def check_head(msg) -> None:
    """The checks of the header section routing relies on (and a response's status code)."""
    if not msg.is_request and not 100 <= msg.status <= 699:
        raise RemoteSIPError(f"bad status code {msg.status}")
    names = msg._names
    present = set(names)
    if not _REQUIRED_KEYS <= present:
        missing = next(what for key, what in _REQUIRED.items() if key not in present)
        raise RemoteSIPError(f"missing {missing} header")
    repeats = len(names) - len(present)
    # Some name repeats: is it one that must not? (Usually only Via does: a forwarded response.)
    if repeats and repeats != names.count("via") - 1:
        for key, what in _SINGLE.items():
            if key in present and names.count(key) > 1:
                raise RemoteSIPError(f"more than one {what} header")
    if "call-id-ok" not in msg._cache:      # (the C accelerator's scan checked it already)
        call_id = msg._value(names.index("call-id"))
        if not grammar.CALL_ID.fullmatch(call_id):
            raise RemoteSIPError(f"bad Call-ID header {call_id[:60]!r}")
    method = msg.cseq[1]
    if msg.is_request and method != msg.method:
        # RFC 4475 3.1.2.18: an unknown method with another CSeq method is best answered 501.
        status = 400 if msg.method in KNOWN_METHODS else 501
        raise RemoteSIPError(
            f"bad CSeq header: method {method} does not match request method {msg.method}", status)
    msg.max_forwards        # (each property reads the scan's fact first, where there is one)
    msg.top_via


def _check_request_line(msg) -> None:
    if msg.method not in KNOWN_METHODS and not grammar.METHOD.fullmatch(msg.method):
        raise RemoteSIPError(f"bad method {msg.method[:40]!r}")
    try:
        uri = msg.uri
    except RemoteSIPError as exc:
        raise RemoteSIPError(f"bad Request-URI: {exc.reason}") from None
    # RFC 3261 19.1.1, table 1: the headers component is not allowed in a Request-URI
    # (RFC 4475 3.1.2.11 escruri).
    if uri.scheme in ("sip", "sips") and uri.headers is not None:
        raise RemoteSIPError("bad Request-URI: escaped headers are not allowed in it")

