"""Pseudo-variables: ``$ru``, ``$fd``, ``$si``, ``$avp(i:400)``... resolved once, at load time.

``compile_pv`` turns a reference into a getter (and, for writable ones, a setter) closed over
its argument, so that the per-message cost is one call. ``compile_format`` does the same for
strings with references inside (``xlog("$rm from $si\\n")``). Modules register their own
variables (the TLS layer adds ``$tls_*``) with ``register``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable

from ..sip import SIPError, parse_uri


class PVError(ValueError):
    pass


@dataclass(frozen=True)
class PVSpec:
    name: str
    get: Callable          # get(ctx, arg) -> str | int | None
    set: Callable | None   # set(ctx, arg, value)
    doc: str
    parse_arg: Callable | None = None   # arg text -> arg (raise PVError); None: takes no argument


REGISTRY: dict[str, PVSpec] = {}


def register(name: str, get, set=None, doc: str = "", parse_arg=None) -> None:
    REGISTRY[name] = PVSpec(name, get, set, doc, parse_arg)


def _safe(fn):
    """A variable of a header the peer got wrong reads as unset ($null), as in OpenSER."""
    def get(ctx, arg):
        try:
            return fn(ctx, arg)
        except SIPError:
            return None
    return get


# --- Request-URI -----------------------------------------------------------------------------
def _set_ru(ctx, arg, value):
    if value is None:
        raise ValueError("the Request-URI cannot be $null")
    ctx.msg.set_ruri(str(value))


def _set_uri_part(part):
    def set_(ctx, arg, value):
        uri = ctx.msg.uri
        if part == "port":
            value = int(value) if value not in (None, "") else None
        ctx.msg.set_ruri(str(uri.rehosted(host=value) if part == "host" else uri.replace(**{part: value})))
    return set_


register("ru", _safe(lambda c, a: c.msg.ruri), _set_ru, "Request-URI")
register("rU", _safe(lambda c, a: c.msg.uri.user), _set_uri_part("user"), "Request-URI user")
register("rd", _safe(lambda c, a: c.msg.uri.host), _set_uri_part("host"), "Request-URI host")
register("rp", _safe(lambda c, a: c.msg.uri.port or (5061 if c.msg.uri.transport == "tls" else 5060)),
         _set_uri_part("port"), "Request-URI port (5060, or 5061 for TLS, when not written)")


def _set_du(ctx, arg, value):
    if value is None:
        ctx.dst_uri = None
        return
    parse_uri(str(value))
    ctx.dst_uri = str(value)


register("du", lambda c, a: c.dst_uri, _set_du, "destination URI: where the request goes instead of its "
                                                "Request-URI (loose_route() sets it to the next Route)")
register("rm", lambda c, a: c.msg.method if hasattr(c.msg, "method") else c.msg.cseq[1], None, "method")
register("rs", lambda c, a: getattr(c.msg, "status", None), None, "reply status")
register("rr", lambda c, a: getattr(c.msg, "reason", None), None, "reply reason")

# --- From / To -------------------------------------------------------------------------------
register("fu", _safe(lambda c, a: str(c.msg.from_.uri)), None, "From URI")
register("fU", _safe(lambda c, a: c.msg.from_.uri.user), None, "From URI user")
register("fd", _safe(lambda c, a: c.msg.from_.uri.host), None, "From URI host")
register("ft", _safe(lambda c, a: c.msg.from_.tag), None, "From tag")
register("tu", _safe(lambda c, a: str(c.msg.to.uri)), None, "To URI")
register("tU", _safe(lambda c, a: c.msg.to.uri.user), None, "To URI user")
register("td", _safe(lambda c, a: c.msg.to.uri.host), None, "To URI host")
register("tt", _safe(lambda c, a: c.msg.to.tag), None, "To tag")
register("ci", lambda c, a: c.msg.call_id, None, "Call-ID")
register("cs", _safe(lambda c, a: c.msg.cseq[0]), None, "CSeq number")
register("ua", lambda c, a: c.msg.header("user-agent"), None, "User-Agent")

# --- where it came from ----------------------------------------------------------------------
register("si", lambda c, a: c.rcv.src_ip, None, "source IP")
register("sp", lambda c, a: c.rcv.src_port, None, "source port")
register("Ri", lambda c, a: c.rcv.dst_ip, None, "IP of the socket it arrived on")
register("Rp", lambda c, a: c.rcv.dst_port, None, "port of the socket it arrived on")
register("proto", lambda c, a: c.rcv.proto.text, None, "transport: udp, tcp or tls")
register("pr", lambda c, a: c.rcv.proto.text, None, "transport: udp, tcp or tls")
register("null", lambda c, a: None, None, "always unset")


# --- TLS (OpenSER's tlsops variables): the peer summary of the connection the message came on --
def _tls(field: str, join: bool = False):
    def get(ctx, arg):
        info = ctx.rcv.tls
        if not info:
            return None
        value = info.get(field)
        if join:
            return ",".join(value) if value else None
        return None if value == "" else value      # no peer certificate: $null, as the SANs
    return get


register("tls_version", _tls("version"), None, "TLS version of the connection, e.g. TLSv1.3")
register("tls_cipher_info", _tls("cipher"), None, "cipher suite of the connection")
register("tls_peer_subject", _tls("subject"), None, "subject of the peer's certificate")
register("tls_peer_subject_cn", _tls("subject_cn"), None, "common name of the peer's certificate")
register("tls_peer_issuer", _tls("issuer"), None, "issuer of the peer's certificate")
register("tls_peer_san_uri", _tls("san_uri", join=True), None, "URI subjectAltNames, comma-separated")
register("tls_peer_san_dns", _tls("san_dns", join=True), None, "DNS subjectAltNames, comma-separated")
register("tls_peer_verified", lambda c, a: (1 if c.rcv.tls.get("verified") else 0) if c.rcv.tls else None,
         None, "1 when the peer presented a certificate that verified")


def _hdr_arg(text: str) -> str:
    if not text or not re.fullmatch(r"[A-Za-z0-9!%*_+`'~.\-]+", text):
        raise PVError(f"$hdr needs a header name, e.g. $hdr(User-Agent), found $hdr({text})")
    return text


register("hdr", _safe(lambda c, a: c.msg.header(a)), None, "first value of a header", parse_arg=_hdr_arg)


# --- AVPs ------------------------------------------------------------------------------------
def avp_name(text: str) -> int | str:
    """``i:400`` -> 400, ``s:name`` -> 'name'; bare digits are an integer name (OpenSER 1.x)."""
    kind, sep, name = text.partition(":")
    if not sep:
        kind, name = ("i" if text.isdigit() else "s"), text
    if kind == "i" and name.isdigit():
        return int(name)
    if kind == "s" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name or ""):
        return name
    raise PVError(f"bad AVP name '{text}': expected i:NUMBER or s:NAME")


def avp_get(ctx, name):
    values = ctx.avps.get(name)
    return values[-1] if values else None


def avp_add(ctx, name, value) -> None:
    """AVPs are stacks: a write adds a value, a read gives the newest (OpenSER semantics)."""
    if value is None:
        ctx.avps.pop(name, None)
    else:
        ctx.avps.setdefault(name, []).append(value)


register("avp", avp_get, avp_add, "attribute-value pair", parse_arg=avp_name)


# --- compiling references --------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledPV:
    text: str
    get: Callable                 # get(ctx)
    set: Callable | None          # set(ctx, value)


def compile_pv(name: str, arg: str | None) -> CompiledPV:
    text = f"${name}" if arg is None else f"${name}({arg})"
    spec = REGISTRY.get(name)
    if spec is None:
        raise PVError(f"unknown pseudo-variable {text}")
    if spec.parse_arg is None:
        if arg is not None:
            raise PVError(f"pseudo-variable ${name} takes no argument")
        parsed = None
    else:
        if arg is None:
            raise PVError(f"pseudo-variable ${name} needs an argument, e.g. ${name}(...)")
        parsed = spec.parse_arg(arg)
    get, set_ = spec.get, spec.set
    getter = lambda ctx: get(ctx, parsed)  # noqa: E731

    def setter(ctx, value) -> int:
        """A value the variable cannot take (often the caller's: $rp = $hdr(X-Port)) is an error
        of this assignment, logged, not of the worker's."""
        try:
            set_(ctx, parsed, value)
        except (ValueError, TypeError, SIPError) as e:
            ctx.runtime.log(logging.WARNING, f"cannot set {text} to {value!r}: {e}")
            return -1
        return 1
    return CompiledPV(text, getter, setter if set_ else None)


_PV_IN_TEXT = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)(?:\(([^()]*)\))?|\{([A-Za-z_][A-Za-z0-9_]*)(?:\(([^()]*)\))?\})")


def parse_pv_text(text: str) -> CompiledPV:
    """A whole string that is one reference, as avp_write("$fd", ...) writes them."""
    m = _PV_IN_TEXT.fullmatch(text)
    if not m:
        raise PVError(f"expected a pseudo-variable such as $fd or $avp(i:1), found '{text}'")
    return compile_pv(m.group(1) or m.group(3), m.group(2) if m.group(1) else m.group(4))


def compile_format(text: str) -> Callable:
    """A string with references -> ``render(ctx) -> str``; unset values print as <null>."""
    parts: list = []
    pos = 0
    for m in _PV_IN_TEXT.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        pv = compile_pv(m.group(1) or m.group(3), m.group(2) if m.group(1) else m.group(4))
        parts.append(pv.get)
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    if all(isinstance(p, str) for p in parts):
        constant = "".join(parts)
        return lambda ctx: constant
    def render(ctx) -> str:
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
            else:
                v = p(ctx)
                out.append("<null>" if v is None else str(v))
        return "".join(out)
    return render
