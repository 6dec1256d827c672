"""A worker's TCP and TLS connections: adoption (accepted ones come from the TCP supervisor,
outbound ones are opened here and announced to it), reading through the stream parser and, for
TLS, the memory-BIO pipe; writing with back-pressure, what one batch of events writes to a
connection leaving in one send at its end (over TLS, encrypted together); which connection
carries a request (reuse, RFC 5922 names, RFC 5923 aliases); timeouts; closing. Each connection
and its SSL object live here, in the worker that owns it, for the connection's whole life.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from ..config.values import NOTICE, TCP, TLS, Proto
from ..kernel import ipc
from ..kernel.logs import log
from ..kernel.shm import NO_DOMAIN, Stat
from ..script.context import NOT_RECEIVED, ReceiveInfo
from ..sip import MessageTooLarge, RemoteSIPError, Request
from ..tls.domains import DomainTable, TLSConfigError
from ..tls.pipe import TLSError, TLSPipe
from ..tls.verify import (canonical_host, certificate_names, identifies, matches_sip_domain, peer_summary,
                          verify_error)
from .resolver import literal
from .tcp import TCPConnection

CHANNEL_BURST = 32          # supervisor messages read per wake-up
CHANNEL_BACKLOG = 100_000   # messages for the supervisor kept while its channel is full
READ_PAUSE = 256 * 1024      # bytes queued to a peer above which its connection is not read
QUEUE_LIMIT = 4 * 1024 * 1024   # bytes queued to a peer above which it is closed
FROM_CTX = object()         # send_stream(): the TLS client domain named by the context's AVP now


def client_sni(domain, target: str | None) -> str | None:
    """The name an outbound TLS connection asks for: the domain's tls_server_name, else the host
    name it goes to, else (an address) the name of the client domain chosen by name."""
    named = domain.params.get("tls_server_name")
    if named:
        return named
    if target and literal(target) is None:
        return target
    return domain.name


class StreamTransport:
    """The connections (``conns``: connection id -> TCPConnection; ``peers``: ours by peer)."""

    def __init__(self, index: int, config, loop, resolver, stats, ratelog, shm, tls, channel, local,
                 incarnation: int) -> None:
        self.index = index
        self.config = config
        self.settings = config.settings
        self.loop = loop
        self.resolver = resolver
        self.stats = stats
        self.ratelog = ratelog
        self.shm = shm                      # the connection table every worker reads
        self.tls = tls                      # the DomainTable, or None when TLS is disabled
        self.tls_avp = self.settings.tls_client_domain_avp
        self.max_size = self.settings.max_message_size
        self.conns: dict[int, TCPConnection] = {}
        self.peers: dict[tuple[Proto, str, int], TCPConnection] = {}
        self.next_conn = 0
        self.channel = channel              # from and to the TCP supervisor
        self.local = local                  # fork=no: this process accepts TCP itself
        self.supervisor_outbox = ipc.Outbox(channel, loop, CHANNEL_BACKLOG, self.supervisor_unreachable) \
            if channel is not None else None
        # a respawned worker: connections on its channel before the supervisor's Epoch were passed
        # to its predecessor, and the supervisor has forgotten them (as a fallback, it waits EPOCH_WAIT)
        self.incarnation = incarnation
        self.adopting = incarnation == 0
        # connections written to during the event loop's current batch of events: what one batch
        # writes to a connection (the requests and replies of one read, the records a TLS read
        # produced) leaves in one send at its end, rather than one send per message
        self.corked: dict[TCPConnection, None] = {}
        loop.after_batch.append(self.send_corked)
        # wired by the Worker: where received messages go (the hand-off channel), who answers and
        # bounces requests (the proxy), and who reaches another worker's connection
        self.deliver = self.proxy = self.handoff = None

    def new_conn_id(self) -> int:
        self.next_conn += 1
        # the worker's number and this incarnation's pid: a respawned worker's ids never meet the
        # ones its predecessor registered and the supervisor may not have forgotten yet
        return ((self.index + 1) << 48) | ((os.getpid() & 0xFFFF) << 32) | (self.next_conn & 0xFFFFFFFF)

    def adopt(self, conn_id: int, sock: socket.socket, proto: Proto, peer: tuple, local: tuple,
              outbound: bool = False, connecting: bool = False, domain=None,
              target: str | None = None) -> TCPConnection | None:
        sock.setblocking(False)
        pipe = None
        if proto is Proto.TLS:
            if self.tls is None:
                sock.close()
                return None
            if domain is None:      # accepted: the socket it arrived on picks the server domain
                domain = self.tls.server_domain(local[0], local[1])
            pipe = TLSPipe(domain.context, server_side=not outbound,
                           server_name=client_sni(domain, target) if outbound else None)
        conn = TCPConnection(conn_id, sock, proto, peer, local, self.max_size, outbound, connecting, pipe)
        conn.domain, conn.target = domain, target
        self.conns[conn_id] = conn
        self.peers[(proto, conn.peer_ip, conn.peer_port)] = conn
        self.loop.add_reader(conn.fd, lambda: self.on_readable(conn))
        if connecting:
            self.loop.set_writer(conn.fd, lambda: self.on_writable(conn))
        elif pipe is not None and outbound:
            self.start_tls(conn)
        return conn

    def start_tls(self, conn: TCPConnection) -> None:
        try:
            conn.pipe.start()
        except TLSError as e:
            self.close(conn, f"TLS handshake failed: {e}", refused=True, failure=Stat.TLS_FAILED_PROTOCOL)
            return
        self.flush_tls(conn)

    def connect(self, proto: Proto, ip: str, port: int, host: str = "",
                domain_name: str | None = None) -> TCPConnection | None:
        domain = None
        if proto is Proto.TLS:
            if self.tls is None:
                self.ratelog("tls", logging.ERROR, f"cannot send to tls:{ip}:{port}: TLS is disabled "
                                                   f"(disable_tls=yes)")
                return None
            domain = self.tls.client_domain(domain_name, ip, port)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # (accepted ones: the listener's)
        try:
            sock.connect((ip, port))
            connecting = False
        except BlockingIOError:
            connecting = True
        except OSError as e:
            sock.close()
            self.ratelog("connect", logging.WARNING, f"cannot connect to tcp:{ip}:{port}: {e.strerror}")
            return None
        conn_id = self.new_conn_id()
        local = sock.getsockname()
        conn = self.adopt(conn_id, sock, proto, (ip, port), local, outbound=True, connecting=connecting,
                          domain=domain, target=host or ip)
        self.announce(conn)
        return conn

    def domain_index(self, conn: TCPConnection) -> int:
        """The client domain of a connection as the shared table records it (accepted: none)."""
        if conn.outbound and conn.domain is not None:
            return self.tls.index_of(conn.domain)
        return NO_DOMAIN

    def announce(self, conn: TCPConnection) -> None:
        """Tell the supervisor (or, in one-process mode, the table) who reaches this peer."""
        domain = self.domain_index(conn)
        if self.local is not None:
            self.local.learn(conn.conn_id, self.index, conn.proto, conn.peer_ip, conn.peer_port, domain)
        else:
            self.to_supervisor(ipc.Outbound(conn.conn_id, self.index, conn.proto.text, conn.peer_ip,
                                            conn.peer_port, domain))

    def learn_alias(self, rcv: ReceiveInfo, via) -> None:
        """RFC 5923: the sender asks us to reuse this connection for requests to its Via port.
        Over TLS only a peer whose verified certificate names its Via host may (RFC 5923 5.3):
        else anybody behind the same address could take the requests meant for that host."""
        port = via.port or rcv.proto.default_port
        if port == rcv.src_port:
            return
        if rcv.proto is Proto.TLS and not identifies(rcv.tls, via.host):
            self.ratelog("alias", logging.INFO, f"ignoring ;alias from {rcv.src_ip}:{rcv.src_port}: no verified "
                                                f"TLS certificate names {via.host}")
            return
        if self.local is not None:
            self.local.learn(rcv.conn_id, rcv.conn_owner, rcv.proto, rcv.src_ip, port)
        else:
            self.to_supervisor(ipc.Alias(rcv.conn_id, rcv.proto.text, rcv.src_ip, port))

    def to_supervisor(self, item: tuple) -> None:
        self.supervisor_outbox.send(ipc.encode(item))

    def supervisor_unreachable(self, payload: bytes, why: str) -> None:
        self.ratelog("channel", logging.ERROR, f"cannot reach the TCP supervisor: {why}")

    def on_channel(self) -> None:
        for _ in range(CHANNEL_BURST):
            try:
                payload, fd = ipc.receive_with_fd(self.channel, 4096)
            except (BlockingIOError, InterruptedError):
                return
            if not payload:
                self.loop.stop()        # the supervisor is gone: the master restarts us all
                return
            item = ipc.decode(payload)
            if type(item) is ipc.Epoch:
                if item.incarnation == self.incarnation:
                    self.start_adopting()
            elif fd is not None and self.adopting:         # a NewConn
                # family and type given: socket(fileno=) would ask the kernel for them (3 calls)
                family = socket.AF_INET6 if ":" in item.peer_ip else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
                self.adopt(item.conn_id, sock, Proto(item.proto), (item.peer_ip, item.peer_port),
                           (item.local_ip, item.local_port))
            else:       # not ours to keep (or its fd was lost: EMFILE)
                if fd is not None:
                    os.close(fd)
                self.to_supervisor(ipc.Closed(item.conn_id))

    def start_adopting(self) -> None:
        self.adopting = True

    def on_readable(self, conn: TCPConnection) -> None:
        if len(conn.out) > READ_PAUSE:     # the peer does not read our replies: read no more requests
            self.loop.add_reader(conn.fd, None)     # until they drain (on_writable)
            conn.reading_paused = True
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if conn.connecting:         # a refused connect shows here first, before on_writable
                self.close(conn, f"connect failed: {e.strerror}")
                return
            data = b""
        if not data:
            self.close(conn, None, peer_closed=True)
            return
        conn.last_active = time.monotonic()
        if conn.pipe is not None:
            data = self.decrypt(conn, data)
            if not data:
                return
        parser = conn.parser
        parser.feed(data)
        rcv = None
        while True:
            try:
                event = parser.next_event()
            except MessageTooLarge as e:
                self.refuse_oversize(conn, e)
                return
            except RemoteSIPError as e:
                self.close(conn, f"bad stream: {e.reason}")
                return
            if event is None:
                if conn.pipe is not None and conn.pipe.closed:     # the peer's close_notify came with it
                    self.close(conn, None)
                return
            if not hasattr(event, "raw"):       # a CRLF keep-alive (RFC 5626 3.5.1)
                if event.name == "PING":
                    self.write(conn, b"\r\n")
                continue
            if rcv is None:
                rcv = ReceiveInfo(conn.peer_ip, conn.peer_port, conn.local_ip, conn.local_port, conn.proto,
                                  conn.conn_id, self.index, conn.tls_info)
            self.deliver(event.raw, rcv, event)
            if conn.closed:
                return

    def decrypt(self, conn: TCPConnection, data: bytes) -> bytes:
        """Ciphertext in, plaintext out; finishes the handshake (and its checks) on the way."""
        pipe = conn.pipe
        was_done = pipe.handshake_done
        try:
            plain = pipe.receive(data)
        except TLSError as e:
            self.flush_tls(conn)        # the alert telling the peer why
            detail = verify_error(pipe.conn)    # OpenSSL's "certificate verify failed" says little
            reason = f"{e}: {detail}" if detail else str(e)
            self.close(conn, f"TLS handshake failed: {reason}{self.peer_subject(conn)}" if not was_done
                       else f"TLS error: {reason}", refused=not was_done,
                       failure=Stat.TLS_FAILED_VERIFY if detail else Stat.TLS_FAILED_PROTOCOL)
            return b""
        if pipe.handshake_done and not was_done and not self.handshake_complete(conn):
            return b""
        self.flush_tls(conn)
        if pipe.closed and not plain:   # else on_readable() closes once it has read what came first
            self.close(conn, None)
        return plain

    def handshake_complete(self, conn: TCPConnection) -> bool:
        """Record who the peer is; an outbound connection must reach the domain it was opened for."""
        conn.tls_info = summary = peer_summary(conn.pipe.conn)
        if conn.outbound:
            domain = conn.domain
            if domain.params.get("tls_verify_server") and domain.verify_hostname:
                cert = conn.pipe.conn.get_peer_certificate(as_cryptography=True)
                if cert is None or not matches_sip_domain(cert, conn.target):
                    self.close(conn, f"TLS server certificate does not match {conn.target} (RFC 5922)"
                                     f"{self.peer_subject(conn)}", refused=True, wrong_host=True,
                               failure=Stat.TLS_FAILED_VERIFY)
                    return False
        else:       # the domain SNI chose, as this table knows it (a reload may have replaced it since)
            conn.domain = domain = self.tls.domain_of_connection(conn.pipe.conn) or conn.domain
            if domain.params.get("tls_verify_client") and domain.params.get("tls_require_client_certificate") \
                    and not summary["verified"]:    # what OpenSSL checked, even for a resumed session
                self.close(conn, f"TLS client without a verified certificate, which {domain.label} requires"
                                 f"{self.peer_subject(conn)}", refused=True, failure=Stat.TLS_FAILED_VERIFY)
                return False
        conn.pipe.accept()
        self.stats.add(Stat.TLS_HANDSHAKES)
        waiting, conn.waiting = conn.waiting, []
        for data, host, _, _, rcv in waiting:   # now the certificate is known: may each go on it?
            if not self.carries(conn, host):
                self.proxy.bounce(data, f"the certificate of tls:{conn.peer_ip}:{conn.peer_port} does not "
                                  f"name {host}", rcv)
            elif not self.write(conn, data):
                self.proxy.bounce(data, f"writing to tls:{conn.peer_ip}:{conn.peer_port} failed", rcv)
        if self.proxy.debug:       # (the line is not even formatted otherwise: one per handshake)
            log.debug(f"TLS {summary.get('version')} with {conn.peer_ip}:{conn.peer_port}, "
                      f"{summary.get('cipher')}, peer {summary.get('subject') or '-'}")
        return True

    @staticmethod
    def peer_subject(conn: TCPConnection) -> str:
        """Whose certificate a refusal is about: subject and issuer of the one that failed
        verification (OpenSSL forgets a refused peer's certificate), else of the peer's."""
        names = certificate_names(conn.pipe.conn)
        return f"; {names}" if names else ""

    def flush_tls(self, conn: TCPConnection) -> None:
        out = conn.pipe.outgoing()
        if out:
            self.put(conn, out)

    def refuse_oversize(self, conn: TCPConnection, e) -> None:
        """Answer 513 when the head announced the size, then close: the stream cannot go on."""
        self.stats.add(Stat.BAD_MESSAGES)
        msg = e.message
        if isinstance(msg, Request) and msg.method != "ACK":
            rcv = ReceiveInfo(conn.peer_ip, conn.peer_port, conn.local_ip, conn.local_port, conn.proto,
                              conn.conn_id, self.index)
            self.proxy.reply(msg, rcv, 513, "Message Too Large", f"{e.reason} from {conn.peer_ip}")
            # let the reply reach the peer before the close (unread input would turn it into a RST)
            self.loop.remove(conn.fd)
            self.loop.call_later(1.0, lambda: self.close(conn, None))
            if conn.out:
                self.loop.set_writer(conn.fd, lambda: self.on_writable(conn))
            return
        self.close(conn, e.reason)

    def on_writable(self, conn: TCPConnection) -> None:
        if conn.connecting:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.close(conn, f"connect failed: {os.strerror(err)}")
                return
            conn.connecting = False
            if conn.pipe is not None:
                self.start_tls(conn)
                if conn.closed:
                    return
            else:
                conn.waiting = []       # the requests are on their way
        if not conn.flush():
            self.close(conn, "write failed")
            return
        if not conn.out:
            self.loop.set_writer(conn.fd, None)
        self.resume_reading(conn)

    def resume_reading(self, conn: TCPConnection) -> None:
        """Read a paused connection again once what waits for its peer is below READ_PAUSE."""
        if conn.reading_paused and len(conn.out) <= READ_PAUSE:
            conn.reading_paused = False
            self.loop.add_reader(conn.fd, lambda: self.on_readable(conn))

    def fail_over(self, conn: TCPConnection, why: str, unreachable: bool = True) -> None:
        """The requests a connection never carried go to their host's next DNS target, one this
        request has not tried (RFC 3263 4.3); with none left, their senders hear 477. An
        ``unreachable`` target is skipped by every request for a while."""
        if conn.outbound and unreachable:
            self.resolver.failed(conn.proto, (conn.peer_ip, conn.peer_port))
        for data, _, route, tried, rcv in conn.waiting:
            following = self.resolver.next_target(conn.proto, route[0], route[1], tried) if route else None
            if following is None or not self.send_stream(conn.proto, *following, data, None, route[0],
                                                         route[2], route[1], tried, rcv):
                self.proxy.bounce(data, why, rcv)

    def write_waiting(self, conn: TCPConnection, data: bytes, host: str = "", route: tuple | None = None,
                      tried: tuple = (), rcv: ReceiveInfo = NOT_RECEIVED) -> bool:
        """write(), keeping a request written before the connection is up (from this worker or
        handed over by another) with the host it is for (which a TLS server's certificate must
        name, checked when the handshake is done), where it was going (``route``: host, port and
        client domain as the script named them, None when only the address is known), the
        targets it tried and where it came in (``rcv``, when this worker received it). Its fate
        is the connection's then (sent, sent to the next target, or answered 477), so this says
        True. False: not sent, and nobody will answer."""
        if conn.closed:
            return False
        if conn.pipe is None and not conn.connecting:
            return self.put(conn, data)     # plain TCP, up: straight to its buffer
        if not conn.established and not data.startswith(b"SIP/2.0 "):
            conn.waiting.append((data, host, route, (*tried, (conn.peer_ip, conn.peer_port)), rcv))
            if conn.pipe is None:
                self.write(conn, data)      # kept in the output buffer until connected
            return True                     # TLS: written by handshake_complete()
        return self.write(conn, data)

    def write(self, conn: TCPConnection, data: bytes) -> bool:
        if conn.closed:
            return False
        if conn.pipe is not None:
            if self.loop.dispatching and conn.pipe.accepted:
                conn.pipe.later += data     # the batch's writes become one run of records (drain())
                self.corked[conn] = None
                return True
            try:
                conn.pipe.send(data)
            except TLSError as e:
                self.close(conn, f"TLS error: {e}")
                return False
            data = conn.pipe.outgoing()
            if not data:
                return True         # queued until the handshake is done
        return self.put(conn, data)

    def put(self, conn: TCPConnection, data: bytes) -> bool:
        """Send ``data`` on ``conn``: at the end of the event loop's batch of events when written
        inside one (send_corked), else now. What the kernel does not take waits in ``conn.out``."""
        if self.loop.dispatching and not conn.connecting:
            conn.out += data
            self.corked[conn] = None
            return True
        if not conn.write_now(data):
            self.close(conn, "write failed")
            return False
        return self.watch_queue(conn)

    def send_corked(self) -> None:
        if not self.corked:             # (most batches, over UDP)
            return
        corked, self.corked = self.corked, {}
        for conn in corked:
            if not conn.closed:
                failure = self.drain(conn)
                if failure:
                    self.close(conn, failure)
                elif self.watch_queue(conn):
                    # a batch's writes may have paused its reading, and the kernel took them all
                    # at once: no writable event will come to resume it
                    self.resume_reading(conn)

    def drain(self, conn: TCPConnection) -> str | None:
        """Send what this batch wrote to ``conn`` (over TLS, encrypted now); why that failed."""
        pipe = conn.pipe
        if pipe is not None and pipe.later:
            data, pipe.later = bytes(pipe.later), bytearray()
            try:
                pipe.send(data)
            except TLSError as e:
                return f"TLS error: {e}"
            conn.out += pipe.outgoing()
        if not conn.flush():
            return "write failed"
        conn.last_active = time.monotonic()
        return None

    def watch_queue(self, conn: TCPConnection) -> bool:
        """Bytes still queued: wait for the socket to take them, unless too many wait."""
        if conn.out:
            if len(conn.out) > QUEUE_LIMIT:
                self.close(conn, f"more than {QUEUE_LIMIT // 1024} KiB queued: the peer reads too slowly")
                return False
            self.loop.set_writer(conn.fd, lambda: self.on_writable(conn))
        return True

    def close(self, conn: TCPConnection, why: str | None, refused: bool = False, wrong_host: bool = False,
              failure: Stat = Stat.TLS_FAILED_OTHER, peer_closed: bool = False) -> None:
        """``refused``: a peer that failed TLS checks, logged apart from routine closes so that a
        flood of the ones cannot hide the others. ``wrong_host``: its certificate names another
        host, so the target may well serve other hosts: not marked as failing. ``failure``: the
        statistic a TLS handshake that ends here unfinished (or refused by our checks) counts under.
        ``peer_closed``: the peer ended (or reset) the stream without a close_notify: ours would
        reach no reader, only draw a reset (Kamailio and nginx send none then either)."""
        if conn.closed:
            return
        if conn in self.corked:         # what this batch wrote to it first (a last reply, a TLS alert)
            del self.corked[conn]
            if self.drain(conn):
                conn.out.clear()
        conn.closed = True
        if conn.pipe is not None and not conn.pipe.accepted and not conn.connecting:
            self.stats.add(failure)         # a TLS handshake begun that did not succeed
        if why:
            # a refusal shows at the default debug=2: the operator of a refused peer asks why
            self.ratelog("refused" if refused else "close", NOTICE if refused else logging.INFO,
                         f"closing {conn.proto.text} connection with {conn.peer_ip}:{conn.peer_port}: {why}")
        if conn.out and (conn.established or not conn.waiting):     # waiting ones fail over below
            self.ratelog("lost", logging.WARNING, f"{len(conn.out)} queued bytes to "
                                                  f"{conn.peer_ip}:{conn.peer_port} dropped")
        elif conn.pipe is not None and conn.pipe.handshake_done and not peer_closed:
            try:
                conn.sock.send(conn.pipe.shutdown())
            except OSError:
                pass
        if not conn.established and conn.waiting:
            self.fail_over(conn, f"to {conn.proto.text}:{conn.peer_ip}:{conn.peer_port}: "
                                 f"{why or 'closed by the peer before it was up'}", not wrong_host)
        conn.waiting = []
        self.loop.remove(conn.fd)
        try:
            conn.sock.close()
        except OSError:
            pass
        self.conns.pop(conn.conn_id, None)
        if self.peers.get((conn.proto, conn.peer_ip, conn.peer_port)) is conn:
            del self.peers[(conn.proto, conn.peer_ip, conn.peer_port)]
        self.stats.add(Stat.TCP_CLOSED)
        if self.local is not None:
            self.local.forget(conn.conn_id)
        else:
            self.to_supervisor(ipc.Closed(conn.conn_id))

    def tick(self) -> None:
        """Once a second: close idle connections and ones whose peer stopped reading."""
        now = time.monotonic()
        lifetime = self.settings.tcp_connection_lifetime
        send_timeout = self.settings.tcp_send_timeout
        handshake_timeout = self.settings.tls_handshake_timeout
        for conn in list(self.conns.values()):
            if conn.pipe is not None:
                send_timeout = self.settings.tls_send_timeout
                if not conn.pipe.handshake_done and now - conn.opened > handshake_timeout:
                    self.close(conn, f"TLS handshake not done in {handshake_timeout} s",
                               failure=Stat.TLS_FAILED_TIMEOUT)
                    continue
            else:
                send_timeout = self.settings.tcp_send_timeout
            if conn.connecting:
                if now - conn.last_active > send_timeout:
                    self.close(conn, "connect timed out")
            elif conn.stalled_since is not None and now - conn.stalled_since > send_timeout:
                self.close(conn, f"peer stopped reading for {send_timeout} s")
            elif now - conn.last_active > lifetime:
                self.close(conn, None)
        self.loop.call_later(1.0, self.tick)

    def connected(self, proto: Proto, ip: str, port: int) -> bool:
        """Whether a connection (ours or another worker's) reaches proto:ip:port now."""
        return (proto, ip, port) in self.peers or self.shm.lookup(proto, ip, port) is not None

    def send_on(self, conn_id: int, owner: int | None, data: bytes, host: str = "") -> bool:
        """``host``: the request's target, which the connection's certificate may have to name."""
        if owner is None or owner == self.index:
            conn = self.conns.get(conn_id)
            return conn is not None and self.carries(conn, host) and self.write_waiting(conn, data, host)
        self.handoff.hand_off(owner, ipc.SendOn(conn_id, data, host))
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

    def send_stream(self, proto: Proto, ip: str, port: int, data: bytes, ctx=None, host: str = "",
                    domain_name=FROM_CTX, dest_port: int | None = None, tried: tuple = (),
                    rcv: ReceiveInfo | None = None) -> bool:
        """``host`` and ``dest_port``: the destination as the script named it (the certificate
        must match the host; a request waiting on a new connection keeps both, the targets it
        ``tried``, to fail over to the next one, and where it came in, ``rcv`` or the context's,
        for a 477)."""
        conn = self.peers.get((proto, ip, port))       # one of ours: no shared-table lookup needed
        if proto is TCP:                    # plain TCP: no domain or certificate to choose by
            if conn is None:
                found = self.shm.lookup(proto, ip, port)
                if found is not None and found[1] != self.index:
                    return self.send_on(found[0], found[1], data)      # another worker's
            elif not conn.connecting and not conn.closed:
                return self.put(conn, data)
        if domain_name is FROM_CTX:
            domain_name = self.client_domain_name(ctx)
        named = bool(host) and literal(host) is None        # a target DNS chose: there may be another
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
        if proto is not TLS or self.tls is None:
            return True
        wanted = self.tls.client_domain(domain_name, ip, port)
        return not wanted.match_domain_on_reuse or opened_with == self.tls.index_of(wanted)

    def client_domain_name(self, ctx) -> str | None:
        """Example 1-13: the TLS client domain named by the tls_client_domain_avp AVP."""
        if not self.tls_avp or ctx is None:
            return None
        values = ctx.avps.get(self.tls_avp)
        return str(values[-1]) if values else None

    def tls_list(self) -> list[dict]:
        return [self.tls_entry(c) for c in self.conns.values() if c.pipe is not None]

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
            self.tls = DomainTable.build(self.settings, self.config.tls_domains, self.config.cfg_dir, serving=True)
        except TLSConfigError as e:
            return {"ok": False, "error": "; ".join(e.messages)}
        log.info("TLS domains reloaded")
        return {"ok": True}
