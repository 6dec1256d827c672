"""make_response(): a stateless reply built from a request (RFC 3261 8.2.6.2)."""

from __future__ import annotations

from . import accel, grammar
from .errors import LocalSIPError, RemoteSIPError
from .message import Request
from .serialize import header_line, via_lines

__all__ = ["make_response"]


def make_response(request: Request, status: int, reason: str, *, to_tag: str | None = None,
                  headers=(), body: bytes = b"") -> bytes:
    """The bytes of a response to ``request``.

    "the From field of the response MUST equal the From header field of the request. The Call-ID
    ... MUST equal the Call-ID ... The CSeq ... MUST equal the CSeq field ... The Via header field
    values in the response MUST equal the Via header field values in the request and MUST
    maintain the same ordering" (8.2.6.2). So those lines are copied as received, folded Vias and
    all, with the received/rport edit the caller recorded (set_top_via_params); Vias added for
    forwarding are not included. To gets ;tag=to_tag if it has no tag yet.
    """
    if not 100 <= status <= 699:
        raise LocalSIPError(f"bad status code {status}")
    if "\r" in reason or "\n" in reason:
        raise LocalSIPError(f"bad reason phrase {reason[:40]!r}")
    if to_tag is not None and not (to_tag.isascii() and to_tag.isalnum()) and not grammar.TOKEN.fullmatch(to_tag):
        raise LocalSIPError(f"bad to-tag {to_tag!r}")
    edits = request._edits
    params = edits.via_params if edits is not None else None
    names, lines = request._names, request._lines
    status_line = f"SIP/2.0 {status} {reason}".encode("utf-8", "surrogateescape")
    tag = to_tag.encode("ascii") if to_tag is not None and _lacks_tag(request) else None
    head = accel.response_head(status_line, names, lines, params, tag) if accel.response_head else None
    if head is not None:
        out = [head]
    else:
        out = [status_line]
        vias = request._indices("via")
        rewritten = via_lines(request, 0, params, ()) if params else {}
        out += [rewritten.get(i, lines[i]) for i in vias]
        for key in ("from", "to", "call-id", "cseq"):
            if key in names:
                line = lines[names.index(key)]
                if key == "to" and tag is not None:
                    line = line.rstrip(b" \t") + b";tag=" + tag
                out.append(line)
    out += [header_line(name, value)[1] for name, value in headers]
    out.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(out) + b"\r\n\r\n" + bytes(body)


def _lacks_tag(request: Request) -> bool:
    try:
        return request.to.tag is None
    except RemoteSIPError:
        return False  # a To we cannot parse is copied as it is (a 400 for it, most likely)
