"""The shared memory segment (``-m MB``): what pyproxy's processes share.

One anonymous MAP_SHARED mapping made by the master before it forks, holding:

- the run-time log level (``debug`` MI command): the mi process writes it, every process follows;
- one heartbeat per process: the time its loop last turned, which the master watches;
- one statistics slot per process (each process writes only its own: no locks);
- the TCP/TLS connection table: an open-addressing hash table keyed by (proto, address, port)
  that the TCP supervisor alone writes and every worker reads, each slot guarded by a sequence
  counter (a seqlock: odd while being written), so a reader never sees half an entry.

When the table or the segment is full a new entry is refused and "out of shared memory" is
logged, as OpenSER did: never unbounded growth.
"""

from __future__ import annotations

import enum
import mmap
import os
import socket
import struct
import zlib

from ..config.values import Proto

# --- statistics ---------------------------------------------------------------------------------


class Stat(enum.IntEnum):
    REQUESTS_IN = 0
    REPLIES_IN = 1
    REQUESTS_OUT = 2
    REPLIES_OUT = 3
    LOCAL_REPLIES = 4
    BAD_MESSAGES = 5
    DROPPED = 6
    HANDOFFS_OUT = 7
    HANDOFFS_IN = 8
    TCP_ACCEPTED = 9
    TCP_CLOSED = 10
    SEND_ERRORS = 11
    # tm (OpenSER's tm statistics): transactions by final status class, branches, replies
    TM_TRANSACTIONS = 12        # server (UAS) transactions made
    TM_INUSE = 13               # server transactions alive now (a gauge)
    TM_BRANCHES = 14            # client (UAC) transactions made
    TM_2XX = 15
    TM_3XX = 16
    TM_4XX = 17
    TM_5XX = 18
    TM_6XX = 19
    TM_REPLIES_IN = 20          # replies that found their transaction
    TM_RELAYED_REPLIES = 21
    TM_LOCAL_REPLIES = 22       # final replies made here (t_reply, timeouts, errors)
    # TLS handshakes (a worker's, inbound and outbound): done and passed our checks, or why not
    TLS_HANDSHAKES = 23
    TLS_FAILED_VERIFY = 24      # the peer's certificate: OpenSSL's verification, RFC 5922, required but absent
    TLS_FAILED_PROTOCOL = 25    # any other OpenSSL error: versions, ciphers, an alert from the peer, garbage
    TLS_FAILED_TIMEOUT = 26     # not done in tls_handshake_timeout
    TLS_FAILED_OTHER = 27       # closed first: by the peer, a failed write, the idle lifetime


# Counters that say how many of something exist now rather than how many happened: a reset
# would make them lie until the things they count are gone (metrics show them as gauges).
GAUGES = frozenset({Stat.TM_INUSE})

STAT_SLOT_SIZE = 8 * len(Stat)      # one process's counters: native 64-bit, through a memoryview

# --- connection table ---------------------------------------------------------------------------
# seq, empty(0)/used(1), proto, family, TLS client domain, port, owner, conn_id, address (16 bytes)
ENTRY = struct.Struct("<IBBBBHhxxq16s")
_SEQ = struct.Struct("<I")      # an entry's first field: its sequence number, odd while written
KNOWN_LIMIT = 65536             # answers a reader remembers (lookup()) before it starts afresh
NO_DOMAIN = 255
EMPTY, USED = 0, 1
MOVED_RETRIES = 64              # looks a reader takes while entries move (then: not found)
_PROTO_CODE = {Proto.UDP: 0, Proto.TCP: 1, Proto.TLS: 2}
HEADER = 64
DEBUG_LEVEL_OFFSET = 0          # in the header: the ``debug`` level every process follows
MOVES_OFFSET = 8                # in the header: the connection table's move counter (odd: moving)


class OutOfSharedMemory(Exception):
    pass


def _home_of(code: int, family: int, addr: bytes, port: int) -> int:
    """An entry's first slot, before the mask. (crc32, not hash(): every process must find the
    same slot.)"""
    return zlib.crc32(addr + bytes((code, family, port >> 8, port & 255)))


def _pack_ip(ip: str) -> tuple[int, bytes]:
    if ":" in ip:
        return 6, socket.inet_pton(socket.AF_INET6, ip.strip("[]"))
    return 4, socket.inet_pton(socket.AF_INET, ip).ljust(16, b"\0")


