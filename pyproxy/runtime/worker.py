"""A worker process: routes every message of the calls it owns.

It is made of parts, each in its own module, that the worker puts together and wires:

- ``UDPTransport`` (udp.py): the shared UDP sockets, read here, and the one a datagram leaves by;
- ``StreamTransport`` (streams.py): this worker's TCP/TLS connections, accepted ones from the
  TCP supervisor's channel and ones it opens, with their TLS state;
- ``HandoffChannel`` (handoff.py): messages to and from the other workers (call affinity: every
  message of a call is processed by worker ``crc32(Call-ID) % N``), bytes for connections other
  workers own, and the mi process's commands;
- ``Proxy`` (proxy.py): the message path and the script's ``Runtime``: parse, validate, run the
  script with the modules' hooks, send.

Received messages go UDP/streams -> hand-off channel (to this worker or its owner) -> proxy; what
the proxy sends goes out through UDP or streams.
"""

from __future__ import annotations

import gc
import logging
import select
import socket
import time
from functools import partial

from ..assembly.reload import apply as apply_reload
from ..config.errors import ConfigErrors
from ..config.values import Proto
from ..kernel import ipc
from ..kernel.logs import RateLimitedLog, log
from ..kernel.loop import EventLoop
from ..kernel.process import become, keep_beating
from ..script.router import MessageRouter
from .handoff import HandoffChannel
from .listeners import Listener
from .proxy import Proxy
from .resolver import Resolver
from .streams import StreamTransport
from .udp import UDPTransport

BOOT_FAILED = 3             # exit status of a worker that could not start: the master stops
GC_YOUNG = 20000            # allocations between collections of the youngest generation (CPython: 700)
EPOCH_WAIT = 2.0            # seconds a respawned worker waits for the supervisor's Epoch at most


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


class Worker:
    def __init__(self, index: int, count: int, config, listeners: list[Listener], shm, myself,
                 handoff_recv, handoff_send: list, channel, supervisor_local=None, tls=None, mi_reply=None,
                 incarnation: int = 0):
        self.index = index                  # 0-based; titles and logs say index + 1
        self.config = config
        self.listeners = listeners
        self.local = supervisor_local       # fork=no: this process accepts TCP itself
        self.mi_reply = mi_reply            # where answers to management commands go
        self.shm = shm
        self.load_config = None             # the master's loader: a reload compiles the file again here
        self.loop = loop = EventLoop()
        self.stats = stats = shm.stats_of(index)
        ratelog = RateLimitedLog()
        resolver = Resolver(loop, [(d.host, d.port) for d in config.settings.dns_server])
        self.udp = UDPTransport(listeners, config.settings, ratelog)
        self.streams = StreamTransport(index, config, loop, resolver, stats, ratelog, shm, tls, channel,
                                       supervisor_local, incarnation)
        self.handoff = HandoffChannel(index, count, count > 1 and wants_affinity(config), handoff_recv,
                                      handoff_send, loop, stats, ratelog)
        self.proxy = Proxy(index, config, listeners, myself, loop, resolver, stats, ratelog)
        # what each part hands to the others
        # (without call affinity every message is routed where it arrived: no hop through dispatch)
        self.udp.deliver = self.streams.deliver = self.handoff.dispatch if self.handoff.affinity else \
            self.proxy.process
        self.streams.proxy, self.streams.handoff = self.proxy, self.handoff
        self.handoff.proxy, self.handoff.streams, self.handoff.on_control = self.proxy, self.streams, self.on_control
        self.proxy.udp, self.proxy.streams, self.proxy.handoff = self.udp, self.streams, self.handoff

    # -- start ----------------------------------------------------------------------------------
    def run(self) -> None:
        self.boot()
        self.serve()

    def boot(self) -> None:
        """After fork, in the worker process: anything failing here is a failure to start."""
        become(f"worker {self.index + 1}", self.loop.stop)
        self.proxy.debug = log.isEnabledFor(logging.DEBUG)
        self.proxy.router = MessageRouter.for_process(self.config, self.index, self.proxy)
        self.register()
        tune_collector()
        log.debug("started")

    def serve(self) -> None:
        self.loop.run()
        for conn in list(self.streams.conns.values()):
            self.streams.close(conn, None)

    def register(self) -> None:
        loop = self.loop
        for listener in self.listeners:
            if listener.proto is Proto.UDP:
                loop.add_reader(listener.sock.fileno(), partial(self.udp.on_readable, listener), exclusive=True)
            elif self.local is not None:
                loop.add_reader(listener.sock.fileno(), lambda l=listener: self.local.accept(l))
        if self.handoff.recv_sock is not None:
            loop.add_reader(self.handoff.recv_sock.fileno(), self.handoff.on_readable)
        if self.streams.channel is not None:
            loop.add_reader(self.streams.channel.fileno(), self.streams.on_channel)
        loop.call_later(1.0, self.streams.tick)
        keep_beating(loop, self.shm, self.index, self.config.settings.heartbeat_timeout, self.follow_level)
        if not self.streams.adopting:
            loop.call_later(EPOCH_WAIT, self.streams.start_adopting)

    def follow_level(self) -> None:
        """The ``debug`` MI command changed the log level: the proxy's debug flag follows."""
        self.proxy.debug = log.isEnabledFor(logging.DEBUG)

    # -- management commands (from the mi process) ---------------------------------------------
    def on_control(self, request_id: int, command: str) -> None:
        try:
            if command == "tls_list":
                result = self.streams.tls_list()
            elif command == "tls_reload":
                result = self.streams.reload_tls()
            elif command.startswith("reload "):
                result = self.reload(command.split()[1])
            else:
                result = {"error": f"unknown worker command {command}"}
        except Exception as e:      # the operator gets an answer, not a timeout
            log.exception(f"management command {command} failed")
            result = {"error": f"{command} failed in worker {self.index + 1}: {e}"}
        if self.mi_reply is not None and request_id:       # 0: the master's, unanswered
            try:
                for datagram in ipc.answer_datagrams(request_id, self.index, result):
                    _send_within(self.mi_reply, datagram, 3.0)
            except OSError as e:
                log.warning(f"cannot answer the mi process: {e.strerror or e}")

    def reload(self, digest: str) -> dict:
        """SIGHUP, passed on by the master once it checked the file: the same file, compiled here,
        swapped in place (see assembly/reload.py)."""
        if digest == self.config.digest:
            return {"ok": True}         # started after the master reloaded: it has this one
        try:
            new = self.load_config(self.config)
        except ConfigErrors as e:
            log.error(f"reload: the configuration no longer checks: {e.errors[0]}; the old one stays")
            return {"error": "config errors"}
        if new.digest != digest:
            log.error("reload: the configuration file changed after the master checked it; the old "
                      "one stays here (send SIGHUP again)")
            return {"error": "config changed"}
        apply_reload(self.config, new)
        self.proxy.router.script_changed()
        if self.streams.tls is not None:
            outcome = self.streams.reload_tls()
            if not outcome["ok"]:
                log.error(f"reload: TLS domains not rebuilt, the old ones stay: {outcome['error']}")
        log.info("configuration reloaded")
        return {"ok": True}


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
