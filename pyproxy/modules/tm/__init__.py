"""tm: transaction-stateful proxying (OpenSER's tm module; RFC 3261 sections 16 and 17).

The parts: ``machines`` (the RFC 3261 section 17 state machines, as tables), ``timers`` (OpenSER's
timer parameters onto the RFC's timers), ``keys`` (how a message finds its transaction),
``transaction`` (what a transaction holds), ``requests`` (the CANCEL and ACK it makes), ``proxy``
(the proxy core of section 16: forking, the response context, failure/reply/branch routes) and
``layer`` (one worker's tables, and the hooks the worker calls). This file holds the script's
functions and variables. The layer reaches the worker only through the script's ``Runtime``
(send, timers, logging); call affinity brings every message of a call to the worker that holds
its transactions.
"""

from __future__ import annotations

import re
import weakref

from ...config.ast import RouteKind, route_name
from ...config.values import Proto
from ...script import pv
from ...script.context import Destination
from ...script.core import UriDestination
from ...script.exports import FixupError, Function, MessageHooks, ModParam, ModuleExports, RouteType
from ...script.fixups import address, integer, status_code, text
from ...script.regex import compile_posix
from ...sip import SIPError
from .keys import client_key, server_key
from .layer import TransactionLayer, make_layer
from .machines import Kind
from .proxy import tm_state

_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()    # runtime -> its layer


def child_init(index: int, runtime, config) -> MessageHooks:
    layer = _LAYERS[runtime] = make_layer(index, runtime, config)
    return MessageHooks(layer.on_request, layer.after_request, layer.on_reply)


def layer_of(ctx) -> TransactionLayer:
    return _LAYERS[ctx.runtime]


# --- relaying --------------------------------------------------------------------------------
def t_relay(ctx, dest, flags):
    return layer_of(ctx).core.relay(ctx, dest, flags)


def t_newtran(ctx):
    if ctx.msg.method == "ACK":
        return -1
    try:
        layer_of(ctx).core.server_for(ctx)
    except SIPError as e:
        ctx.runtime.log(30, f"t_newtran(): {e}")
        return -1
    return 1


def t_reply(ctx, status, reason):
    if ctx.msg.method == "ACK":
        return -1
    core = layer_of(ctx).core
    try:
        server = core.server_for(ctx)
    except SIPError as e:
        ctx.runtime.log(30, f"t_reply(): {e}")
        return -1
    return ctx.tm.reply(ctx, status, reason) if server is not None else -1


# --- arming routes ---------------------------------------------------------------------------
def _arm(attribute: str):
    def arm(ctx, route):
        setattr(tm_state(ctx, layer_of(ctx).core), attribute, route)
        return 1
    return arm


def _route_fixup(kind: RouteKind):
    def fixup(args, env):
        name = route_name(text(args[0], 0))
        if (kind, name) not in env.routes:
            raise FixupError(f"argument 1: there is no {kind.value}[{name}] block in this config", 0)
        return (name,)
    return fixup


# --- questions -------------------------------------------------------------------------------
def t_check_trans(ctx):
    """Whether the message belongs to a transaction here: a request's own (or, for a CANCEL, its
    INVITE's), a reply's client transaction."""
    layer = layer_of(ctx)
    msg = ctx.msg
    try:
        if not hasattr(msg, "method"):
            key = client_key(msg)
            return 1 if key is not None and key in layer.clients else -1
        key = server_key(msg, "INVITE" if msg.method == "CANCEL" else None)
    except SIPError:
        return -1
    server = layer.servers.get(key)
    return 1 if server is not None and (msg.method != "CANCEL" or server.kind is Kind.INVITE_SERVER) else -1


def t_was_cancelled(ctx):
    state = ctx.tm
    return 1 if state is not None and state.server is not None and state.server.canceled else -1


def t_branch_timeout(ctx):
    return 1 if ctx.tm is not None and ctx.tm.timed_out else -1


def t_check_status(ctx, regex):
    code = reply_code(ctx)
    return 1 if code is not None and regex.search(str(code)) else -1


def _regex_fixup(args, env):
    written = text(args[0], 0)
    try:
        return (compile_posix(written),)
    except re.error as e:
        raise FixupError(f'argument 1: bad regular expression "{written}": {e}', 0) from None


# --- fix-ups of t_relay's destinations ----------------------------------------------------------
def _relay_fixup(args, env):
    """t_relay(), t_relay(flags), t_relay("[proto:]host[:port]"[, flags])."""
    if not args:
        return None, 0
    first = args[0]
    if len(args) == 1 and getattr(first, "number", None) is not None:
        return None, integer(first, 0, 0, 0xFF, "t_relay flags")
    spec = address(first, 0, allow_proto=True, what="expected [proto:]host[:port]: ")
    flags = integer(args[1], 1, 0, 0xFF, "t_relay flags") if len(args) > 1 else 0
    return Destination(spec.proto or Proto.UDP, spec.host, spec.port), flags


def _relay_to_fixup(proto: Proto):
    def fixup(args, env):
        if not args:        # to the Request-URI's host and port, over this transport
            return UriDestination(proto, None), 0
        spec = address(args[0], 0)
        port = integer(args[1], 1, 1, 65535, "a port") if len(args) > 1 else spec.port
        return Destination(proto, spec.host, port), 0
    return fixup


