"""The shared connection table and Call-ID affinity, as pure logic (the processes that use them
are tested end to end in tests/runtime)."""

import logging
import os
import zlib

import pytest

from pyproxy.config.values import Proto
from pyproxy.kernel import ipc
from pyproxy.kernel.logs import log
from pyproxy.kernel.shm import OutOfSharedMemory, SharedMemory, Stat
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
    assert shm.lookup(Proto.TCP, "::1", 5060) == (8, 1, 255)            # found past the tombstone


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
