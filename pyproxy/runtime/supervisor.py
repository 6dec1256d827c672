"""The TCP supervisor ("tcp main"): accepts TCP connections and gives each to a worker.

It applies ``tcp_max_connections``, picks the worker with the fewest connections, and passes the
accepted socket with SCM_RIGHTS (the worker owns it from then on). It alone writes the connection
table in shared memory, from what it accepts and what workers report (connections they opened,
closed, aliases), so that any worker can find which connection reaches an address. When a worker
dies the master tells it, and the dead worker's entries are dropped.

``LocalSupervisor`` does the same inside the single process of ``fork=no``.
"""

from __future__ import annotations

import os
import socket

from ..config.values import Proto
from ..kernel import ipc
from ..kernel.logs import log
from ..kernel.loop import EventLoop
from ..kernel.process import become, keep_beating
from ..kernel.shm import NO_DOMAIN, OutOfSharedMemory, Stat

ACCEPT_BURST = 64
HANDOVER_BACKLOG = 10_000   # accepted connections kept for a worker whose channel is full


class ConnectionTable:
    """The writer's side of the shared connection table, with each connection's keys."""

    def __init__(self, shm, max_connections: int):
        self.shm = shm
        self.max_connections = max_connections
        self.conns: dict[int, tuple[int, list]] = {}     # conn_id -> (owner, [(proto, ip, port)])
        self.per_worker: dict[int, int] = {}
        self.out_of_memory = 0      # entries refused so: logged the first time and every 100th

    def full(self) -> bool:
        return len(self.conns) >= self.max_connections

    def add(self, conn_id: int, owner: int, proto: Proto, ip: str, port: int, domain: int = NO_DOMAIN) -> bool:
        try:
            self.shm.insert(proto, ip, port, conn_id, owner, domain)
        except OutOfSharedMemory as e:
            self.out_of_memory += 1
            if self.out_of_memory % 100 == 1:
                log.error(f"{e} ({self.out_of_memory} refused so far; -m sets its size)")
            return False
        if conn_id not in self.conns:
            self.conns[conn_id] = (owner, [])
            self.per_worker[owner] = self.per_worker.get(owner, 0) + 1
        self.conns[conn_id][1].append((proto, ip, port))
        return True

    def forget(self, conn_id: int) -> None:
        entry = self.conns.pop(conn_id, None)
        if entry is None:
            return
        owner, keys = entry
        self.per_worker[owner] -= 1
        for proto, ip, port in keys:
            self.shm.remove(proto, ip, port, conn_id)

    def forget_owner(self, owner: int) -> int:
        gone = [conn_id for conn_id, (o, _) in self.conns.items() if o == owner]
        for conn_id in gone:
            self.forget(conn_id)
        return len(gone)


def accepted(listener, on_error):
    """The connections waiting on a listening socket, (descriptor, peer address), a bounded number
    per wake-up. (Descriptors: the supervisor only passes them on, and a socket object checks its
    descriptor with a system call when made.)"""
    for _ in range(ACCEPT_BURST):
        try:
            yield listener.sock._accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            on_error(listener, e)
            return


def _peer(addr) -> tuple[str, int]:
    return addr[0], addr[1]


def _as_socket(fd: int, listener) -> socket.socket:
    return socket.socket(listener.family, socket.SOCK_STREAM, 0, fd)


def _local_address(fd: int, listener) -> tuple:
    """The address a connection to a wildcard listener came in on."""
    sock = _as_socket(fd, listener)
    try:
        return sock.getsockname()
    finally:
        sock.detach()


