"""Stateless forwarding (RFC 3261 section 16.11): where a request goes, the Via a proxy adds,
and where a response goes back. No I/O: the result is handed to ``runtime.send``.
"""

from __future__ import annotations

import hashlib

from ..config.values import TCP, TLS, UDP
from .context import Destination, ScriptContext
from ..sip import LocalSIPError, RemoteSIPError, SIPError, parse_uri

_MAGIC = "z9hG4bK"
_blake2s = hashlib.blake2s
_TRANSPORTS = {"udp": UDP, "tcp": TCP, "tls": TLS}


def destination_of_uri(uri) -> Destination:
    """RFC 3263 in short: sips or transport=tls -> TLS, maddr overrides the host."""
    params = uri.params
    if uri.scheme == "sips":
        proto = TLS
    else:
        transport = params.get("transport")
        proto = UDP if transport is None else _TRANSPORTS.get(transport.lower(), UDP)
    return Destination(proto, params.get("maddr") or uri.host, uri.port)


def stamp_received(msg, rcv) -> None:
    """RFC 3261 18.2.1 and RFC 3581: record on the top Via where the request really came from."""
    via = msg.top_via
    host, params = via.host, via.params
    received = rcv.src_ip if host != rcv.src_ip and _norm_host(host) != rcv.src_ip else None
    rport = rcv.src_port if "rport" in params and params["rport"] is None else None    # a bare ;rport
    # (force_rport() may have written that rport already: only ever the source port)
    if received is not None or (rport is not None and not msg.rport_recorded):
        msg.set_top_via_params(received=received, rport=rport)


