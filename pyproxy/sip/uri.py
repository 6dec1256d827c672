"""URIs: SIP/SIPS (RFC 3261 19.1), tel (RFC 3966) and any other scheme as an opaque string.

parse_uri() checks the text against the RFC 3261 grammar (grammar.py) and raises
RemoteSIPError(400) on garbage. Components keep their wire spelling: the user part stays escaped
("%40" is not turned into "@"), an IPv6 host keeps its brackets. str(uri) gives back the exact
text of a parsed URI; URI.replace() makes a changed copy whose text is rebuilt from components.
"""

from __future__ import annotations

import ipaddress

from . import accel, grammar
from .errors import RemoteSIPError

__all__ = ["URI", "parse_uri", "is_ipv4", "is_ipv6_reference", "check_host"]


class URI:
    """A parsed URI. Treat it as read-only; use replace() to change it.

    - scheme: lowercased ("sip", "sips", "tel", or any other scheme)
    - user, password: str or None (sip/sips); for tel the number goes in ``user``
    - host: str ("" for tel and opaque URIs); port: int or None
    - params: dict of lowercased name -> value (None for a flag such as ";lr")
    - headers: the text after "?" or None
    - opaque: for schemes other than sip/sips/tel, everything after "scheme:"; else None
    """

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "opaque", "_text")

    def __init__(self, scheme: str, user: str | None = None, password: str | None = None,
                 host: str = "", port: int | None = None, params: dict[str, str | None] | None = None,
                 headers: str | None = None, opaque: str | None = None, _text: str | None = None):
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = headers
        self.opaque = opaque
        self._text = _text

    @property
    def transport(self) -> str:
        """The transport param, lowercased, else the default: "tls" for sips, "udp" otherwise."""
        value = self.params.get("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def replace(self, **changes) -> URI:
        """A copy with the given components changed (user=, host=, port=, params=, ...)."""
        fields = {name: getattr(self, name) for name in self.__slots__[:-1]}
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise TypeError(f"URI has no component {sorted(unknown)}")
        fields.update(changes)
        fields["params"] = dict(fields["params"])
        return URI(**fields)

    def rehosted(self, **changes) -> URI:
        """replace() of the host (and more): without the maddr of the old host, which would still
        decide where the request goes (RFC 3261 19.1.1) and so undo the change."""
        params = {name: value for name, value in self.params.items() if name != "maddr"}
        return self.replace(params=params, **changes)

    def __str__(self) -> str:
        if self._text is None:
            self._text = self._build()
        return self._text

    def _build(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(self.user or "")
        else:
            if self.user is not None:
                parts.append(self.user)
                if self.password is not None:
                    parts += [":", self.password]
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers is not None:
            parts += ["?", self.headers]
        return "".join(parts)

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"


def host_port(host: str, port: int) -> str:
    """host:port as a URI writes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ipv4(host: str) -> bool:
    """True for a dotted-quad IPv4 address (each octet 0..255)."""
    return grammar.IPV4.fullmatch(host) is not None


def is_ipv6_reference(host: str) -> bool:
    """True for "[IPv6address]".

    Accepts RFC 3261's own IPv6address rule (which lets "2001:db8:::192.0.2.1" through, tolerated
    per RFC 5118 4.10) and anything the stdlib accepts (the correct "2001:db8::192.0.2.1").
    """
    if not grammar.IPV6_REFERENCE_CHARS.fullmatch(host):
        return False
    address = host[1:-1]
    if grammar.IPV6_RFC3261.fullmatch(address):
        return True
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def check_host(host: str) -> bool:
    """host = hostname / IPv4address / IPv6reference."""
    if host[:1] == "[":
        return is_ipv6_reference(host)
    return grammar.HOSTNAME.fullmatch(host) is not None


def parse_port(text: str, what: str) -> int:
    if not grammar.PORT.fullmatch(text) or int(text) > 65535:
        raise RemoteSIPError(f"bad port {text[:20]!r} in {what}")
    return int(text)


_parsed: dict[str, URI] = {}      # text -> URI, for texts that come again (a call's R-URIs, Contacts)
_PARSED_LIMIT = 4096


def parse_uri(text: str) -> URI:
    """Parse a URI; RemoteSIPError(400) if it is not one. URIs are read-only (see URI), so the
    same text gives the same object: most Request-URIs a proxy sees, it has seen before."""
    uri = _parsed.get(text)
    if uri is None:
        uri = _parse_uri(text)
        if len(_parsed) >= _PARSED_LIMIT:
            _parsed.clear()
        _parsed[text] = uri
    return uri


def _parse_uri(text: str) -> URI:
    colon = text.find(":")
    scheme = text[:colon].lower()
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(text, scheme, text[colon + 1:])
    if colon <= 0 or not grammar.SCHEME.fullmatch(scheme):
        raise RemoteSIPError(f"bad URI {text[:80]!r}: no scheme")
    rest = text[colon + 1:]
    if scheme == "tel":
        return _parse_tel(text, rest)
    if not grammar.ABS_URI_REST.fullmatch(rest) or ("%" in rest and grammar.BAD_ESCAPE.search(rest)):
        raise RemoteSIPError(f"bad URI {text[:80]!r}")
    return URI(scheme, opaque=rest, _text=text)


def _parse_sip(text: str, scheme: str, rest: str) -> URI:
    if accel.sip_uri_parts is not None:
        parts = accel.sip_uri_parts(rest)     # the common case, in C
        if parts is not None:
            user, host, port, params = parts
            return URI(scheme, user, None, host, port, params, None, None, text)
    if "%" not in rest:
        match = grammar.FAST_SIP_URI.fullmatch(rest)
        if match is not None:
            user, host, port, paramtext = match.groups()
            params = {}
            if paramtext:
                for param in paramtext[1:].split(";"):
                    name, eq, value = param.partition("=")
                    params[name.lower()] = value if eq else None
            if port is not None:
                port = int(port)
                if port > 65535:
                    raise RemoteSIPError(f"bad port {port} in URI {text[:80]!r}")
            return URI(scheme, user, None, host, port, params, None, None, text)
    return _parse_sip_carefully(text, scheme, rest)


def _parse_sip_carefully(text: str, scheme: str, rest: str) -> URI:
    # SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    # userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
    # "@" cannot appear unescaped anywhere else in a SIP URI, so the first one ends the userinfo
    # (the user part may itself hold ";" and "?", RFC 4475 semiuri and intmeth).
    user = password = headers = None
    at = rest.find("@")
    if at >= 0:
        user, sep, password = rest[:at].partition(":")
        if not grammar.USER.fullmatch(user) or ("%" in user and grammar.BAD_ESCAPE.search(user)):
            raise RemoteSIPError(f"bad user part in URI {text[:80]!r}")
        if not sep:
            password = None
        elif not grammar.PASSWORD.fullmatch(password) or grammar.BAD_ESCAPE.search(password):
            raise RemoteSIPError(f"bad password in URI {text[:80]!r}")
        rest = rest[at + 1:]
    question = rest.find("?")
    if question >= 0:
        headers = rest[question + 1:]
        rest = rest[:question]
        if not grammar.URI_HEADERS.fullmatch(headers) or grammar.BAD_ESCAPE.search(headers):
            raise RemoteSIPError(f"bad headers in URI {text[:80]!r}")
    hostport, semi, paramtext = rest.partition(";")
    if hostport[:1] == "[":
        close = hostport.find("]") + 1
        host, port_text = hostport[:close], hostport[close:]
        has_port = bool(port_text)
        if has_port and port_text[0] != ":":
            raise RemoteSIPError(f"bad host in URI {text[:80]!r}")
        port_text = port_text[1:]
    else:
        host, colon, port_text = hostport.partition(":")
        has_port = bool(colon)
    if not host or not check_host(host):
        raise RemoteSIPError(f"bad host in URI {text[:80]!r}")
    port = parse_port(port_text, f"URI {text[:80]!r}") if has_port else None
    params = _parse_params(paramtext, text) if semi else {}
    return URI(scheme, user, password, host, port, params, headers, _text=text)


def _parse_tel(text: str, rest: str) -> URI:
    # telephone-uri = "tel:" telephone-subscriber ; the number runs to the first ";"
    number, semi, paramtext = rest.partition(";")
    if not grammar.TEL_NUMBER.fullmatch(number):
        raise RemoteSIPError(f"bad tel URI {text[:80]!r}")
    params = _parse_params(paramtext, text) if semi else {}
    return URI("tel", number, None, "", None, params, _text=text)


def _parse_params(paramtext: str, text: str) -> dict[str, str | None]:
    # uri-parameters = *( ";" uri-parameter)
    params: dict[str, str | None] = {}
    for param in paramtext.split(";"):
        if not grammar.URI_PARAM.fullmatch(param) or ("%" in param and grammar.BAD_ESCAPE.search(param)):
            raise RemoteSIPError(f"bad parameter {param[:40]!r} in URI {text[:80]!r}")
        name, eq, value = param.partition("=")
        params[name.lower()] = value if eq else None
    return params