class Supervisor:
    def __init__(self, listeners, channels: list, master_channel, shm, settings, process_index: int):
        self.listeners = [l for l in listeners if l.proto is not Proto.UDP]
        self.channels = channels                  # supervisor ends, one per worker
        self.master_channel = master_channel
        self.table = ConnectionTable(shm, settings.tcp_max_connections)
        self.stats = shm.stats_of(process_index)
        self.shm, self.slot, self.settings = shm, process_index, settings
        self.loop = EventLoop()
        self.outboxes = [ipc.Outbox(channel, self.loop, HANDOVER_BACKLOG,
                                    lambda payload, why, i=index: self.not_passed(i, payload, why))
                         for index, channel in enumerate(channels)]
        self.next_id = 0
        self.refused = 0
        self.accept_errors = 0

    def run(self) -> None:
        become("tcp main", self.loop.stop)
        for listener in self.listeners:
            self.loop.add_reader(listener.sock.fileno(), lambda l=listener: self.accept(l))
        for index, channel in enumerate(self.channels):
            self.loop.add_reader(channel.fileno(), lambda i=index: self.on_worker(i))
        self.loop.add_reader(self.master_channel.fileno(), self.on_master)
        keep_beating(self.loop, self.shm, self.slot, self.settings.heartbeat_timeout)
        self.loop.run()

    def accept(self, listener) -> None:
        for fd, addr in accepted(listener, self.cannot_accept):
            self.hand_to_worker(fd, addr, listener)

    def cannot_accept(self, listener, error: OSError) -> None:
        """Out of descriptors (EMFILE): the listener stays readable, so it rests a second instead
        of spinning, and the log says so once a second at most."""
        self.accept_errors += 1
        if self.accept_errors % 1000 == 1:
            log.warning(f"accept on {listener}: {error.strerror} ({self.accept_errors} so far; "
                        "open_files_limit raises the limit)")
        fd = listener.sock.fileno()
        self.loop.add_reader(fd, None)
        self.loop.call_later(1.0, lambda: self.loop.add_reader(fd, lambda: self.accept(listener)))

    def hand_to_worker(self, fd: int, addr, listener) -> None:
        peer_ip, peer_port = _peer(addr)
        if self.table.full():
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning(f"tcp_max_connections ({self.table.max_connections}) reached: refused "
                            f"{peer_ip}:{peer_port} ({self.refused} refused so far)")
            os.close(fd)
            return
        worker = min(range(len(self.channels)), key=lambda i: self.table.per_worker.get(i, 0))
        self.next_id += 1
        conn_id = self.next_id
        if not self.table.add(conn_id, worker, listener.proto, peer_ip, peer_port):
            os.close(fd)
            return
        local = _local_address(fd, listener) if listener.wildcard else (listener.host, listener.port)
        item = ipc.NewConn(conn_id, listener.proto.text, peer_ip, peer_port, local[0], local[1])
        self.outboxes[worker].send(ipc.encode(item), fd)     # waits there while the worker is busy
        self.stats.add(Stat.TCP_ACCEPTED)

    def not_passed(self, worker: int, payload: bytes, why: str) -> None:
        item = ipc.decode(payload)
        if type(item) is ipc.Epoch:
            log.warning(f"cannot tell worker {worker + 1} where its connections start: {why}")
            return
        log.error(f"cannot pass the connection from {item.peer_ip}:{item.peer_port} to worker {worker + 1}: {why}")
        self.table.forget(item.conn_id)

    def on_worker(self, index: int) -> None:
        channel = self.channels[index]
        for _ in range(ACCEPT_BURST):
            try:
                payload = channel.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if not payload:
                return
            item = ipc.decode(payload)
            kind = type(item)
            if kind is ipc.Closed:
                self.table.forget(item.conn_id)
            elif kind is ipc.Outbound:
                self.table.add(item.conn_id, item.owner, Proto(item.proto), item.peer_ip, item.peer_port,
                               item.domain)
            elif kind is ipc.Alias:
                owner = self.table.conns.get(item.conn_id, (None,))[0]
                if owner is not None:
                    self.table.add(item.conn_id, owner, Proto(item.proto), item.ip, item.port)

    def on_master(self) -> None:
        try:
            payload = self.master_channel.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        if not payload:
            self.loop.stop()
            return
        item = ipc.decode(payload)
        if type(item) is ipc.WorkerDied:
            index, incarnation = item
            dropped = self.table.forget_owner(index)
            log.info(f"worker {index + 1} died: forgot its {dropped} connection(s)")
            # connections passed before this (queued ones too) were the dead worker's: its successor
            # closes them
            self.outboxes[index].send(ipc.encode(ipc.Epoch(incarnation)))


class LocalSupervisor:
    """fork=no: the one process accepts, owns and tracks every connection itself."""

    def __init__(self, shm, settings):
        self.table = ConnectionTable(shm, settings.tcp_max_connections)
        self.streams = None     # the one process's StreamTransport, once it is made
        self.next_id = 0

    def accept(self, listener) -> None:
        for fd, addr in accepted(listener, lambda l, e: log.warning(f"accept on {l}: {e.strerror}")):
            peer_ip, peer_port = _peer(addr)
            self.next_id += 1
            sock = _as_socket(fd, listener)
            if self.table.full() or not self.table.add(self.next_id, 0, listener.proto, peer_ip, peer_port):
                log.warning(f"refused {peer_ip}:{peer_port}: tcp_max_connections reached")
                sock.close()
                continue
            self.streams.stats.add(Stat.TCP_ACCEPTED)
            self.streams.adopt(self.next_id, sock, listener.proto, (peer_ip, peer_port), sock.getsockname())

    def learn(self, conn_id: int, owner: int, proto: Proto, ip: str, port: int, domain: int = NO_DOMAIN) -> None:
        self.table.add(conn_id, owner, proto, ip, port, domain)

    def forget(self, conn_id: int) -> None:
        self.table.forget(conn_id)
