"""The shared connection table and Call-ID affinity, as pure logic (the processes that use them
are tested end to end in tests/runtime)."""

import logging
import os
import random
import zlib

import pytest

from pyproxy.config.values import Proto
from pyproxy.kernel import ipc
from pyproxy.kernel.logs import log
from pyproxy.kernel.shm import (EMPTY, ENTRY, MOVES_OFFSET, NO_DOMAIN, USED, OutOfSharedMemory, SharedMemory, Stat,
                                _SEQ)
from pyproxy.runtime.supervisor import ConnectionTable


def test_table_insert_lookup_remove():
    shm = SharedMemory(1, 3, 64)
    shm.insert(Proto.TCP, "127.0.0.1", 5060, conn_id=7, owner=2)
    shm.insert(Proto.TCP, "::1", 5060, conn_id=8, owner=1)
    assert shm.lookup(Proto.TCP, "127.0.0.1", 5060) == (7, 2, 255)
    assert shm.lookup(Proto.TCP, "::1", 5060) == (8, 1, 255)
    assert shm.lookup(Proto.UDP, "127.0.0.1", 5060) is None
    assert shm.lookup(Proto.TCP, "127.0.0.1", 5061) is None
    assert not shm.remove(Proto.TCP, "127.0.0.1", 5060, conn_id=99)     # someone else's now
    assert shm.remove(Proto.TCP, "127.0.0.1", 5060, conn_id=7)
    assert shm.lookup(Proto.TCP, "127.0.0.1", 5060) is None
    assert shm.lookup(Proto.TCP, "::1", 5060) == (8, 1, 255)            # found past where 7 was


def test_table_is_visible_across_fork():
    shm = SharedMemory(1, 3, 64)
    pid = os.fork()
    if pid == 0:
        shm.insert(Proto.TCP, "10.0.0.9", 5070, conn_id=42, owner=1, domain=3)
        os._exit(0)
    os.waitpid(pid, 0)
    assert shm.lookup(Proto.TCP, "10.0.0.9", 5070) == (42, 1, 3)


def test_a_readers_remembered_answer_follows_the_writer_in_another_process():
    """lookup() remembers what it found; every change another process makes to the entry (a new
    connection to the same address, a removal, a removal and a new one in another slot) is seen
    on the next lookup."""
    shm = SharedMemory(1, 3, 64)
    key = (Proto.TCP, "10.0.0.9", 5070)

    def in_writer(change):
        pid = os.fork()
        if pid == 0:
            change()
            os._exit(0)
        os.waitpid(pid, 0)

    in_writer(lambda: shm.insert(*key, conn_id=1, owner=1))
    assert shm.lookup(*key) == (1, 1, 255)
    assert shm.lookup(*key) == (1, 1, 255)      # remembered
    in_writer(lambda: shm.insert(*key, conn_id=2, owner=0))
    assert shm.lookup(*key) == (2, 0, 255)
    in_writer(lambda: shm.remove(*key, conn_id=2))
    assert shm.lookup(*key) is None
    in_writer(lambda: (shm.insert(Proto.TCP, "10.0.0.8", 5070, conn_id=3, owner=1),
                       shm.insert(*key, conn_id=4, owner=1)))
    assert shm.lookup(*key) == (4, 1, 255)


def test_table_under_churn_keeps_every_entry_findable_and_its_probes_short():
    """Connections opened and closed in random order, the table kept three quarters full: every
    live entry is found, every removed one is not, and no probe walks far (entries removed leave
    no tombstones: they filled the table until every probe walked all of it)."""
    shm = SharedMemory(1, 3, 16)            # 32 slots: clusters and wrap-around come quickly
    rnd = random.Random(5060)
    live: dict[tuple, int] = {}
    for conn_id in range(1, 20000):
        key = (Proto.TLS if conn_id % 3 else Proto.TCP, f"10.0.{rnd.randrange(4)}.{rnd.randrange(1, 9)}",
               rnd.randrange(5060, 5070))
        if key not in live and len(live) < shm.capacity:
            shm.insert(*key, conn_id=conn_id, owner=conn_id % 2)
            live[key] = conn_id
        elif live:
            gone = rnd.choice(sorted(live, key=str))
            assert shm.remove(*gone, conn_id=live.pop(gone))
        if conn_id % 97 == 0:
            shm.known.clear()
            for key, owner_id in live.items():
                assert shm.lookup(*key) == (owner_id, owner_id % 2, NO_DOMAIN), key
            assert shm.lookup(Proto.TCP, "10.9.9.9", 1) is None
    states = [ENTRY.unpack_from(shm.map, shm._slot_offset(i))[1] for i in range(shm.slots)]
    assert states.count(USED) == len(live) == shm.used and states.count(EMPTY) == shm.slots - len(live)
    assert _SEQ.unpack_from(shm.map, MOVES_OFFSET)[0] % 2 == 0      # no move left open


