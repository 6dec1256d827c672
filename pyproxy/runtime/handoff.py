"""The hand-off channel between workers (call affinity): a message goes to the worker that owns
its call, ``crc32(Call-ID) % N``, unparsed with how it came in (ipc.Handoff); bytes for a
TCP/TLS connection go to the worker that owns the connection (ipc.SendOn). What one batch of
events hands to a worker goes in one datagram at its end (ipc.Batch). The mi process asks
its management commands on the same socket (ipc.Control)."""

from __future__ import annotations

import logging

from ..config.values import Proto
from ..kernel import ipc
from ..kernel.shm import Stat
from ..script.context import ReceiveInfo

HANDOFF_BURST = 32          # hand-off datagrams read per wake-up
HANDOFF_BATCH = 32          # hand-offs to one worker that one datagram carries at most
HANDOFF_BATCH_BYTES = 128 * 1024   # and bytes, well below what a reader takes (ipc.MAX_DATAGRAM)
HANDOFF_BACKLOG = 20000     # hand-offs kept for a busy worker before they are dropped
PROTOS = {p.text: p for p in Proto}     # a hand-off's transport (a dict: Proto(value) costs more)
_OUT, _IN = int(Stat.HANDOFFS_OUT), int(Stat.HANDOFFS_IN)     # counted once per message: plain ints


class HandoffChannel:
    def __init__(self, index: int, count: int, affinity: bool, recv_sock, send_socks: list, loop, stats,
                 ratelog) -> None:
        self.index = index
        self.count = count
        self.affinity = affinity    # every message of a call to its owner (call_affinity)
        self.recv_sock = recv_sock
        self.reader = ipc.DatagramReader(recv_sock) if recv_sock is not None else None
        self.outboxes = [ipc.Outbox(sock, loop, HANDOFF_BACKLOG,
                                    lambda payload, why, n=n: self.handoff_lost(n, payload, why))
                         for n, sock in enumerate(send_socks or ())]
        # what the event loop's current batch of events hands to each worker: one datagram at its
        # end (send_batches) rather than one per message, and one wake-up of that worker
        self.loop = loop
        self.batches: dict[int, list[bytes]] = {}
        self.batch_bytes: dict[int, int] = {}      # the size of each worker's batch so far
        loop.after_batch.append(self.send_batches)
        self.stats = stats
        self.counters = stats.counters
        self.ratelog = ratelog
        # wired by the Worker: where messages and connection bytes go, and management commands
        self.proxy = self.streams = self.on_control = None

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
        self.proxy.process(data, rcv, msg)

    def hand_off(self, worker: int, item: tuple) -> None:
        """Give a message (Handoff, SendOn) to another worker, at the end of this batch of events
        when inside one; one that is busy gets it later, in order (its Outbox keeps up to
        HANDOFF_BACKLOG datagrams), rather than never."""
        self.counters[_OUT] += 1
        payload = ipc.encode(item)
        if not self.loop.dispatching:
            self.outboxes[worker].send(payload)
            return
        batch = self.batches.get(worker)
        if batch and self.batch_bytes[worker] + len(payload) > HANDOFF_BATCH_BYTES:
            self.send_batch(worker)
            batch = None
        if batch is None:
            batch = self.batches[worker] = []
            self.batch_bytes[worker] = 0
        batch.append(payload)
        self.batch_bytes[worker] += len(payload)
        if len(batch) >= HANDOFF_BATCH:
            self.send_batch(worker)

    def send_batches(self) -> None:
        if self.batches:
            for worker in list(self.batches):
                self.send_batch(worker)

    def send_batch(self, worker: int) -> None:
        payloads = self.batches.pop(worker)
        self.outboxes[worker].send(payloads[0] if len(payloads) == 1 else ipc.encode(ipc.Batch(payloads)))

    def handoff_lost(self, worker: int, payload: bytes, why: str) -> None:
        item = ipc.decode(payload)
        self.stats.add(Stat.DROPPED, len(item.items) if type(item) is ipc.Batch else 1)
        self.ratelog("handoff", logging.ERROR, f"hand-off to worker {worker + 1} dropped: {why}")

    def on_readable(self) -> None:
        reader = self.reader
        for _ in range(HANDOFF_BURST):
            try:
                item = reader.read()
            except (BlockingIOError, InterruptedError):
                return
            if type(item) is ipc.Batch:
                for payload in item.items:
                    self.receive(ipc.decode(payload))
            else:
                self.receive(item)

    def receive(self, item: tuple) -> None:
        self.counters[_IN] += 1
        kind = type(item)
        if kind is ipc.Handoff:
            rcv = ReceiveInfo(item.src_ip, item.src_port, item.dst_ip, item.dst_port, PROTOS[item.proto],
                              item.conn_id or None, None if item.conn_owner < 0 else item.conn_owner, item.tls)
            self.proxy.process(item.data, rcv, None)
        elif kind is ipc.Control:
            self.on_control(item.request_id, item.command)
        elif kind is ipc.SendOn:
            conn_id, data, host = item
            conn = self.streams.conns.get(conn_id)
            if conn is None or not self.streams.carries(conn, host):
                self.proxy.bounce(data, f"connection {conn_id:#x} is gone" if conn is None else
                                  f"the certificate of tls:{conn.peer_ip}:{conn.peer_port} does not name {host}")
                self.stats.add(Stat.SEND_ERRORS)
            elif not self.streams.write_waiting(conn, data, host):
                self.stats.add(Stat.SEND_ERRORS)
