"""A worker process: routes every message of the calls it owns.

It reads the shared UDP sockets, its TCP connections, the hand-off socket (messages other
workers received for calls it owns, bytes to write on connections it owns) and its channel from
the TCP supervisor (new connections). With call affinity (``call_affinity``), every message of a
call is processed by worker ``crc32(Call-ID) % N``; a message received elsewhere is handed to
that worker unparsed.

The worker is also the script's ``Runtime``: sending (UDP, TCP through the connection table),
the Via address of each transport, ``myself``, logging. Its TCP/TLS connections are handled by
the part in connections.py.
"""

from __future__ import annotations

import gc
import logging
import select
import socket
import time

from ..config.values import Proto
from ..script.forward import forward_reply, transport_failure
from ..modules.sl import send_reply, stateless_to_tag
from ..script.context import NOT_RECEIVED, Destination, ReceiveInfo, ScriptContext
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
from ..tls.domains import DomainTable, TLSConfigError
from ..tls.verify import canonical_host, identifies
from ..kernel import ipc
from .connections import CHANNEL_BACKLOG, StreamConnections
from .listeners import Listener
from ..kernel.logs import log
from ..kernel.loop import EventLoop
from ..kernel.process import become
from .resolver import UNKNOWN, Resolver, literal
from ..kernel.shm import Stat
from .tcp import TCPConnection

BOOT_FAILED = 3             # exit status of a worker that could not start: the master stops
UDP_BURST = 32              # datagrams read per wake-up
HANDOFF_BACKLOG = 20000     # hand-offs kept for a busy worker before they are dropped
GC_YOUNG = 20000            # allocations between collections of the youngest generation (CPython: 700)
EPOCH_WAIT = 2.0            # seconds a respawned worker waits for the supervisor's EPOCH at most
SOURCE_PENDING = "source.pyproxy.invalid"   # a Via sent-by to write in once DNS says where it goes
PENDING = object()          # send()'s source for a request whose Via names SOURCE_PENDING
PROTOS = {p.value: p for p in Proto}     # a hand-off's transport (a dict: Proto(value) costs more)
FROM_CTX = object()         # send_stream(): the TLS client domain named by the context's AVP now


def wants_affinity(config) -> bool:
    choice = config.settings.call_affinity
    if choice == "auto":
        return any(m.per_call_state for m in config.modules.values())
    return choice == "yes"