class SharedMemory:
    def __init__(self, size_mb: int, processes: int, max_connections: int):
        size = size_mb * 1024 * 1024
        self.beats_offset = HEADER
        self.stats_offset = self.beats_offset + 8 * processes
        self.stats_size = STAT_SLOT_SIZE * processes
        self.processes = processes
        # room for aliases: twice the connections, a power of two for cheap probing
        want = 1 << max(4, (2 * max_connections - 1).bit_length())
        self.table_offset = self.stats_offset + self.stats_size
        room = (size - self.table_offset) // ENTRY.size
        if room < 16:
            raise OutOfSharedMemory(f"-m {size_mb}: the shared memory segment is too small "
                                    f"for {processes} processes")
        self.slots = min(want, 1 << (room.bit_length() - 1))
        self.capacity = self.slots * 3 // 4      # refuse before probing gets long
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.used = 0                            # writer-side count (the supervisor's view)
        self.known: dict[tuple, tuple] = {}      # reader side: (proto, ip, port) -> (offset, seq, answer)

    # -- the run-time log level -----------------------------------------------------------------
    def set_debug_level(self, level: int) -> None:
        struct.pack_into("<q", self.map, DEBUG_LEVEL_OFFSET, level)

    def debug_level(self) -> int:
        return struct.unpack_from("<q", self.map, DEBUG_LEVEL_OFFSET)[0]

    # -- heartbeats -----------------------------------------------------------------------------
    def beat(self, process: int, now: float) -> None:
        """``process``'s loop turned at ``now`` (time.monotonic(): the same clock in every process)."""
        struct.pack_into("<d", self.map, self.beats_offset + 8 * process, now)

    def last_beat(self, process: int) -> float:
        return struct.unpack_from("<d", self.map, self.beats_offset + 8 * process)[0]

    # -- statistics -----------------------------------------------------------------------------
    def stats_of(self, process: int) -> "StatSlot":
        return StatSlot(self.map, self.stats_offset + process * STAT_SLOT_SIZE)

    # -- connection table: writer (the supervisor) ----------------------------------------------
    def _slot_offset(self, index: int) -> int:
        return self.table_offset + index * ENTRY.size

    def insert(self, proto: Proto, ip: str, port: int, conn_id: int, owner: int, domain: int = NO_DOMAIN) -> None:
        """Add or replace the entry for (proto, ip, port); OutOfSharedMemory when full. ``domain``
        is the index of the TLS client domain an outbound connection was opened with."""
        family, addr = _pack_ip(ip)
        code = _PROTO_CODE[proto]
        index, _, present = self._find(code, family, addr, port)
        if present is None and (self.used >= self.capacity or index < 0):
            raise OutOfSharedMemory(f"out of shared memory: connection table full "
                                    f"({self.used} entries); raise -m or tcp_max_connections")
        self._put(index, (USED, code, family, domain, port, owner, conn_id, addr))
        if present is None:
            self.used += 1

    def remove(self, proto: Proto, ip: str, port: int, conn_id: int) -> bool:
        """Remove the entry for (proto, ip, port) if it still belongs to ``conn_id``."""
        family, addr = _pack_ip(ip)
        index, _, answer = self._find(_PROTO_CODE[proto], family, addr, port)
        if answer is None or answer[0] != conn_id:
            return False
        self._free(index)
        self.used -= 1
        return True

    def _find(self, code: int, family: int, addr: bytes, port: int) -> tuple[int, int, tuple | None]:
        """(slot, its sequence, (conn_id, owner, domain)) of the key's entry, or (the empty slot
        where its probe ended, its sequence, None). Every probe ends at an empty slot: the table
        keeps a quarter empty (capacity) and leaves no tombstones (_free()); (-1, 0, None) if not."""
        mask = self.slots - 1
        index = _home_of(code, family, addr, port) & mask
        for _ in range(self.slots):
            off = self._slot_offset(index)
            while True:
                entry = ENTRY.unpack_from(self.map, off)
                if entry[0] & 1 == 0 and _SEQ.unpack_from(self.map, off)[0] == entry[0]:
                    break                                  # a stable read (a reader's; the writer's always is)
            seq, state, p, f, domain, prt, owner, conn_id, a = entry
            if state == EMPTY:
                return index, seq, None
            if p == code and f == family and prt == port and a == addr:
                return index, seq, (conn_id, owner, domain)
            index = index + 1 & mask
        return -1, 0, None

    def _free(self, index: int) -> None:
        """The entry at ``index`` goes, and no tombstone stays: the entries after it in its
        cluster that may sit earlier move back (linear probing's deletion, Knuth's Algorithm R),
        so that every probe still ends at the first empty slot. (Tombstones filled the table
        under connections opened and closed, until every probe, a worker's miss included, walked
        the whole table.) A move is bracketed by the table's move counter, odd meanwhile: a
        reader that missed while entries moved looks again (lookup())."""
        mask = self.slots - 1
        moving = False
        following = index
        while True:
            following = following + 1 & mask
            off = self._slot_offset(following)
            entry = ENTRY.unpack_from(self.map, off)
            if entry[1] == EMPTY:
                break
            home = _home_of(entry[2], entry[3], entry[8], entry[5]) & mask
            # it may move back to ``index`` unless its home lies in (index, following], cyclically
            if (home <= index or home > following) if index < following else (following < home <= index):
                if not moving:
                    moving = True
                    self._moving(True)
                self._put(index, entry[1:])
                index = following
        self._put(index, (EMPTY,) + ENTRY.unpack_from(self.map, self._slot_offset(index))[2:])
        if moving:
            self._moving(False)

    def _moving(self, begins: bool) -> None:
        """The move counter: odd from the start of a move to its end. (Odd at a start: a writer
        died in a move; it stays odd and still changes.)"""
        count = _SEQ.unpack_from(self.map, MOVES_OFFSET)[0]
        _SEQ.pack_into(self.map, MOVES_OFFSET, count + (1 if count % 2 == 0 or not begins else 2) & 0xFFFFFFFF)

    def _put(self, index: int, fields: tuple) -> None:
        """The entry at ``index`` becomes ``fields`` (all but the sequence), its sequence odd while
        it is written: a reader that sees it odd, or changed after its read, reads again."""
        off = self._slot_offset(index)
        seq = _SEQ.unpack_from(self.map, off)[0]
        _SEQ.pack_into(self.map, off, (seq + 1) & 0xFFFFFFFF)          # odd: being written
        ENTRY.pack_into(self.map, off, (seq + 1) & 0xFFFFFFFF, *fields)
        _SEQ.pack_into(self.map, off, (seq + 2) & 0xFFFFFFFF)          # even: stable

    # -- connection table: readers (workers) ----------------------------------------------------
    def lookup(self, proto: Proto, ip: str, port: int) -> tuple[int, int, int] | None:
        """(conn_id, owner, TLS client domain) of the connection that reaches (proto, ip, port).

        What this process found is remembered with the entry's place and sequence number: every
        write to an entry changes its sequence, so while it reads the same, the answer stands,
        and a message for another worker's connection costs one read instead of a probe."""
        key = (proto, ip, port)
        known = self.known.get(key)
        if known is not None and _SEQ.unpack_from(self.map, known[0])[0] == known[1]:
            return known[2]
        try:
            family, addr = _pack_ip(ip)
        except OSError:
            return None
        for _ in range(MOVED_RETRIES):
            moves = _SEQ.unpack_from(self.map, MOVES_OFFSET)[0]
            index, seq, answer = self._find(_PROTO_CODE[proto], family, addr, port)
            if answer is not None:
                if len(self.known) >= KNOWN_LIMIT:
                    self.known.clear()
                self.known[key] = (self._slot_offset(index), seq, answer)
                return answer
            if moves % 2 == 0 and _SEQ.unpack_from(self.map, MOVES_OFFSET)[0] == moves:
                return None             # not there, and nothing moved meanwhile (it might have been passed)
            os.sched_yield()
        return None

    def connections(self) -> int:
        """How many TCP/TLS connections the table holds now (a connection's aliases count once)."""
        seen = set()
        for index in range(self.slots):
            entry = ENTRY.unpack_from(self.map, self._slot_offset(index))
            if entry[1] == USED:
                seen.add((entry[6], entry[7]))
        return len(seen)


class StatSlot:
    """One process's counters, written in place (one memoryview store per count: hot path)."""

    __slots__ = ("counters",)

    def __init__(self, shared: mmap.mmap, offset: int):
        self.counters = memoryview(shared)[offset:offset + STAT_SLOT_SIZE].cast("Q")

    def add(self, stat: Stat, n: int = 1) -> None:
        self.counters[stat] += n

    def set(self, stat: Stat, value: int) -> None:
        self.counters[stat] = value

    def read(self) -> dict[str, int]:
        return dict(zip((s.name.lower() for s in Stat), self.counters.tolist()))
