"""Core script functions (OpenSER's core actions): forwarding, flags, Request-URI rewriting,
logging. Module functions live in ``pyproxy.modules``.
"""

from __future__ import annotations

import logging

from ..config.values import Proto, log_level
from ..config.ast import Value, ValueKind
from .forward import destination_of_uri, forward_request
from ..sip import SIPError
from .context import Destination
from .exports import FixupError, Function, RouteType
from .fixups import address, each, format_string, integer, sip_uri, text

MAX_FLAG = 63


# --- flags -----------------------------------------------------------------------------------
def setflag(ctx, flag):
    ctx.flags |= 1 << flag
    return 1


def resetflag(ctx, flag):
    ctx.flags &= ~(1 << flag)
    return 1


def isflagset(ctx, flag):
    return 1 if ctx.flags & (1 << flag) else -1


def _flag(arg, i):
    return integer(arg, i, 0, MAX_FLAG, "a flag number")


# --- Request-URI rewriting -------------------------------------------------------------------
def _rewrite(ctx, **parts) -> int:
    msg = ctx.msg
    try:
        msg.set_ruri(str(msg.uri.rehosted(**parts) if "host" in parts else msg.uri.replace(**parts)))
    except SIPError as e:
        ctx.runtime.log(logging.ERROR, f"cannot rewrite the Request-URI: {e}")
        return -1
    return 1


def strip(ctx, n):
    user = ctx.msg.uri.user or ""
    return _rewrite(ctx, user=user[n:] or None)


def strip_tail(ctx, n):
    user = ctx.msg.uri.user or ""
    return _rewrite(ctx, user=user[:-n] if n else user)


def prefix(ctx, text):
    return _rewrite(ctx, user=text + (ctx.msg.uri.user or ""))


def sethost(ctx, host):
    return _rewrite(ctx, host=host)


def setuser(ctx, user):
    return _rewrite(ctx, user=user or None)


def sethostport(ctx, host, port):
    return _rewrite(ctx, host=host, port=port)


def seturi(ctx, uri):
    ctx.msg.set_ruri(uri)
    return 1


def _hostport(arg, i):
    spec = address(arg, i)
    return spec.host, spec.port


def _hostport_fixup(args, env):
    return _hostport(args[0], 0)


def _host(arg, i):
    host, port = _hostport(arg, i)
    if port is not None:
        raise FixupError(f"argument {i + 1} must be a host without port (use rewritehostport)", i)
    return host


# --- forwarding ------------------------------------------------------------------------------
def _forward_fixup(proto: Proto | None):
    def fixup(args, env):
        if not args:
            return (None,)
        from_uri = _is_word(args[0], "uri:host")
        port_from_uri = len(args) > 1 and _is_word(args[1], "uri:port")
        if from_uri:
            host, port = None, None
        else:
            if port_from_uri:
                raise FixupError("argument 2: uri:port goes with uri:host", 1)
            host, port = _hostport(args[0], 0)
        if len(args) > 1 and not port_from_uri:
            port = integer(args[1], 1, 1, 65535, "a port")
        if from_uri:        # OpenSER's forward(uri:host, uri:port): read at each call
            return (UriDestination(proto, None if port_from_uri else port),)
        return (Destination(proto or Proto.UDP, host, port),)
    return fixup


def _is_word(arg, word: str) -> bool:
    return isinstance(arg, Value) and arg.kind is ValueKind.WORD and arg.text.lower() == word


class UriDestination:
    """The Request-URI's host (and port, unless a fixed one is given) at the time of forwarding;
    its transport unless the function names one (forward_udp/tcp/tls)."""

    __slots__ = ("proto", "port")

    def __init__(self, proto: Proto | None, port: int | None):
        self.proto, self.port = proto, port

    def resolve(self, msg) -> Destination:
        dest = destination_of_uri(msg.uri)
        return Destination(self.proto or dest.proto, dest.host, self.port or dest.port)


def forward(ctx, dest):
    if dest is not None:
        try:
            dest = dest.resolve(ctx.msg)
        except SIPError:
            ctx.last_error = (400, "Bad Request-URI")
            return -1
    return forward_request(ctx, dest)


MAX_BRANCHES = 12      # OpenSER's limit on the destination set


