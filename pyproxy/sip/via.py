"""Via header values (RFC 3261 20.42, 18.2.1; rport from RFC 3581; IPv6 from RFC 5118)."""

from __future__ import annotations

from . import accel, grammar
from .errors import RemoteSIPError
from .params import format_params, parse_generic_params
from .uri import check_host, is_ipv4, is_ipv6_reference, parse_port

__all__ = ["Via", "parse_via"]


class Via:
    """One via-parm. ``transport`` is uppercased; ``params`` keeps wire order, names lowercased."""

    __slots__ = ("protocol", "transport", "host", "port", "params")

    def __init__(self, protocol: str, transport: str, host: str, port: int | None,
                 params: dict[str, str | None] | None = None):
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | bool | None:
        """None if absent, True for a bare ";rport" (RFC 3581 request), else the port number."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        return True if value is None else int(value)

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


def parse_via(text: str) -> Via:
    """Parse one via-parm (one comma-separated element of a Via header)."""
    if accel.scan_via is not None:
        scanned = accel.scan_via(text)      # the common case, checked in C; else as below
        if scanned is not None:
            return Via("SIP/2.0", *scanned)
    match = grammar.FAST_VIA.fullmatch(text)
    if match is not None:
        transport, host, port, paramtext = match.groups()
        params = {}
        if paramtext:
            for param in paramtext[1:].split(";"):
                name, eq, value = param.partition("=")
                params[name.lower()] = value if eq else None
        via = Via("SIP/2.0", transport.upper(), host, None if port is None else int(port), params)
        _check_params(via)
        return via
    match = grammar.VIA.fullmatch(text.strip())
    if match is None:
        raise RemoteSIPError(f"bad Via header {text[:80]!r}")
    name, version, transport, host, port, rest = match.groups()
    if not check_host(host):
        raise RemoteSIPError(f"bad Via header: bad host {host[:60]!r}")
    via = Via(
        f"{name.upper()}/{version}",
        transport.upper(),
        host,
        None if port is None else parse_port(port, "Via header"),
        parse_generic_params(rest, "Via header") if rest else {},
    )
    _check_params(via)
    return via


def _check_params(via: Via) -> None:
    params = via.params
    if via.port is not None and via.port > 65535:
        raise RemoteSIPError(f"bad Via header: bad port {via.port}")
    if "received" in params:
        # via-received = "received" EQUAL (IPv4address / IPv6address); RFC 5118 4.5 asks us to
        # accept the bracketed IPv6reference form too.
        received = params["received"]
        if not received or not (is_ipv4(received) or is_ipv6_reference(received)
                                or is_ipv6_reference(f"[{received}]")):
            raise RemoteSIPError(f"bad Via header: bad received {received!r}")
    # response-port = "rport" [EQUAL 1*DIGIT]  (RFC 3581)
    rport = params.get("rport")
    if rport is not None:
        parse_port(rport, "Via rport")
    # via-branch = "branch" EQUAL token
    if "branch" in params and params["branch"] is None:
        raise RemoteSIPError("bad Via header: branch without a value")
