"""Header names and header-value lists: the one compact-form table, canonical names, splitting.

A canonical header name is the lowercase long form ("v" and "VIA" are both "via"). Names are
canonicalised through two small caches, one keyed by the raw octets of a received header name
(hot path: one dict lookup per header line) and one keyed by the str a caller asks for. The caches
learn names they have not seen, up to a bound, so hostile traffic cannot grow them forever.
"""

from __future__ import annotations

import re

from . import grammar
from .errors import RemoteSIPError

# RFC 3261 7.3.3 and the later RFCs that registered compact forms (3265, 3515, 3841, 3892, 4028,
# 4474). Compact letters are case-insensitive like all header names.
COMPACT: dict[str, str] = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "x": "session-expires",
    "b": "referred-by",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose values are comma-separated lists (RFC 3261 7.3.1: "Multiple header field rows
# with the same field-name MAY be present ... if the entire field-value for that header field is
# defined to be a comma-separated list"). header_values() splits only these.
MULTI_VALUE = frozenset(
    """via contact route record-route path service-route allow supported require proxy-require
    unsupported accept accept-encoding accept-language allow-events content-encoding
    content-language in-reply-to warning error-info call-info alert-info accept-contact
    reject-contact request-disposition p-associated-uri security-client security-server
    security-verify reason""".split()
)

# Spellings used when pyproxy writes a header it names itself.
WIRE_NAMES: dict[str, str] = {
    "via": "Via",
    "record-route": "Record-Route",
    "content-length": "Content-Length",
    "call-id": "Call-ID",
    "cseq": "CSeq",
}

_COMMON = """via from to call-id cseq contact max-forwards content-length content-type route
record-route allow supported require proxy-require unsupported user-agent server subject expires
min-expires accept accept-encoding accept-language authorization proxy-authorization
www-authenticate proxy-authenticate date timestamp organization priority retry-after event
allow-events subscription-state refer-to referred-by session-expires min-se path service-route
p-asserted-identity privacy reason warning content-disposition content-encoding mime-version
rseq rack identity identity-info""".split()

_CACHE_LIMIT = 4096
_by_bytes: dict[bytes, str] = {}
_by_str: dict[str, str] = {}


def _seed() -> None:
    for name in _COMMON:
        title = "-".join(part.capitalize() for part in name.split("-"))
        for spelling in {name, name.upper(), title, WIRE_NAMES.get(name, title)}:
            _by_str[spelling] = name
            _by_bytes[spelling.encode()] = name
    for letter, name in COMPACT.items():
        for spelling in (letter, letter.upper()):
            _by_str[spelling] = name
            _by_bytes[spelling.encode()] = name


_seed()


def canonical(name: str) -> str:
    """The canonical (lowercase long form) of a header name given by our own code."""
    key = _by_str.get(name)
    if key is None:
        key = name.strip().lower()
        key = COMPACT.get(key, key)
        if len(_by_str) < _CACHE_LIMIT:
            _by_str[name] = key
    return key


def canonical_wire(raw: bytes) -> str:
    """The canonical name for the raw octets before the ":" of a received header line.

    HCOLON = *( SP / HTAB ) ":" SWS, so trailing whitespace belongs to the separator.
    """
    key = _by_bytes.get(raw)
    if key is not None:
        return key
    name = raw.rstrip(b" \t")
    if not grammar.HEADER_NAME_BYTES.fullmatch(name):
        raise RemoteSIPError(f"bad header name {name[:40]!r}")
    key = name.decode("ascii").lower()
    key = COMPACT.get(key, key)
    if len(_by_bytes) < _CACHE_LIMIT:
        _by_bytes[raw] = key
    return key


def unfold(value: bytes) -> bytes:
    """Replace every fold (CRLF + whitespace) with one SP."""
    if value.find(b"\r\n") >= 0:    # faster than "in", which first tries the operand as an int
        return grammar.FOLD.sub(b" ", value)
    return value


def split_list(value: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside quoted strings and outside <...>; pieces are stripped.

    Empty pieces are kept: whether "a,,b" is acceptable is the caller's call.
    """
    if sep not in value:        # one piece, whatever quotes and brackets it holds
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [piece.strip() for piece in value.split(sep)]
    pieces: list[str] = []
    start = 0
    quoted = angle = False
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<" and sep == ",":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == sep and not angle:
            pieces.append(value[start:i].strip())
            start = i + 1
        i += 1
    pieces.append(value[start:].strip())
    return pieces


def split_header_lines(block: bytes) -> tuple[list[str], list[bytes]]:
    """Canonical names and raw lines of a header block (lines joined by CRLF, no final CRLF)."""
    lines = block.split(b"\r\n")
    if has_bare_cr_or_lf(lines):
        raise RemoteSIPError("bare CR or LF in the header section")
    return index_lines(lines)


def has_bare_cr_or_lf(lines: list[bytes]) -> bool:
    """Whether a CR or LF is left in lines split on CRLF. (Joined, two memchr() scans: counting
    CRs and LFs in the head went byte by byte, at several times the cost.)"""
    joined = b"".join(lines)
    return joined.find(b"\r") >= 0 or joined.find(b"\n") >= 0


_LINE_NAME = re.compile(rb"\r\n([^:\r\n]*):")     # the octets before the ":" of each header line


def index_head(head: bytes, lines: list[bytes]) -> tuple[list[str], list[bytes]]:
    """index_lines() for a received head: ``lines`` is head.split(CRLF), start line first.

    The hot path finds every header name in one regex pass over the head. It holds when each
    line has a ":" and a cached name: a folded line starts with SP/HT and such a "name" is never
    cached, so folding, unknown names and garbage all take the careful loop of index_lines().
    """
    try:
        names = list(map(_by_bytes.__getitem__, _LINE_NAME.findall(head)))
    except KeyError:
        return index_lines(lines[1:])
    if len(names) == len(lines) - 1:
        return names, lines[1:]
    return index_lines(lines[1:])


def index_lines(raw_lines: list[bytes]) -> tuple[list[str], list[bytes]]:
    """Canonical names of split header lines, and the lines with folded ones joined.

    A line starting with SP or HTAB continues the previous one (LWS folding, RFC 3261 7.3.1); it
    is kept inside that header's raw line, CRLF included, so forwarding stays byte-exact.
    """
    names: list[str] = []
    lines: list[bytes] = []
    for line in raw_lines:
        first = line[:1]
        if first == b" " or first == b"\t":
            if not lines:
                raise RemoteSIPError("continuation line before the first header")
            lines[-1] += b"\r\n" + line
            continue
        colon = line.find(b":")
        if colon <= 0:
            raise RemoteSIPError(f"header line without a name and ':' {show(line)}")
        names.append(canonical_wire(line[:colon]))
        lines.append(line)
    return names, lines


def show(data: bytes) -> str:
    """A short printable excerpt of received octets, for error reasons."""
    return repr(data[:60].decode("utf-8", "backslashreplace"))
