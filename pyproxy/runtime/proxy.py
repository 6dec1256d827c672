"""A worker's message path, which is also the script's ``Runtime``: a message from its bytes
through validation and the script (with the modules' hooks, MessageRouter) to the bytes it sends;
where those go (DNS, the socket our Via names, UDP or a connection); our own answers to what
cannot be routed (400s, 477s).
"""

from __future__ import annotations

import logging
import socket
import time

from ..config.values import UDP, Proto
from ..kernel import ipc
from ..kernel.logs import log
from ..kernel.shm import Stat
from ..modules.sl import send_reply, stateless_to_tag
from ..script.context import NOT_RECEIVED, Destination, ReceiveInfo, ScriptContext
from ..script.forward import forward_reply, transport_failure
from ..script.router import MessageRouter
from ..sip import (
    MessageTooLarge,
    RemoteSIPError,
    Request,
    SIPError,
    make_response,
    parse_message,
    parse_without_content_length,
)
from ..sip.uri import host_port
from ..sip.validate import validate
from .listeners import Listener, source_address
from .resolver import UNKNOWN
from .streams import FROM_CTX

# the counts each message makes, as plain ints (Stat's members are looked up on their class)
_REQUESTS_IN, _REPLIES_IN, _REQUESTS_OUT, _REPLIES_OUT, _LOCAL_REPLIES, _SEND_ERRORS = map(int, (
    Stat.REQUESTS_IN, Stat.REPLIES_IN, Stat.REQUESTS_OUT, Stat.REPLIES_OUT, Stat.LOCAL_REPLIES,
    Stat.SEND_ERRORS))
SOURCE_PENDING = "source.pyproxy.invalid"   # a Via sent-by to write in once DNS says where it goes
PENDING = object()          # send()'s source for a request whose Via names SOURCE_PENDING


