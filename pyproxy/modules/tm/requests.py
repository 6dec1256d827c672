"""The requests a transaction makes itself from the one it sent: CANCEL (RFC 3261 9.1) and the
ACK of a non-2xx final response (17.1.1.3). Both are built from the bytes of the branch request,
so they carry exactly its Request-URI, top Via, From, Call-ID, CSeq number and Route set."""

from __future__ import annotations

from ...sip import parse_message

_KEPT = ("via", "from", "call-id", "route")


def cancel_for(request: bytes) -> bytes:
    """9.1: "The Request-URI, Call-ID, To, the numeric part of CSeq, and From header fields in the
    CANCEL request MUST be identical to those in the request being cancelled, including tags. A
    CANCEL constructed by a client MUST have only a single Via header field value matching the
    top Via value in the request being cancelled." Route: the same as the request's."""
    return _build(request, "CANCEL", None)


def ack_for(request: bytes, response) -> bytes:
    """17.1.1.3: the ACK has the INVITE's Request-URI, Call-ID, From, CSeq number, top Via and
    Route; its To is the response's (with the tag the UAS added)."""
    return _build(request, "ACK", response)


def _build(data: bytes, method: str, response) -> bytes:
    msg = parse_message(data)
    names, lines = msg._names, msg._lines
    out = [f"{method} {msg.ruri} SIP/2.0".encode("utf-8", "surrogateescape")]
    first_via = True
    for name, line in zip(names, lines):
        if name == "via":
            if first_via:           # ours, alone on its line
                out.append(line)
                first_via = False
        elif name == "to":
            out.append(line if response is None else response._lines[response._names.index("to")])
        elif name in _KEPT:
            out.append(line)
    out.append(f"CSeq: {msg.cseq[0]} {method}".encode())
    out.append(b"Max-Forwards: 70")
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"