def tune_collector() -> None:
    """What the worker built to start lives as long as it does: out of the collector's sight. And
    a larger young generation: at CPython's default, a worker under load collects every 700
    allocations and walks the transactions of the last seconds again each time (stateful, 1,500
    calls/s: 0.3 s of each worker's 12 s; 0.05 s with this threshold). Cyclic garbage is still
    collected, later; tm's finished transactions make none (tests/tm/test_memory.py)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 10, 10)


class RateLimitedLog:
    """At most one line per second per kind; the rest are counted and summarised."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def __call__(self, kind: str, level: int, text: str) -> None:
        if self.allow(kind):
            more = self.suppressed.pop(kind, 0)
            log.log(level, text + (f" (and {more} more like it)" if more else ""))

    def allow(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self.last.get(kind, 0.0) < 1.0:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return False
        self.last[kind] = now
        return True


class Worker(StreamConnections):
    def __init__(self, index: int, count: int, config, listeners: list[Listener], shm, myself,
                 handoff_recv, handoff_send: list, channel, supervisor_local=None, tls=None, mi_reply=None,
                 incarnation: int = 0):
        self.index = index                  # 0-based; titles and logs say index + 1
        self.count = count
        self.affinity = count > 1 and wants_affinity(config)
        self.config = config
        self.settings = config.settings
        self.script = config.script
        self.listeners = listeners
        self.udp = {l.family: l for l in reversed(listeners) if l.proto is Proto.UDP}    # the first
        self.udp_at = {(l.host, l.port): l for l in listeners if l.proto is Proto.UDP}
        self.udp_on_host = {l.host: l for l in reversed(listeners) if l.proto is Proto.UDP and not l.wildcard}
        # transports whose sending socket (or its address) depends on the address DNS gives a name
        self.source_by_target = {proto for proto in Proto if _source_by_target(proto, listeners)}
        self.listener_cache: dict[tuple[Proto, int], Listener | None] = {}
        self.shm = shm
        self.is_myself = myself
        self.handoff_recv = handoff_recv
        self.handoff_reader = ipc.DatagramReader(handoff_recv) if handoff_recv is not None else None
        self.channel = channel
        self.local = supervisor_local       # fork=no: this process accepts TCP itself
        self.reply_to_via = self.settings.reply_to_via
        self.max_size = self.settings.max_message_size
        self.conns: dict[int, TCPConnection] = {}
        self.peers: dict[tuple[Proto, str, int], TCPConnection] = {}    # our connections by peer
        # hand-offs to each worker; a busy one's wait in order, up to HANDOFF_BACKLOG, not dropped
        self.next_conn = 0
        self.loop = EventLoop()
        self.handoffs = [ipc.Outbox(sock, self.loop, HANDOFF_BACKLOG,
                                    lambda payload, why, n=n: self.handoff_lost(n, why))
                         for n, sock in enumerate(handoff_send or ())]
        self.supervisor_outbox = ipc.Outbox(channel, self.loop, CHANNEL_BACKLOG, self.supervisor_unreachable) \
            if channel is not None else None
        self.resolver = Resolver(self.loop, [(d.host, d.port) for d in self.settings.dns_server])
        self.ratelog = RateLimitedLog()
        self.stats = shm.stats_of(index)
        self.source_cache: dict[str, str] = {}
        self.tls = tls                      # the DomainTable, or None when TLS is disabled
        self.mi_reply = mi_reply            # where answers to management commands go
        self.tls_avp = self.settings.tls_client_domain_avp
        self.router = MessageRouter(self.script)     # with the modules' hooks after fork (boot)
        # a respawned worker: connections on its channel before the supervisor's EPOCH were passed
        # to its predecessor, and the supervisor has forgotten them (as a fallback, it waits EPOCH_WAIT)
        self.incarnation = incarnation
        self.adopting = incarnation == 0

    # -- start ----------------------------------------------------------------------------------
    def run(self) -> None:
        self.boot()
        self.serve()

    def boot(self) -> None:
        """After fork, in the worker process: anything failing here is a failure to start."""
        become(f"worker {self.index + 1}", self.loop.stop)
        self.debug = log.isEnabledFor(logging.DEBUG)
        self.router = MessageRouter.for_process(self.config, self.index, self)
        self.register()
        tune_collector()
        log.debug("started")

    def serve(self) -> None:
        self.loop.run()
        for conn in list(self.conns.values()):
            self.close(conn, None)

    def register(self) -> None:
        loop = self.loop
        for listener in self.listeners:
            if listener.proto is Proto.UDP:
                loop.add_reader(listener.sock.fileno(), lambda l=listener: self.on_udp(l), exclusive=True)
            elif self.local is not None:
                loop.add_reader(listener.sock.fileno(), lambda l=listener: self.local.accept(l))
        if self.handoff_recv is not None:
            loop.add_reader(self.handoff_recv.fileno(), self.on_handoff)
        if self.channel is not None:
            loop.add_reader(self.channel.fileno(), self.on_channel)
        loop.call_later(1.0, self.tick)
        if not self.adopting:
            loop.call_later(EPOCH_WAIT, self.start_adopting)

    def start_adopting(self) -> None:
        self.adopting = True

    # -- input ----------------------------------------------------------------------------------
    def on_udp(self, listener: Listener) -> None:
        sock = listener.sock
        for _ in range(UDP_BURST):
            try:
                data, addr = sock.recvfrom(self.max_size + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.ratelog("udp", logging.WARNING, f"receiving on {listener}: {e.strerror}")
                return
            self.dispatch(data, ReceiveInfo(addr[0], addr[1], listener.host, listener.port, Proto.UDP))

    def dispatch(self, data: bytes, rcv: ReceiveInfo, msg=None) -> None:
        """Route a message here, or hand it to the worker that owns its call."""
        if self.affinity:
            call_id = ipc.call_id_of(data)
            if call_id is not None:
                owner = ipc.owner_of(call_id, self.count)
                if owner != self.index:
                    self.hand_off(owner, ipc.Handoff(rcv.proto.text, rcv.src_ip, rcv.src_port, rcv.dst_ip,
                                                     rcv.dst_port, rcv.conn_id or 0,
                                                     -1 if rcv.conn_owner is None else rcv.conn_owner, data,
                                                     rcv.tls))
                    return
        self.process(data, rcv, msg)

    def hand_off(self, worker: int, item: tuple) -> None:
        """Give a message (Handoff, SendOn) to another worker; see ``handoffs``."""
        self.stats.add(Stat.HANDOFFS_OUT)
        self.handoffs[worker].send(ipc.encode(item))

    def handoff_lost(self, worker: int, why: str) -> None:
        self.stats.add(Stat.DROPPED)
        self.ratelog("handoff", logging.ERROR, f"hand-off to worker {worker + 1} dropped: {why}")

    def on_handoff(self) -> None:
        reader = self.handoff_reader
        for _ in range(UDP_BURST):
            try:
                item = reader.read()
            except (BlockingIOError, InterruptedError):
                return
            self.stats.add(Stat.HANDOFFS_IN)
            kind = type(item)
            if kind is ipc.Handoff:
                rcv = ReceiveInfo(item.src_ip, item.src_port, item.dst_ip, item.dst_port, PROTOS[item.proto],
                                  item.conn_id or None, None if item.conn_owner < 0 else item.conn_owner, item.tls)
                self.process(item.data, rcv, None)
            elif kind is ipc.Control:
                self.on_control(item.request_id, item.command)
            elif kind is ipc.SendOn:
                conn_id, data, host = item
                conn = self.conns.get(conn_id)
                if conn is None or not self.carries(conn, host):
                    self.bounce(data, f"connection {conn_id:#x} is gone" if conn is None else
                                f"the certificate of tls:{conn.peer_ip}:{conn.peer_port} does not name {host}")
                    self.stats.add(Stat.SEND_ERRORS)
                elif not self.write_waiting(conn, data, host):
                    self.stats.add(Stat.SEND_ERRORS)

    # -- management commands (from the mi process) ---------------------------------------------
    def on_control(self, request_id: int, command: str) -> None:
        try:
            if command == "tls_list":
                result = [self.tls_entry(c) for c in self.conns.values() if c.pipe is not None]
            elif command == "tls_reload":
                result = self.reload_tls()
            else:
                result = {"error": f"unknown worker command {command}"}
        except Exception as e:      # the operator gets an answer, not a timeout
            log.exception(f"management command {command} failed")
            result = {"error": f"{command} failed in worker {self.index + 1}: {e}"}
        if self.mi_reply is not None:
            try:
                for datagram in ipc.answer_datagrams(request_id, self.index, result):
                    _send_within(self.mi_reply, datagram, 3.0)
            except OSError as e:
                log.warning(f"cannot answer the mi process: {e.strerror or e}")

    def tls_entry(self, conn: TCPConnection) -> dict:
        info = conn.tls_info or {}
        ssl_conn = conn.pipe.conn
        sni = ssl_conn.get_servername()
        return {"id": conn.conn_id, "worker": self.index + 1, "direction": "out" if conn.outbound else "in",
                "local": f"{conn.local_ip}:{conn.local_port}", "peer": f"{conn.peer_ip}:{conn.peer_port}",
                "domain": conn.domain.label if conn.domain is not None else None,
                "sni": sni.decode("ascii", "replace") if isinstance(sni, bytes) else sni,   # A-labels
                "established": conn.pipe.handshake_done, "version": info.get("version"),
                "cipher": info.get("cipher"), "peer_subject": info.get("subject"),
                "verified": bool(info.get("verified")), "age": round(time.monotonic() - conn.opened, 1)}

    def reload_tls(self) -> dict:
        """New handshakes use freshly read files; connections keep the context they started with."""
        if self.tls is None:
            return {"ok": False, "error": "TLS is disabled"}
        try:
            self.tls = DomainTable.build(self.settings, self.config.tls_domains, self.config.cfg_dir)
        except TLSConfigError as e:
            return {"ok": False, "error": "; ".join(e.messages)}
        log.info("TLS domains reloaded")
        return {"ok": True}

    # -- processing -----------------------------------------------------------------------------
    def process(self, data: bytes, rcv: ReceiveInfo, msg) -> None:
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
        is_request = isinstance(msg, Request)
        if self.debug:
            what = f"request {msg.method}" if is_request else f"reply {msg.status}"
            call_id = ipc.call_id_of(data)
            log.debug(f"processing {what} Call-ID {call_id.decode('utf-8', 'replace') if call_id else '-'} "
                      f"from {rcv.proto.text}:{rcv.src_ip}:{rcv.src_port}")
        try:
            msg.validate(deep=False)
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
            self.stats.add(Stat.REQUESTS_IN)
            if rcv.conn_id and "alias" in msg.top_via.params:
                self.learn_alias(rcv, msg.top_via)
            self.router.request(ctx)
        else:
            self.stats.add(Stat.REPLIES_IN)
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
            self.dispatch(reply, ReceiveInfo("0.0.0.0", 0, rcv.dst_ip, rcv.dst_port, rcv.proto), response)
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

    # -- the script's Runtime -------------------------------------------------------------------
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
            host = self.source_address(rcv.src_ip)
        return host_port(host, rcv.dst_port)

    def via_sent_by(self, proto: Proto, dest: Destination, rcv: ReceiveInfo) -> tuple[str, object]:
        """Our Via's sent-by for a request to ``dest``, and the socket that sends it. When that
        depends on the address of a name DNS has not answered for yet, SOURCE_PENDING and
        PENDING: send_later() writes the sent-by in once DNS has."""
        if proto in self.source_by_target:
            ip = self.known_ip(proto, dest)
            if ip is None:
                return SOURCE_PENDING, PENDING
            listener = self.source_for(proto, ip, rcv)
        else:
            ip, listener = None, self.listener_for(proto, dest.host)
        if listener is None:
            raise SIPError(f"no {proto.text} socket to send from")
        return self.sent_by(listener, ip), listener

    def source_for(self, proto: Proto, ip: str, rcv: ReceiveInfo) -> Listener | None:
        return self.udp_socket_for(ip, rcv) if proto is Proto.UDP and len(self.udp_at) > 1 else \
            self.listener_for(proto, ip)

    def sent_by(self, listener: Listener, ip: str | None) -> str:
        """host:port of ``listener`` in a Via; for a socket bound to every address, the local
        address that reaches ``ip``."""
        return host_port(self.source_address(ip), listener.port) if listener.wildcard else listener.host_port

    def known_ip(self, proto: Proto, dest: Destination) -> str | None:
        """The address ``dest`` goes to, if it is one or DNS has answered for it."""
        target = self.resolver.target(proto, dest.host, dest.port)
        return target[0] if isinstance(target, tuple) else None

    def udp_socket_for(self, ip: str, rcv: ReceiveInfo) -> Listener | None:
        """Of several UDP sockets, the one to send to ``ip`` from, as OpenSER chose it: with
        mhomed=yes the one bound to the address the kernel routes ``ip`` by; else the one the
        message came in on, if of the family of ``ip``; else the first of that family, else the
        first."""
        if self.settings.mhomed:
            found = self.udp_on_host.get(self.source_address(ip))
            if found is not None:
                return found
        found = self.udp_at.get((rcv.dst_ip, rcv.dst_port)) if rcv.proto is Proto.UDP else None
        if found is not None and (":" in found.host) == (":" in ip):
            return found
        return self.listener_for(Proto.UDP, ip)

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

    def source_address(self, ip: str) -> str:
        """The local address the kernel sends to ``ip`` from (for sockets bound to every address)."""
        cached = self.source_cache.get(ip)
        if cached is None:
            probe = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.connect((ip, 9))
                cached = probe.getsockname()[0]
            except OSError:
                cached = "127.0.0.1"
            finally:
                probe.close()
            if len(self.source_cache) > 1000:
                self.source_cache.clear()
            self.source_cache[ip] = cached
        return cached

    def send(self, ctx, dest: Destination, data: bytes, source=None) -> bool:
        """``source``: the socket our Via names (forwarded requests), or PENDING; else UDP picks
        one here."""
        rcv = ctx.rcv
        if rcv.conn_id and dest.proto is rcv.proto and dest.host == rcv.src_ip and dest.port == rcv.src_port:
            return self.count_sent(ctx, data, self.send_on(rcv.conn_id, rcv.conn_owner, data))
        target = self.resolver.target(dest.proto, dest.host, dest.port)
        if target is UNKNOWN:       # DNS answers later: send then (a request that cannot go hears 477)
            domain_name = self.client_domain_name(ctx)      # as the script left it at forward()
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
        if dest.proto is Proto.UDP:
            if source is None and len(self.udp_at) > 1:
                source = self.udp_socket_for(target[0], ctx.rcv)
            ok = self.send_udp(target[0], target[1], data, source)
        else:
            ok = self.send_stream(dest.proto, target[0], target[1], data, ctx, dest.host, domain_name, dest.port)
        return self.count_sent(ctx, data, ok)

    def count_sent(self, ctx, data: bytes, ok: bool) -> bool:
        if not ok:
            self.stats.add(Stat.SEND_ERRORS)
        elif not isinstance(ctx.msg, Request):
            self.stats.add(Stat.REPLIES_OUT)
        else:
            self.stats.add(Stat.LOCAL_REPLIES if data.startswith(b"SIP/2.0 ") else Stat.REQUESTS_OUT)
        return ok

    def connected(self, proto: Proto, ip: str, port: int) -> bool:
        """Whether a connection (ours or another worker's) reaches proto:ip:port now."""
        return (proto, ip, port) in self.peers or self.shm.lookup(proto, ip, port) is not None

    def send_on(self, conn_id: int, owner: int | None, data: bytes, host: str = "") -> bool:
        """``host``: the request's target, which the connection's certificate may have to name."""
        if owner is None or owner == self.index:
            conn = self.conns.get(conn_id)
            return conn is not None and self.carries(conn, host) and self.write_waiting(conn, data, host)
        self.hand_off(owner, ipc.SendOn(conn_id, data, host))
        return True

    def carries(self, conn: TCPConnection, host: str) -> bool:
        """RFC 5922 on reuse: a TLS connection opened by a domain that checks the server's name
        carries a request for another host only if its certificate names that host too. Until the
        handshake is done that is not known: the request waits, and handshake_complete() asks
        again."""
        domain = conn.domain
        if not host or not conn.outbound or domain is None or not domain.verify_hostname:
            return True
        if canonical_host(host) == canonical_host(conn.target) or conn.tls_info is None or \
                identifies(conn.tls_info, host):
            return True
        self.ratelog("reuse", logging.WARNING, f"not sending to {host} over tls:{conn.peer_ip}:{conn.peer_port}: "
                                               f"its certificate (checked for {conn.target}) does not name it "
                                               f"(RFC 5922)")
        return False

    def send_udp(self, ip: str, port: int, data: bytes, listener: Listener | None = None) -> bool:
        listener = listener or self.udp.get(socket.AF_INET6 if ":" in ip else socket.AF_INET) or \
            next(iter(self.udp.values()), None)
        if listener is None:
            self.ratelog("noudp", logging.ERROR, "no UDP socket to send from")
            return False
        try:
            listener.sock.sendto(data, (ip, port))
            return True
        except OSError as e:
            self.ratelog("udpsend", logging.WARNING, f"sending to udp:{ip}:{port}: {e.strerror}")
            return False

    def send_stream(self, proto: Proto, ip: str, port: int, data: bytes, ctx=None, host: str = "",
                    domain_name=FROM_CTX, dest_port: int | None = None, tried: tuple = (),
                    rcv: ReceiveInfo | None = None) -> bool:
        """``host`` and ``dest_port``: the destination as the script named it (the certificate
        must match the host; a request waiting on a new connection keeps both, the targets it
        ``tried``, to fail over to the next one, and where it came in, ``rcv`` or the context's,
        for a 477)."""
        if domain_name is FROM_CTX:
            domain_name = self.client_domain_name(ctx)
        named = bool(host) and literal(host) is None        # a target DNS chose: there may be another
        conn = self.peers.get((proto, ip, port))       # one of ours: no shared-table lookup needed
        if conn is None or not self.reusable(proto, self.domain_index(conn), domain_name, ip, port):
            found = self.shm.lookup(proto, ip, port)
            if found is not None and (found[1] != self.index or found[0] in self.conns) and \
                    self.reusable(proto, found[2], domain_name, ip, port):
                return self.send_on(found[0], found[1], data, host)
            conn = self.connect(proto, ip, port, host or ip, domain_name)
            if conn is None:
                tried = (*tried, (ip, port))
                if not named:
                    return False
                self.resolver.failed(proto, (ip, port))
                following = self.resolver.next_target(proto, host, dest_port, tried)
                return following is not None and self.send_stream(proto, *following, data, ctx, host,
                                                                  domain_name, dest_port, tried, rcv)
        if not self.carries(conn, host):
            return False
        return self.write_waiting(conn, data, host, (host, dest_port, domain_name) if named else None, tried,
                                  rcv or (ctx.rcv if ctx is not None else NOT_RECEIVED))

    def reusable(self, proto: Proto, opened_with: int, domain_name: str | None, ip: str, port: int) -> bool:
        """The seed reuses a connection whatever the client domain; tls_match_domain_on_reuse asks
        for a connection opened with the domain this request selects."""
        if proto is not Proto.TLS or self.tls is None:
            return True
        wanted = self.tls.client_domain(domain_name, ip, port)
        return not wanted.match_domain_on_reuse or opened_with == self.tls.index_of(wanted)

    def client_domain_name(self, ctx) -> str | None:
        """Example 1-13: the TLS client domain named by the tls_client_domain_avp AVP."""
        if not self.tls_avp or ctx is None:
            return None
        values = ctx.avps.get(self.tls_avp)
        return str(values[-1]) if values else None



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


def _send_within(sock: socket.socket, data: bytes, seconds: float) -> None:
    """send() on a non-blocking socket, waiting up to ``seconds`` for room (the mi process reads
    a long answer as it comes; a socket buffer capped by wmem_max holds one piece or two)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            sock.send(data)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError("the mi process did not read its answer in time") from None
            select.select([], [sock], [], 0.05)