def test_a_reader_that_missed_while_entries_moved_looks_again(monkeypatch):
    """The race a removal's moves open: an entry moved back behind a reader's probe while it
    walked on. The reader sees the move counter changed (or odd) and looks again."""
    shm = SharedMemory(1, 3, 16)
    key = (Proto.TLS, "10.1.1.1", 5061)
    shm.insert(*key, conn_id=1, owner=1)
    find, calls = shm._find, []

    def racing(*args):     # the first look misses while the writer moves entries (counter odd)
        calls.append(args)
        if len(calls) == 1:
            shm._moving(True)
            return -1, 0, None
        if len(calls) == 2:
            shm._moving(False)
            return -1, 0, None     # (still odd when the second look began: looks a third time)
        return find(*args)
    monkeypatch.setattr(shm, "_find", racing)
    assert shm.lookup(*key) == (1, 1, NO_DOMAIN) and len(calls) == 3
    calls.clear()
    shm.known.clear()
    monkeypatch.setattr(shm, "_find", lambda *args: (calls.append(args), (-1, 0, None))[1])
    assert shm.lookup(Proto.TLS, "10.9.9.9", 1) is None and len(calls) == 1     # a miss with no move: one look


def test_a_reader_finds_its_entry_while_another_process_moves_others():
    """A worker's lookups while the supervisor, in another process, inserts and removes the
    entries around its own over thousands of moves: always found."""
    shm = SharedMemory(1, 3, 16)
    mine = (Proto.TLS, "10.1.1.1", 5061)
    shm.insert(*mine, conn_id=1, owner=1)
    done = os.pipe()
    pid = os.fork()
    if pid == 0:            # the writer: entries inserted and removed around ours
        os.close(done[0])
        rnd = random.Random(1)
        others = {}
        for conn_id in range(2, 30000):
            key = (Proto.TLS, "10.1.1.2", rnd.randrange(1, 40))
            if key in others:
                shm.remove(*key, conn_id=others.pop(key))
            elif len(others) < shm.capacity - 2:
                shm.insert(*key, conn_id=conn_id, owner=0)
                others[key] = conn_id
        os.write(done[1], b"x")
        os._exit(0)
    os.close(done[1])
    os.set_blocking(done[0], False)
    looks = 0
    try:
        while True:
            shm.known.clear()
            assert shm.lookup(*mine) == (1, 1, NO_DOMAIN)
            looks += 1
            try:
                if os.read(done[0], 1):
                    break
            except BlockingIOError:
                pass
    finally:
        os.waitpid(pid, 0)
        os.close(done[0])
    assert looks > 100 and _SEQ.unpack_from(shm.map, MOVES_OFFSET)[0] > 1000


def test_table_full_is_refused_not_grown():
    shm = SharedMemory(1, 3, 8)
    with pytest.raises(OutOfSharedMemory, match="out of shared memory"):
        for port in range(1, 1000):
            shm.insert(Proto.TCP, "127.0.0.1", port, conn_id=port, owner=0)
    assert shm.used == shm.capacity


def test_a_full_table_is_logged_without_a_line_per_refusal():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)        # the pyproxy logger may not propagate (logs.setup in other tests)
    try:
        table = ConnectionTable(SharedMemory(1, 3, 8), max_connections=100000)
        added = sum(table.add(port, 0, Proto.TCP, "127.0.0.1", port) for port in range(1, 1000))
    finally:
        log.removeHandler(handler)
    refused = 999 - added
    assert refused > 200
    lines = [r for r in records if "out of shared memory" in r.getMessage()]
    assert len(lines) == (refused + 99) // 100 and f"({refused - refused % 100 + 1} refused" in lines[-1].getMessage()


def test_segment_too_small():
    with pytest.raises(OutOfSharedMemory, match="-m 1"):
        SharedMemory(1, 100000, 10)


def test_statistics_slots():
    shm = SharedMemory(1, 3, 8)
    shm.stats_of(1).add(Stat.REQUESTS_IN, 5)
    assert shm.stats_of(1).read()["requests_in"] == 5
    assert shm.stats_of(0).read()["requests_in"] == 0


@pytest.mark.parametrize("raw,expected", [
    (b"INVITE sip:a SIP/2.0\r\nCall-ID: abc@h\r\nCSeq: 1 INVITE\r\n\r\n", b"abc@h"),
    (b"INVITE sip:a SIP/2.0\r\ni:  xyz \r\n\r\n", b"xyz"),
    (b"SIP/2.0 200 OK\r\ncall-id:Q\r\n\r\n", b"Q"),
    (b"INVITE sip:a SIP/2.0\r\nX: 1\r\n\r\nCall-ID: in-the-body\r\n", None),
    (b"garbage", None),
])
def test_call_id_without_parsing(raw, expected):
    assert ipc.call_id_of(raw) == expected


def test_owner_is_crc32_of_call_id():
    assert ipc.owner_of(b"abc@h", 4) == zlib.crc32(b"abc@h") % 4


def test_a_respawned_worker_never_reuses_its_predecessors_connection_ids():
    """The supervisor may learn a new worker's first connection before it forgets the dead
    one's: their ids must differ (forget_owner would otherwise drop the live connection)."""
    import os
    from types import SimpleNamespace
    from pyproxy.runtime.streams import StreamTransport

    def first_id() -> int:
        return StreamTransport.new_conn_id(SimpleNamespace(index=1, next_conn=0))

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:        # the "respawned" worker 2
        os.write(write, str(first_id()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    theirs = int(os.read(read, 64))
    os.close(read)
    os.close(write)
    ours = first_id()
    assert ours != theirs and ours >> 48 == theirs >> 48 == 2
