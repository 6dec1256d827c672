"""Stateless forwarding (RFC 3261 section 16.11): where a request goes, the Via a proxy adds,
and where a response goes back. No I/O: the result is handed to ``runtime.send``.
"""

from __future__ import annotations

import hashlib

from .config.values import Proto
from .script.context import Destination, ScriptContext
from .sip import RemoteSIPError, SIPError

_MAGIC = "z9hG4bK"
_TRANSPORTS = {"udp": Proto.UDP, "tcp": Proto.TCP, "tls": Proto.TLS}


def destination_of_uri(uri) -> Destination:
    """RFC 3263 in short: sips or transport=tls -> TLS, maddr overrides the host."""
    params = uri.params
    transport = (params.get("transport") or "").lower()
    if uri.scheme == "sips":
        proto = Proto.TLS
    else:
        proto = _TRANSPORTS.get(transport, Proto.UDP)
    host = params.get("maddr") or uri.host
    return Destination(proto, host, uri.port)


def stamp_received(msg, rcv) -> None:
    """RFC 3261 18.2.1 and RFC 3581: record on the top Via where the request really came from."""
    via = msg.top_via
    received = rcv.src_ip if _norm_host(via.host) != rcv.src_ip else None
    rport = rcv.src_port if via.rport is True else None
    if received is not None or rport is not None:
        msg.set_top_via_params(received=received, rport=rport)


def _norm_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def stateless_branch(msg, target: str) -> str:
    """The same branch for every retransmission, and for a CANCEL of the INVITE (RFC 3261 16.11).

    An RFC 3261 request's top branch is unique per transaction, so it and the target it goes to
    determine ours. For an RFC 2543 request the transaction is known by its other identifiers.
    """
    via = msg.top_via
    branch = via.branch or ""
    if branch.startswith(_MAGIC) and len(branch) > len(_MAGIC):
        key = f"{branch}|{via.host}|{via.port}|{target}"
    else:
        key = f"{msg.to.tag}|{msg.from_.tag}|{msg.call_id}|{msg.cseq[0]}|{msg.ruri}|{via}|{target}"
    return _MAGIC + hashlib.blake2s(key.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


def forward_request(ctx: ScriptContext, dest: Destination | None = None) -> int:
    """Forward the request statelessly to ``dest`` (default: its Request-URI). 1 sent, -1 failed."""
    msg, runtime = ctx.msg, ctx.runtime
    try:
        if dest is None:
            if msg.uri.scheme not in ("sip", "sips"):     # RFC 3261 16.3 step 2: tel:, urn:, ...
                runtime.log(30, f"cannot forward {msg.method} to a {msg.uri.scheme}: URI")
                ctx.last_error = (416, "Unsupported URI Scheme")
                return -1
            dest = destination_of_uri(msg.uri)
        stamp_received(msg, ctx.rcv)
        sent_by, source = runtime.via_sent_by(dest.proto, dest, ctx.rcv)
        branch = stateless_branch(msg, f"{dest.proto.value}:{dest.host}:{dest.port}")
        via = f"SIP/2.0/{dest.proto.name} {sent_by};branch={branch}"
        if ctx.rcv.proto is not Proto.UDP and msg.top_via.rport is None:
            via += f";{CONN_PORT}={ctx.rcv.src_port}"
        msg.insert_via(via)
        data = msg.serialize()
        msg.remove_top_via()    # the request may be forwarded again (another branch) from the script
    except SIPError as e:   # the request's fault (a bad URI or Via), or ours (no socket for that transport)
        runtime.log(40, f"cannot forward {msg.method}: {e}")
        ctx.last_error = (400, "Bad Request-URI") if isinstance(e, RemoteSIPError) else (500, "Server Internal Error")
        return -1
    if runtime.send(ctx, dest, data, source):
        return 1
    ctx.last_error = SEND_FAILED     # what sl_reply_error() answers, as OpenSER did
    return -1


SEND_FAILED = (477, "Unfortunately error on sending to next hop occurred")

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
    if rcv.proto is not Proto.UDP:
        return Destination(rcv.proto, rcv.src_ip, rcv.src_port)
    via = msg.top_via
    if via.rport is not None or msg.rport_recorded:
        return Destination(Proto.UDP, rcv.src_ip, rcv.src_port)
    host = via.host if to_via else rcv.src_ip
    return Destination(Proto.UDP, host, via.port or 5060)


def reply_destination(via) -> Destination | None:
    """Where a response goes after our Via is removed: the next Via's received/rport or sent-by."""
    if via is None:
        return None
    proto = _TRANSPORTS.get(via.transport.lower(), Proto.UDP)
    rport = via.rport
    port = via.port if rport is None or rport is True else rport     # rport=N: the source port
    return Destination(proto, via.received or via.host, port)


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
    if conn_port and dest.proto is not Proto.UDP and conn_port.isdigit() and \
            runtime.connected(dest.proto, dest.host, int(conn_port)):
        dest = Destination(dest.proto, dest.host, int(conn_port))   # else a new one to the Via's port
    return 1 if runtime.send(ctx, dest, data) else -1