def append_branch(ctx, uri=None):
    """Add a target to the destination set that t_relay() forks to: ``uri``, or the current
    Request-URI (and $du) when none is given (OpenSER's append_branch())."""
    branches = ctx.branches
    if branches is None:
        branches = ctx.branches = []
    if len(branches) + 1 >= MAX_BRANCHES:
        ctx.runtime.log(logging.ERROR, f"append_branch(): more than {MAX_BRANCHES} branches")
        return -1
    branches.append((uri, None) if uri is not None else (ctx.msg.ruri, ctx.dst_uri))
    return 1


def force_rport(ctx):
    """RFC 3581: answer to the source port even if the client did not ask with ;rport."""
    try:
        ctx.msg.set_top_via_params(rport=ctx.rcv.src_port)
    except SIPError:
        return -1
    return 1


# --- logging ---------------------------------------------------------------------------------
def log(ctx, level, render):
    ctx.runtime.log(level, render(ctx).rstrip("\n"))
    return 1


def _log_fixup(args, env):
    if len(args) == 1:
        return logging.DEBUG, format_string(args[0], 0)     # OpenSER's log(s) logs at L_DBG (4)
    return log_level(integer(args[0], 0, -3, 9, "a log level")), format_string(args[1], 1)


REQUEST_LIKE = RouteType.REQUEST | RouteType.FAILURE | RouteType.BRANCH

FUNCTIONS = (
    Function("forward", forward, (0, 1, 2), "Forward statelessly to the R-URI, or to host[, port].",
             _forward_fixup(None), REQUEST_LIKE),
    Function("forward_udp", forward, (1, 2), "Forward statelessly over UDP.", _forward_fixup(Proto.UDP),
             REQUEST_LIKE),
    Function("forward_tcp", forward, (1, 2), "Forward statelessly over TCP.", _forward_fixup(Proto.TCP),
             REQUEST_LIKE),
    Function("forward_tls", forward, (1, 2), "Forward statelessly over TLS.", _forward_fixup(Proto.TLS),
             REQUEST_LIKE),
    Function("setflag", setflag, (1,), "Set a flag of the message.", each(_flag)),
    Function("resetflag", resetflag, (1,), "Reset a flag of the message.", each(_flag)),
    Function("isflagset", isflagset, (1,), "True if the flag is set.", each(_flag)),
    Function("strip", strip, (1,), "Remove N leading characters of the R-URI user.",
             each(lambda a, i: integer(a, i, 0)), REQUEST_LIKE),
    Function("strip_tail", strip_tail, (1,), "Remove N trailing characters of the R-URI user.",
             each(lambda a, i: integer(a, i, 0)), REQUEST_LIKE),
    Function("prefix", prefix, (1,), "Put a prefix before the R-URI user.", each(text), REQUEST_LIKE),
    Function("sethost", sethost, (1,), "Replace the R-URI host.", each(_host), REQUEST_LIKE),
    Function("rewritehost", sethost, (1,), "Same as sethost.", each(_host), REQUEST_LIKE),
    Function("setuser", setuser, (1,), "Replace the R-URI user.", each(text), REQUEST_LIKE),
    Function("rewriteuser", setuser, (1,), "Same as setuser.", each(text), REQUEST_LIKE),
    Function("sethostport", sethostport, (1,), "Replace the R-URI host and port.", _hostport_fixup,
             REQUEST_LIKE),
    Function("rewritehostport", sethostport, (1,), "Same as sethostport.", _hostport_fixup, REQUEST_LIKE),
    Function("seturi", seturi, (1,), "Replace the whole R-URI.", each(sip_uri), REQUEST_LIKE),
    Function("rewriteuri", seturi, (1,), "Same as seturi.", each(sip_uri), REQUEST_LIKE),
    Function("append_branch", append_branch, (0, 1),
             "Add the Request-URI, or the given URI, to the targets t_relay() forks to.",
             each(sip_uri), REQUEST_LIKE),
    Function("force_rport", force_rport, (0,), "Add rport to the top Via (RFC 3581).",
             None, RouteType.REQUEST),
    Function("log", log, (1, 2), "Log a message: log([level,] text); $variables are expanded.",
             _log_fixup),
)
