"""sl: stateless replies (OpenSER's sl module).

A stateless reply is made from the request alone (RFC 3261 8.2.6) and sent where RFC 3261
18.2.2 says; the To tag is a hash of the request, so a retransmitted request gets the same reply.
"""

from __future__ import annotations

import logging
import os

from ..script.forward import reply_destination_for_request, stamp_received
from ..script.exports import FixupError, Function, ModuleExports, RouteType
from ..script.fixups import status_code, text
from ..sip import SIPError, make_response


def stateless_to_tag(msg) -> str:
    # From the header lines as received, not their parsed values: a request is also answered (400)
    # when one of them is malformed, and a retransmission has the same lines.
    # hash(): SipHash keyed by the secret every worker inherits from the master, so a
    # retransmission gets the same tag from any worker of the server (and it costs a fifth of
    # blake2s's work). The tag only has to tell this request's replies from others'.
    key = b"|".join((msg.received_line("call-id"), msg.received_line("from"), msg.received_line("cseq"),
                     msg.received_line("via")))
    return "%016x" % (hash(key) & 0xFFFF_FFFF_FFFF_FFFF)


def send_reply(ctx, status: int, reason: str, extra_headers=(), sip_warning: bool = False) -> int:
    msg, runtime = ctx.msg, ctx.runtime
    if msg.method == "ACK":
        return -1           # an ACK is never answered
    try:
        if sip_warning:
            extra_headers = (*extra_headers, noisy_feedback(ctx))
        if ctx.tm is not None:  # a request with a transaction (tm) is answered through it
            answered = ctx.tm.reply(ctx, status, reason, extra_headers)
            if answered is not None:
                return answered
        stamp_received(msg, ctx.rcv)
        to_tag = stateless_to_tag(msg) if status > 100 and msg.to.tag is None else None
        data = make_response(msg, status, reason, to_tag=to_tag, headers=extra_headers)
        dest = reply_destination_for_request(msg, ctx.rcv, runtime.reply_to_via)
    except SIPError as e:
        # the request itself is malformed (no To, a bad Via): there is nothing to answer it with
        runtime.log(logging.INFO, f"cannot reply {status} to {msg.method}: {e}")
        return -1
    return 1 if runtime.send(ctx, dest, data) else -1


def noisy_feedback(ctx) -> tuple[str, str]:
    """sip_warning: OpenSER's Warning header (RFC 3261 20.43, code 392) saying who answered what."""
    msg, rcv = ctx.msg, ctx.rcv
    host = f"[{rcv.dst_ip}]" if ":" in rcv.dst_ip else rcv.dst_ip
    return ("Warning", f'392 {host}:{rcv.dst_port} "Noisy feedback tells: pid={os.getpid()} '
                       f'req_src_ip={rcv.src_ip} req_src_port={rcv.src_port} in_uri={msg.received_ruri} '
                       f'out_uri={msg.ruri} via_cnt=={len(msg.vias)}"')


def sl_send_reply(ctx, status, reason, headers, sip_warning):
    return send_reply(ctx, status, reason, headers, sip_warning)


def sl_reply_error(ctx, headers, sip_warning):
    status, reason = ctx.last_error or (500, "Server Internal Error")
    return send_reply(ctx, status, reason, headers, sip_warning)


def _server_headers(env) -> tuple:
    return server_headers(env.settings)


def server_headers(s) -> tuple:
    """The Server header of our own replies (server_signature, server_header)."""
    if not s.server_signature or not s.server_header:
        return ()
    name, sep, value = s.server_header.partition(":")
    return ((name.strip(), value.strip()),) if sep else ()


def _send_reply_fixup(args, env):
    reason = text(args[1], 1)
    if "\r" in reason or "\n" in reason:
        raise FixupError("argument 2 (the reason phrase) must not contain a line break", 1)
    return status_code(args[0], 0), reason, _server_headers(env), env.settings.sip_warning


EXPORTS = ModuleExports(
    name="sl",
    doc="Stateless replies.",
    functions=(
        Function("sl_send_reply", sl_send_reply, (2,), "Reply statelessly: sl_send_reply(code, reason).",
                 _send_reply_fixup, RouteType.REQUEST),
        Function("sl_reply_error", sl_reply_error, (0,),
                 "Reply statelessly with the status of the last error (500 when none).",
                 lambda args, env: (_server_headers(env), env.settings.sip_warning), RouteType.REQUEST),
    ),
)