class Proxy:
    def __init__(self, index: int, config, listeners: list[Listener], myself, loop, resolver, stats,
                 ratelog) -> None:
        self.index = index
        self.config = config
        self.settings = config.settings
        self.listeners = listeners
        # transports whose sending socket (or its address) depends on the address DNS gives a name
        self.source_by_target = {proto for proto in Proto if _source_by_target(proto, listeners)}
        self.listener_cache: dict[tuple[Proto, int], Listener | None] = {}
        self.via_cache: dict[tuple[Proto, bool], tuple[str, Listener]] = {}    # see via_sent_by()
        self.is_myself = myself
        self.loop = loop
        self.resolver = resolver
        self.stats = stats          # tm counts its transactions here too
        self.counters = stats.counters      # the same, for the per-message counts (no call each)
        self.ratelog = ratelog
        self.reply_to_via = self.settings.reply_to_via
        self.max_size = self.settings.max_message_size
        self.debug = False
        self.router = MessageRouter(config.script)     # with the modules' hooks after fork (Worker.boot)
        # wired by the Worker: the transports, and the hand-off channel (a reply we make goes to
        # the worker that holds its transaction)
        self.udp = self.streams = self.handoff = None

    def process(self, data: bytes, rcv: ReceiveInfo, msg=None) -> None:
        """Route one message. A bug met on the way loses that message, never the worker."""
        try:
            self.route(data, rcv, msg)
        except Exception:
            self.stats.add(Stat.DROPPED)
            if self.ratelog.allow("crash"):
                log.exception(f"internal error on a message from {rcv.proto.text}:{rcv.src_ip}:"
                              f"{rcv.src_port}; message dropped")

    def route(self, data: bytes, rcv: ReceiveInfo, msg) -> None:
        if msg is None:
            try:
                msg = parse_message(data, self.max_size)
            except MessageTooLarge:
                self.answer_malformed(data, rcv, 513, "Message Too Large")
                return
            except RemoteSIPError as e:
                self.answer_malformed(data, rcv, e.status, e.reason)
                return
        is_request = msg.is_request
        if self.debug:
            what = f"request {msg.method}" if is_request else f"reply {msg.status}"
            call_id = ipc.call_id_of(data)
            log.debug(f"processing {what} Call-ID {call_id.decode('utf-8', 'replace') if call_id else '-'} "
                      f"from {rcv.proto.text}:{rcv.src_ip}:{rcv.src_port}")
        try:
            validate(msg, False)        # (Message.validate(deep=False), one call less per message)
        except RemoteSIPError as e:
            self.stats.add(Stat.BAD_MESSAGES)
            if is_request and msg.method != "ACK":
                self.reply(msg, rcv, e.status, _reason(e.status, e.reason),
                           f"bad request from {rcv.src_ip}: {e.reason}")
            else:
                self.ratelog("badreply", logging.INFO, f"dropping a malformed message from "
                                                       f"{rcv.src_ip}:{rcv.src_port}: {e.reason}")
            return
        ctx = ScriptContext(msg, rcv, self)
        if is_request:
            self.counters[_REQUESTS_IN] += 1
            if rcv.conn_id and "alias" in msg.top_via.params:
                self.streams.learn_alias(rcv, msg.top_via)
            self.router.request(ctx)
        else:
            self.counters[_REPLIES_IN] += 1
            self.router.reply(ctx)

    def answer_malformed(self, data: bytes, rcv: ReceiveInfo, status: int, reason: str) -> None:
        """A message that does not parse: answer it if enough of it is readable, else drop it."""
        self.stats.add(Stat.BAD_MESSAGES)
        text = f"bad message from {rcv.proto.text}:{rcv.src_ip}:{rcv.src_port}: {reason}"
        try:
            msg = parse_without_content_length(data)      # RFC 4475 ncl/mcl01: answer over UDP
        except SIPError:
            self.stats.add(Stat.DROPPED)
            self.ratelog("malformed", logging.INFO, text + " (dropped)")
            return
        if isinstance(msg, Request) and msg.method != "ACK":
            self.reply(msg, rcv, status, _reason(status, reason), text)
        else:
            self.stats.add(Stat.DROPPED)
            self.ratelog("malformed", logging.INFO, text + " (dropped)")

    def bounce(self, data: bytes, why: str, rcv: ReceiveInfo = NOT_RECEIVED) -> None:
        """A request we forwarded never left: a response is made from the forwarded bytes, as if
        from the next hop. A transaction's branch (tm) ends with it (503, naming why); the
        sender of a request forwarded statelessly hears 477 (it goes back along the Vias, without
        ours; from the socket the request came in on, ``rcv``, when known)."""
        try:
            request = parse_message(data)
            if not isinstance(request, Request) or request.method == "ACK":
                raise SIPError("not a request to answer")
            status, reason = transport_failure(request, why)
            reply = make_response(request, status, reason, to_tag=stateless_to_tag(request))
            response = parse_message(reply)
        except SIPError:
            self.ratelog("bounce", logging.INFO, f"a message could not be sent ({why}); dropped")
            return
        if self.router.reply_hooks:     # to the worker that holds its transaction, if it has one
            self.handoff.dispatch(reply, ReceiveInfo("0.0.0.0", 0, rcv.dst_ip, rcv.dst_port, rcv.proto), response)
            self.ratelog("bounce", logging.INFO, f"{request.method} {request.ruri} could not be sent ({why})")
            return
        answered = forward_reply(ScriptContext(response, rcv, self)) > 0
        self.ratelog("bounce", logging.INFO, f"{request.method} {request.ruri} could not be sent ({why}); "
                                             f"{'answered 477' if answered else 'its sender cannot be told'}")

    def reply(self, msg, rcv: ReceiveInfo, status: int, reason: str, why: str) -> None:
        if send_reply(ScriptContext(msg, rcv, self), status, reason) > 0:
            self.ratelog("reply", logging.INFO, f"{why}; answered {status}")
        else:
            self.stats.add(Stat.DROPPED)
            self.ratelog("reply", logging.INFO, f"{why}; dropped (no reply can be built)")

    def log(self, level: int, text: str) -> None:
        log.log(level, text)

    def call_later(self, delay: float, callback):
        return self.loop.call_later(delay, callback)

    now = staticmethod(time.monotonic)      # the clock call_later() counts by

    def received_on(self, rcv: ReceiveInfo) -> str:
        """host:port of the socket ``rcv`` came in on; on one bound to every address, the local
        address its sender reached."""
        host = rcv.dst_ip
        if host in ("0.0.0.0", "::"):
            host = source_address(rcv.src_ip)
        return host_port(host, rcv.dst_port)

    def via_sent_by(self, proto: Proto, dest: Destination, rcv: ReceiveInfo) -> tuple[str, object]:
        """Our Via's sent-by for a request to ``dest``, and the socket that sends it. When that
        depends on the address of a name DNS has not answered for yet, SOURCE_PENDING and
        PENDING: send_later() writes the sent-by in once DNS has."""
        if proto not in self.source_by_target:      # one socket of that transport and family
            key = (proto, ":" in dest.host)
            found = self.via_cache.get(key)
            if found is None:
                listener = self.listener_for(proto, dest.host)
                if listener is None:
                    raise SIPError(f"no {proto.text} socket to send from")
                found = self.via_cache[key] = listener.host_port, listener
            return found
        ip = self.known_ip(proto, dest)
        if ip is None:
            return SOURCE_PENDING, PENDING
        listener = self.source_for(proto, ip, rcv)
        if listener is None:
            raise SIPError(f"no {proto.text} socket to send from")
        return self.sent_by(listener, ip), listener

    def source_for(self, proto: Proto, ip: str, rcv: ReceiveInfo) -> Listener | None:
        return self.udp.socket_for(ip, rcv) if proto is UDP and self.udp.several else \
            self.listener_for(proto, ip)

    def sent_by(self, listener: Listener, ip: str | None) -> str:
        """host:port of ``listener`` in a Via; for a socket bound to every address, the local
        address that reaches ``ip``."""
        return host_port(source_address(ip), listener.port) if listener.wildcard else listener.host_port

    def known_ip(self, proto: Proto, dest: Destination) -> str | None:
        """The address ``dest`` goes to, if it is one or DNS has answered for it."""
        target = self.resolver.target(proto, dest.host, dest.port)
        return target[0] if isinstance(target, tuple) else None

    def listener_for(self, proto: Proto, host: str) -> Listener | None:
        """The first socket of that transport and of the address family of ``host``, else the
        first of that transport."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        found = self.listener_cache.get((proto, family), False)
        if found is False:
            candidates = [l for l in self.listeners if l.proto is proto]
            found = next((l for l in candidates if l.family == family), candidates[0] if candidates else None)
            self.listener_cache[(proto, family)] = found
        return found

    def send(self, ctx, dest: Destination, data: bytes, source=None) -> bool:
        """``source``: the socket our Via names (forwarded requests), or PENDING; else UDP picks
        one here."""
        rcv = ctx.rcv
        if rcv.conn_id and dest.proto is rcv.proto and dest.host == rcv.src_ip and dest.port == rcv.src_port:
            return self.count_sent(ctx, data, self.streams.send_on(rcv.conn_id, rcv.conn_owner, data))
        target = self.resolver.target(dest.proto, dest.host, dest.port)
        if target is UNKNOWN:       # DNS answers later: send then (a request that cannot go hears 477)
            domain_name = self.streams.client_domain_name(ctx)      # as the script left it at forward()
            self.resolver.resolve(dest.proto, dest.host, dest.port,
                                  lambda found, why: self.send_later(ctx, dest, data, found, why, domain_name,
                                                                     source))
            return True
        if source is PENDING:
            data, source = self.write_sent_by(ctx, dest, data, target)
        return self.send_to(ctx, dest, data, target, source=source)

    def send_later(self, ctx, dest: Destination, data: bytes, target, why: str, domain_name, source) -> None:
        if source is PENDING:
            data, source = self.write_sent_by(ctx, dest, data, target)
        if not self.send_to(ctx, dest, data, target, domain_name, source):
            self.bounce(data, f"cannot resolve {dest.host}: {why}" if target is None else
                        f"sending to {target[0]}:{target[1]} failed", ctx.rcv)

    def write_sent_by(self, ctx, dest: Destination, data: bytes, target) -> tuple[bytes, Listener | None]:
        """Our Via (the first Via line: forward_request() puts it on top) with the sent-by of the
        socket that sends to ``target``; without a target, of any socket, for our own 477."""
        source = self.source_for(dest.proto, target[0] if target else "", ctx.rcv)
        if source is None:
            return data, None
        ours = f"\r\nVia: SIP/2.0/{dest.proto.token} {SOURCE_PENDING};".encode()
        sent_by = self.sent_by(source, target[0] if target else "127.0.0.1")
        data = data.replace(ours, f"\r\nVia: SIP/2.0/{dest.proto.token} {sent_by};".encode(), 1)
        # and the Record-Route value naming that socket (rr), written before it was known
        return data.replace(f"<sip:{SOURCE_PENDING};".encode(), f"<sip:{sent_by};".encode(), 1), source

    def send_to(self, ctx, dest: Destination, data: bytes, target, domain_name=FROM_CTX,
                source: Listener | None = None) -> bool:
        if target is None:
            self.ratelog("dns", logging.WARNING, f"cannot resolve {dest.proto.text}:{dest.host}: "
                                                 f"{self.resolver.why(dest.proto, dest.host, dest.port)}")
            return self.count_sent(ctx, data, False)
        if dest.proto is UDP:
            if source is None and self.udp.several:
                source = self.udp.socket_for(target[0], ctx.rcv)
            ok = self.udp.send(target[0], target[1], data, source)
        else:
            ok = self.streams.send_stream(dest.proto, target[0], target[1], data, ctx, dest.host, domain_name, dest.port)
        return self.count_sent(ctx, data, ok)

    def count_sent(self, ctx, data: bytes, ok: bool) -> bool:
        if not ok:
            self.counters[_SEND_ERRORS] += 1
        elif not isinstance(ctx.msg, Request):
            self.counters[_REPLIES_OUT] += 1
        else:
            self.counters[_LOCAL_REPLIES if data.startswith(b"SIP/2.0 ") else _REQUESTS_OUT] += 1
        return ok

    def connected(self, proto: Proto, ip: str, port: int) -> bool:
        return self.streams.connected(proto, ip, port)


_REASONS = {400: "Bad Request", 413: "Request Entity Too Large", 416: "Unsupported URI Scheme",
            420: "Bad Extension", 483: "Too Many Hops", 500: "Server Internal Error",
            501: "Not Implemented", 505: "Version Not Supported", 513: "Message Too Large"}


def _reason(status: int, detail: str) -> str:
    """The reason phrase of our answer to a bad request, with what is wrong with it (as
    Kamailio's sanity module says it): the sender's developer reads it there, not in our log."""
    phrase, detail = _REASONS.get(status, "Bad Request"), "".join(c for c in detail if c.isprintable())[:80]
    return f"{phrase} ({detail})" if detail else phrase


def _source_by_target(proto: Proto, listeners) -> bool:
    """Whether which socket sends over ``proto`` (or the address it names) depends on the
    destination's address: several UDP sockets, a socket bound to every address, or sockets of
    both families."""
    mine = [l for l in listeners if l.proto is proto]
    return (proto is Proto.UDP and len(mine) > 1) or any(l.wildcard for l in mine) or \
        len({l.family for l in mine}) > 1