def _norm_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def stateless_branch(msg, dest: Destination) -> str:
    """The same branch for every retransmission, and for a CANCEL of the INVITE (RFC 3261 16.11).

    An RFC 3261 request's top branch is unique per transaction, so it and the target it goes to
    determine ours. For an RFC 2543 request the transaction is known by its other identifiers.
    """
    via = msg.top_via
    branch = via.params.get("branch")
    if branch is not None and branch.startswith(_MAGIC) and len(branch) > len(_MAGIC):
        key = f"{branch}|{via.host}|{via.port}|{dest.proto.text}:{dest.host}:{dest.port}"
    else:
        key = (f"{msg.to.tag}|{msg.from_.tag}|{msg.call_id}|{msg.cseq[0]}|{msg.ruri}|{via}|"
               f"{dest.proto.text}:{dest.host}:{dest.port}")
    return _MAGIC + _blake2s(key.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


def next_hop(ctx: ScriptContext) -> Destination:
    """Where a request goes when the script names no address: ``$du`` (set by loose_route() to
    the next Route, RFC 3261 16.6 step 7), else its Request-URI. SIPError when neither is a SIP
    URI we can send to."""
    if ctx.dst_uri:
        return destination_of_uri(parse_uri(ctx.dst_uri))
    uri = ctx.msg.uri
    if uri.scheme not in ("sip", "sips"):     # RFC 3261 16.3 step 2: tel:, urn:, ...
        raise UnsupportedScheme(f"cannot send to a {uri.scheme}: URI")
    return destination_of_uri(uri)


class UnsupportedScheme(LocalSIPError):
    pass


def outgoing(ctx: ScriptContext, dest: Destination, branch: str) -> tuple[bytes, object]:
    """The request as it leaves for ``dest``: our Via (with ``branch``) on top, the Record-Route
    values record_route() asked for (they name the socket it leaves by), every edit applied. The
    message itself is left as it was, so that it can leave again (another branch). Returns the
    bytes and the sending socket, for runtime.send(). SIPError when it cannot be built."""
    msg, runtime = ctx.msg, ctx.runtime
    stamp_received(msg, ctx.rcv)
    sent_by, source = runtime.via_sent_by(dest.proto, dest, ctx.rcv)
    via = f"SIP/2.0/{dest.proto.token} {sent_by};branch={branch}"
    if ctx.rcv.proto is not UDP and msg.top_via.rport is None:
        via += f";{CONN_PORT}={ctx.rcv.src_port}"
    if ctx.record_route is None:        # the stateless hot path: our Via written, not recorded
        return msg.serialize(b"Via: " + via.encode()), source
    mark = msg.checkpoint()
    try:
        for value in reversed(ctx.record_route.values(ctx, dest.proto, sent_by)):
            msg.add_record_route(value)     # each above the last: the first value ends on top
        msg.insert_via(via)
        return msg.serialize(), source
    finally:
        msg.rollback(mark)


def forward_request(ctx: ScriptContext, dest: Destination | None = None) -> int:
    """Forward the request statelessly to ``dest`` (default: next_hop()). 1 sent, -1 failed."""
    msg, runtime = ctx.msg, ctx.runtime
    try:
        if dest is None:
            dest = next_hop(ctx)
        branch = stateless_branch(msg, dest)
        data, source = outgoing(ctx, dest, branch)
    except SIPError as e:   # the request's fault (a bad URI or Via), or ours (no socket for that transport)
        ctx.last_error = failure_status(e)
        runtime.log(30 if isinstance(e, UnsupportedScheme) else 40, f"cannot forward {msg.method}: {e}")
        return -1
    if runtime.send(ctx, dest, data, source):
        return 1
    ctx.last_error = SEND_FAILED     # what sl_reply_error() answers, as OpenSER did
    return -1


def failure_status(e: SIPError) -> tuple[int, str]:
    """What a request that cannot be sent is answered (sl_reply_error(), t_relay())."""
    if isinstance(e, UnsupportedScheme):
        return 416, "Unsupported URI Scheme"
    if isinstance(e, RemoteSIPError):
        return 400, "Bad Request-URI"
    return 500, "Server Internal Error"


SEND_FAILED = (477, "Unfortunately error on sending to next hop occurred")

# The branch ids of transaction-stateful requests (tm) start so; a stateless branch is hex.
STATEFUL_BRANCH = _MAGIC + "tm"


def transport_failure(request, why: str) -> tuple[int, str]:
    """The response a request that could not be sent gets, as if from the next hop. A branch of
    a transaction: 503, as RFC 3261 16.9 asks ("MUST behave as if the forwarded request received
    a 503"), with why in the reason phrase; a stateless one: OpenSER's 477."""
    try:
        branch = request.top_via.branch or ""
    except SIPError:
        branch = ""
    if not branch.startswith(STATEFUL_BRANCH):
        return SEND_FAILED
    detail = "".join(c for c in why if c.isprintable())[:120]
    return 503, f"Service Unavailable ({detail})"


# RFC 3261 18.2.2: a response goes back on the connection its request came on. When the sender's
# Via has no rport, nothing in it names that connection's port, so our own Via keeps it (as SER's
# ;i= kept the connection id); it is removed with our Via before the response goes on.
CONN_PORT = "cport"


def reply_destination_for_request(msg, rcv, to_via: bool = False) -> Destination:
    """Where our own reply to a request goes (RFC 3261 18.2.2, RFC 3581).

    Over TCP/TLS: back on the connection it came in on. Over UDP: the source address (the
    received= of the top Via), to the source port when the client asked with rport (or the
    script did, with force_rport()), else to the Via's port; with ``to_via`` (reply_to_via=yes)
    to the Via's sent-by as written.
    """
    if rcv.proto is not UDP:
        return Destination(rcv.proto, rcv.src_ip, rcv.src_port)
    via = msg.top_via
    if via.rport is not None or msg.rport_recorded:
        return Destination(UDP, rcv.src_ip, rcv.src_port)
    host = via.host if to_via else rcv.src_ip
    return Destination(UDP, host, via.port or 5060)


def reply_destination(via) -> Destination | None:
    """Where a response goes after our Via is removed: the next Via's received/rport or sent-by."""
    if via is None:
        return None
    rport = via.rport
    port = via.port if rport is None or rport is True else rport     # rport=N: the source port
    return Destination(_TRANSPORTS.get(via.transport.lower(), UDP), via.received or via.host, port)


def forward_reply(ctx: ScriptContext) -> int:
    """Send a response on along its Vias, without ours. -1 when it is not ours to forward."""
    msg, runtime = ctx.msg, ctx.runtime
    try:
        top = msg.top_via
        dest = reply_destination(msg.second_via)
        if dest is None:
            return -1
        if not runtime.is_myself(top.host, top.port):
            runtime.log(20, f"dropping reply whose top Via {top.host}:{top.port} is not ours")
            return -1
        msg.remove_top_via()
        data = msg.serialize()
    except SIPError as e:
        runtime.log(30, f"dropping malformed reply: {e}")
        return -1
    conn_port = top.params.get(CONN_PORT)
    if conn_port and dest.proto is not UDP and conn_port.isdigit() and \
            runtime.connected(dest.proto, dest.host, int(conn_port)):
        dest = Destination(dest.proto, dest.host, int(conn_port))   # else a new one to the Via's port
    return 1 if runtime.send(ctx, dest, data) else -1
