"""rr: record-routing (OpenSER's rr module; RFC 3261 sections 16.4, 16.6 and 16.12).

``record_route()`` asks for a Record-Route value naming this proxy; it is written when the
request leaves (``forward.outgoing``), because only then is the sending socket known. When the
request leaves by another transport or socket than it came in on, two values are written
(``enable_double_rr``, as OpenSER 1.2 did; RFC 5658): the top one names the socket facing the
next hop, the other the socket facing the sender, each with ``;r2=on``. ``loose_route()``
consumes our own Route values on in-dialog requests, repairs the Request-URI a strict router
put there, and points ``$du`` at the next Route.
"""

from __future__ import annotations

import logging

from ..config.values import Proto
from ..script.exports import FixupError, Function, ModParam, ModuleExports, RouteType
from ..script.fixups import text
from ..sip import SIPError, parse_uri
from .path import received_of

REQUEST_LIKE = RouteType.REQUEST | RouteType.FAILURE | RouteType.BRANCH


class RecordRoute:
    """What record_route()/record_route_preset() asked for; values() writes it out."""

    __slots__ = ("preset", "params", "options")

    def __init__(self, options: dict, preset: str | None = None, params: str = ""):
        self.options = options          # the module's parameters
        self.preset = preset
        self.params = params            # add_rr_param()

    def values(self, ctx, out_proto: Proto, out_sent_by: str) -> list[str]:
        """The Record-Route values for a request leaving by ``out_proto`` from ``out_sent_by``."""
        opts = self.options
        tail = (";lr=on" if opts["enable_full_lr"] else ";lr") + self._ftag(ctx) + self.params
        if self.preset is not None:
            return [f"<{self.preset}{tail}>"]
        rcv = ctx.rcv
        inbound = ctx.runtime.received_on(rcv)
        if opts["enable_double_rr"] and (rcv.proto is not out_proto or inbound != out_sent_by):
            tail += ";r2=on"
            return [_uri(out_sent_by, out_proto, tail), _uri(inbound, rcv.proto, tail)]
        return [_uri(inbound, rcv.proto, tail)]

    def _ftag(self, ctx) -> str:
        if not self.options["append_fromtag"]:
            return ""
        try:
            tag = ctx.msg.from_.tag
        except SIPError:
            return ""
        return f";ftag={tag}" if tag else ""


def _uri(hostport: str, proto: Proto, tail: str) -> str:
    transport = "" if proto is Proto.UDP else f";transport={proto.text}"
    return f"<sip:{hostport}{transport}{tail}>"


def record_route(ctx, options):
    if ctx.msg.method == "REGISTER":     # a registration is not a dialog (OpenSER refused it too)
        return -1
    ctx.record_route = RecordRoute(options)
    return 1


def record_route_preset(ctx, options, uri):
    ctx.record_route = RecordRoute(options, uri)
    return 1


def add_rr_param(ctx, param):
    if ctx.record_route is None:
        ctx.runtime.log(logging.WARNING, "add_rr_param(): call record_route() first")
        return -1
    rr = ctx.record_route        # a new one: a branch_route's parameters stay on its branch
    ctx.record_route = RecordRoute(rr.options, rr.preset, rr.params + param)
    return 1


def loose_route(ctx):
    """True when the request carried a route set (in-dialog, or a pre-loaded Route): our own
    values are removed and $du names the next hop; false when there is nothing to follow."""
    msg, runtime = ctx.msg, ctx.runtime
    try:
        routes = list(msg.routes)       # NameAddr values, their URIs parsed
        uri = msg.uri
    except SIPError as e:
        runtime.log(logging.INFO, f"loose_route(): {e}")
        return -1
    if not routes:
        return -1
    count = len(routes)
    if uri.user is None and "lr" in uri.params and is_ours(runtime, uri):
        # RFC 3261 16.4: "If the Request-URI contains a value this proxy previously placed into a
        # Record-Route header field ..., the proxy MUST replace the Request-URI in the request
        # with the last value from the Route header field, and remove that value" (a strict
        # router sent it).
        msg.set_ruri(str(routes.pop().uri))
    received = None
    if routes and is_ours(runtime, routes[0].uri):
        first = routes.pop(0).uri
        # the second of a double Record-Route is ours too
        if routes and "r2" in first.params and is_ours(runtime, routes[0].uri):
            routes.pop(0)
        received = received_of(first)   # a Path of ours (add_path_received): where the phone is
    if not routes and received:
        ctx.dst_uri = received
    if routes:
        following = routes[0].uri
        if "lr" in following.params:
            ctx.dst_uri = str(following)
        else:
            # RFC 3261 16.6 step 6: a strict router next: "the proxy MUST place the Request-URI
            # into the Route header field as the last value. It MUST then place the first Route
            # header field value into the Request-URI and remove that value".
            routes.append(f"<{msg.ruri}>")
            routes.pop(0)
            msg.set_ruri(str(following))
            ctx.dst_uri = None
            count = -1
    if len(routes) != count:
        msg.remove_header("Route")
        for value in routes:
            msg.add_header("Route", str(value))
    return 1


def is_ours(runtime, uri) -> bool:
    """Whether a SIP URI names this proxy (a URI without a port: the transport's default one)."""
    if uri.scheme not in ("sip", "sips") or not uri.host:
        return False
    default = 5061 if uri.scheme == "sips" or uri.transport == "tls" else 5060
    return runtime.is_myself(uri.host, uri.port or default)


def _preset_fixup(args, env):
    value = text(args[0], 0)
    uri = value if value.lower().startswith(("sip:", "sips:")) else f"sip:{value}"
    try:
        parse_uri(uri)
    except SIPError as e:
        raise FixupError(f"argument 1 is not a host[:port] or SIP URI: {e}", 0) from None
    return _options(env), uri


def _param_fixup(args, env):
    param = text(args[0], 0)
    if not param.startswith(";") or any(c in param for c in " \t\r\n<>,"):
        raise FixupError("argument 1 must be URI parameters such as \";nat=yes\"", 0)
    return (param,)


def _options(env) -> dict:
    return env.modparams.get("rr", {})


EXPORTS = ModuleExports(
    name="rr",
    doc="Record-routing and loose routing.",
    params=(
        ModParam("enable_full_lr", int, 0, "Write ;lr=on instead of ;lr (for old user agents)."),
        ModParam("append_fromtag", int, 1, "Add the From tag to our Record-Route (;ftag=)."),
        ModParam("enable_double_rr", int, 1, "Two Record-Route values when a request leaves by another "
                                             "transport or socket than it came in on."),
    ),
    functions=(
        Function("record_route", record_route, (0,), "Stay in the dialog's route set.",
                 lambda args, env: (_options(env),), REQUEST_LIKE),
        Function("record_route_preset", record_route_preset, (1,),
                 "Record-Route with a fixed address: record_route_preset(\"host:port\").", _preset_fixup,
                 REQUEST_LIKE),
        Function("add_rr_param", add_rr_param, (1,), "Add parameters to our Record-Route value.",
                 _param_fixup, REQUEST_LIKE),
        Function("loose_route", loose_route, (0,),
                 "Follow the request's Route set (RFC 3261 16.4); false when it has none.",
                 None, RouteType.REQUEST),
    ),
)