# --- variables -------------------------------------------------------------------------------
def reply_code(ctx) -> int | None:
    """$T_reply_code: in failure_route the status that ended the branches, in onreply_route the
    reply's, in a request route the final status the transaction sent (if any)."""
    state = ctx.tm
    if state is not None and state.reply_code is not None:
        return state.reply_code
    status = getattr(ctx.msg, "status", None)
    if status is not None:
        return status
    if state is not None and state.server is not None and state.server.final_status:
        return state.server.final_status
    return None


pv.register("T_reply_code", lambda ctx, arg: reply_code(ctx), None, "tm: the status of the reply "
            "(failure_route: the one that ended the branches)")
pv.register("T_branch_idx", lambda ctx, arg: ctx.tm.branch_idx if ctx.tm is not None else None, None,
            "tm: the index of the branch (branch_route, onreply_route)")


REQUEST = RouteType.REQUEST
RELAYING = RouteType.REQUEST | RouteType.FAILURE

EXPORTS = ModuleExports(
    name="tm",
    doc="Transaction-stateful proxying.",
    per_call_state=True,
    child_init=child_init,
    start_params=("fr_timer", "fr_inv_timer", "wt_timer", "T1_timer", "T2_timer", "retr_timer1", "retr_timer2"),
    params=(
        ModParam("fr_timer", int, 30, "Seconds a branch waits for a reply, and an INVITE branch for its "
                                      "first provisional one (RFC 3261 timers B and F).", 1, 86400),
        ModParam("fr_inv_timer", int, 120, "Seconds an INVITE branch waits for a final reply after a "
                                           "provisional one (timer C, RFC 3261 16.8).", 1, 86400),
        ModParam("wt_timer", int, 5, "Seconds a finished transaction absorbs late messages over UDP "
                                     "(timers D, I, J, K; L and M on every transport).", 1, 3600),
        ModParam("T1_timer", int, 500, "RFC 3261's T1 in milliseconds: the first retransmission "
                                       "interval over UDP.", 50, 60000),
        ModParam("T2_timer", int, 4000, "RFC 3261's T2 in milliseconds: the longest retransmission "
                                        "interval.", 100, 600000),
        ModParam("retr_timer1", int, 0, "OpenSER 1.0's name of T1_timer (milliseconds); 0: unset.", 0, 60000),
        ModParam("retr_timer2", int, 0, "OpenSER 1.0's name of T2_timer (milliseconds); 0: unset.", 0, 600000),
        ModParam("delete_timer", int, 2, "Accepted for old configs; pyproxy deletes a transaction at once.",
                 0, 3600),
    ),
    functions=(
        Function("t_relay", t_relay, (0, 1, 2), "Relay statefully: t_relay([\"proto:host:port\"][, flags]).",
                 _relay_fixup, RELAYING),
        Function("t_relay_to_udp", t_relay, (0, 1, 2), "Relay statefully over UDP to host, port.",
                 _relay_to_fixup(Proto.UDP), RELAYING),
        Function("t_relay_to_tcp", t_relay, (0, 1, 2), "Relay statefully over TCP to host, port.",
                 _relay_to_fixup(Proto.TCP), RELAYING),
        Function("t_relay_to_tls", t_relay, (0, 1, 2), "Relay statefully over TLS to host, port.",
                 _relay_to_fixup(Proto.TLS), RELAYING),
        Function("t_newtran", t_newtran, (0,), "Make the request's transaction now.", None, REQUEST),
        Function("t_reply", t_reply, (2,), "Reply statefully: t_reply(code, reason).",
                 lambda args, env: (status_code(args[0], 0), text(args[1], 1)), RELAYING),
        Function("t_on_failure", _arm("on_failure"), (1,), "Run failure_route[N] when every branch failed.",
                 _route_fixup(RouteKind.FAILURE), RELAYING),
        Function("t_on_reply", _arm("on_reply"), (1,), "Run onreply_route[N] on each reply of the transaction.",
                 _route_fixup(RouteKind.ONREPLY), RELAYING),
        Function("t_on_branch", _arm("on_branch"), (1,), "Run branch_route[N] on each branch before it leaves.",
                 _route_fixup(RouteKind.BRANCH), RELAYING),
        Function("t_check_trans", t_check_trans, (0,), "True if the message belongs to a transaction here.",
                 None, RouteType.REQUEST | RouteType.ONREPLY),
        Function("t_was_cancelled", t_was_cancelled, (0,), "True if a CANCEL came for the transaction.",
                 None, RouteType.FAILURE | RouteType.REQUEST | RouteType.ONREPLY),
        Function("t_is_canceled", t_was_cancelled, (0,), "Same as t_was_cancelled().", None,
                 RouteType.FAILURE | RouteType.REQUEST | RouteType.ONREPLY),
        Function("t_branch_timeout", t_branch_timeout, (0,), "True in failure_route when a branch timed out.",
                 None, RouteType.FAILURE),
        Function("t_check_status", t_check_status, (1,), "True if $T_reply_code matches the regex.",
                 _regex_fixup, RouteType.FAILURE | RouteType.ONREPLY | RouteType.REQUEST),
    ),
)
