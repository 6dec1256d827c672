"""name-addr / addr-spec values (From, To, Contact, Route, Record-Route...), RFC 3261 20.10.

"When the header field value contains a display name, the URI including all URI parameters is
enclosed in "<" and ">". If no "<" and ">" are present, all parameters after the URI are header
parameters, not URI parameters." parse_name_addr() implements exactly that, strictly: spaces
inside <...>, an unterminated quoted string, or an addr-spec holding "?" or "," are errors.
"""

from __future__ import annotations

import enum

from . import accel, grammar
from .errors import RemoteSIPError
from .params import format_params, parse_generic_params
from .uri import URI, parse_uri

__all__ = ["NameAddr", "parse_name_addr", "Wildcard", "STAR"]


class Wildcard(enum.Enum):
    """The value of "Contact: *" (RFC 3261 10.2.2: remove all bindings)."""

    STAR = "*"

    def __str__(self) -> str:
        return "*"


STAR = Wildcard.STAR


class NameAddr:
    """display (unquoted, quoted-pairs undone, or None), uri (URI), params (header params)."""

    __slots__ = ("display", "uri", "params")

    def __init__(self, display: str | None, uri: URI, params: dict[str, str | None] | None = None):
        self.display = display
        self.uri = uri
        self.params = {} if params is None else params

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        text = f"<{self.uri}>{format_params(self.params)}"
        if self.display is None:
            return text
        escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" {text}'

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"


def parse_name_addr(text: str) -> NameAddr:
    """( name-addr / addr-spec ) *( SEMI generic-param ); RemoteSIPError(400) on garbage."""
    if accel.name_addr_parts is not None:
        parts = accel.name_addr_parts(text)     # the common case, in C
        if parts is not None:
            display, scheme, uri_text, user, host, port, uri_params, params = parts
            return NameAddr(display, URI(scheme, user, None, host, port, uri_params, None, None, uri_text), params)
    s = text.strip()
    display = None
    if s[:1] == '"':
        # name-addr = [ display-name ] LAQUOT addr-spec RAQUOT ; display-name = quoted-string
        match = grammar.QUOTED_STRING.match(s)
        if match is None:
            raise RemoteSIPError(f"unbalanced or bad quoted display name in {s[:80]!r}")
        display = grammar.QUOTED_PAIR.sub(r"\1", match.group()[1:-1])
        rest = s[match.end():].lstrip()
        if rest[:1] != "<":
            raise RemoteSIPError(f"no <URI> after the display name in {s[:80]!r}")
    else:
        lt = s.find("<")
        if lt < 0:
            return _parse_addr_spec(s)
        # display-name = *(token LWS): unquoted display names are tokens only (RFC 4475 baddn)
        tokens = s[:lt].rstrip()
        if tokens:
            if not grammar.DISPLAY_TOKENS.fullmatch(tokens):
                raise RemoteSIPError(f"display name must be tokens or quoted in {s[:80]!r}")
            display = tokens
        rest = s[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise RemoteSIPError(f"no closing > in {s[:80]!r}")
    uri = parse_uri(rest[1:gt])
    return NameAddr(display, uri, parse_generic_params(rest[gt + 1:], "address parameters"))


def _parse_addr_spec(s: str) -> NameAddr:
    # The URI of an addr-spec ends at the first ";". RFC 3261 20.10: a URI containing a comma,
    # question mark or semicolon must be enclosed in <>, so "?" or "," here is malformed
    # (RFC 4475 3.1.2.13 regbadct).
    uri_text, semi, params = s.partition(";")
    uri_text = uri_text.rstrip()
    if "?" in uri_text or "," in uri_text:
        raise RemoteSIPError(f"URI with '?' or ',' must be enclosed in <>: {s[:80]!r}")
    uri = parse_uri(uri_text)
    return NameAddr(None, uri, parse_generic_params(semi + params, "address parameters"))
