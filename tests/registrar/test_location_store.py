"""usrloc's shared file (SharedBindings, store.py) on a real LMDB file: what the workers write is
what they read, expired bindings are never read, the expiry timer removes them, and a writer that
dies mid-change leaves neither the change nor the lock behind."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import pytest

from pyproxy.modules.usrloc import store
from pyproxy.modules.usrloc.store import (Binding, DatabaseError, Location, claim, new_cache_path, prepare, remove_cache,
                                         shared_files)

NOW = 1_800_000_000


@pytest.fixture
def location(tmp_path):
    path = str(tmp_path / "location.db")
    prepare(0, "", path, NOW)
    made = Location(0, "", path)
    yield made
    made.close()
    remove_cache(path)


def binding(contact: str, expires: int, **fields) -> Binding:
    return Binding(contact, expires, **fields)


def test_a_change_is_read_back_field_for_field(location):
    stored = [binding("sip:a@10.0.0.1", NOW + 60, q=0.5, callid="c1", cseq=7, received="sip:10.0.0.1:5060;transport=udp",
                      path="<sip:p@10.0.0.9;lr>", socket="udp:127.0.0.1:5060", user_agent="phone \u00e9",
                      flags=3, cflags=1, methods=None, last_modified=NOW),
              binding("sip:a@10.0.0.2", NOW + 3600)]
    assert location.change(("alice", ""), NOW, lambda current: (stored, current)) == []
    assert location.lookup(("alice", ""), NOW) == stored
    assert location.lookup(("bob", ""), NOW) == []
    assert location.all(NOW) == {("alice", ""): stored}


def test_expired_bindings_are_not_read_and_the_timer_removes_them(location):
    soon, later = binding("sip:a@10.0.0.1", NOW + 10), binding("sip:a@10.0.0.2", NOW + 100)
    location.change(("alice", "d"), NOW, lambda current: ([soon, later], None))
    location.change(("bob", "d"), NOW, lambda current: ([binding("sip:b@10.0.0.3", NOW + 10)], None))
    assert location.lookup(("alice", "d"), NOW + 10) == [later]
    assert location.all(NOW + 10) == {("alice", "d"): [later]}
    assert location.expire(NOW + 5) == 0
    assert location.expire(NOW + 10) == 2
    assert len(location.shared) == 1             # bob's entry went with his last binding
    assert location.lookup(("alice", "d"), NOW + 10) == [later]


def test_no_bindings_leaves_no_entry(location):
    location.change(("alice", ""), NOW, lambda current: ([binding("sip:a@10.0.0.1", NOW + 60)], None))
    assert location.remove(("alice", ""), NOW) == 1
    assert len(location.shared) == 0


def test_addresses_of_record_are_listed_in_order(location):
    users = [f"u{n:03d}" for n in range(40)]
    for user in reversed(users):
        location.change((user, "d"), NOW, lambda current, u=user: ([binding(f"sip:{u}@10.0.0.1", NOW + 60)], None))
    assert [user for user, _ in location.all(NOW)] == users
    assert all(location.lookup((user, "d"), NOW)[0].contact == f"sip:{user}@10.0.0.1" for user in users)


def test_the_files_of_a_running_server_are_kept_and_those_of_a_gone_one_removed():
    """A daemon makes its shared file before it forks, so the pid in the files' name is gone while
    the server runs: what says they are in use is the lock its processes hold (store.claim)."""
    gone = _a_pid_not_running()
    base = os.path.join(os.path.dirname(new_cache_path()), f"pyproxy-{gone}-location.db")
    prepare(0, "", base, NOW)
    claimed = claim(base)
    try:
        new_cache_path()                                    # another server starting
        assert all(os.path.exists(path) for path in shared_files(base))
        location = Location(0, "", base)
        location.change(("alice", ""), NOW, lambda current: ([binding("sip:a@10.0.0.1", NOW + 60)], None))
        location.close()
    finally:
        os.close(claimed)                                   # the server is gone
    new_cache_path()
    assert not glob.glob(base + "*")


def test_the_file_stays_small_when_bindings_are_refreshed(location, tmp_path):
    """LMDB reuses the pages a change freed: 500 users refreshing 4,000 times take about what
    500 users take once (and the room allocated ahead)."""
    bulky = [binding(f"sip:a{n}@10.0.0.1;" + "x" * 200, NOW + 600, path="<sip:p@10.0.0.9;lr>" * 4) for n in range(5)]
    for n in range(4000):
        location.change((f"u{n % 500}", ""), NOW, lambda current: (bulky, None))
    assert os.stat(tmp_path / "location.db").st_blocks * 512 <= store.ROOM + 4 * 1024 * 1024   # (memory used)


def test_an_address_of_record_too_long_for_a_key_is_kept(location):
    """LMDB's keys are at most 511 bytes; a longer AOR is kept under a hash of it."""
    aor = ("u" * 600, "example.com")
    stored = [binding("sip:a@10.0.0.1", NOW + 60)]
    location.change(aor, NOW, lambda current: (stored, None))
    assert location.lookup(aor, NOW) == stored
    assert location.lookup(("u" * 599, "example.com"), NOW) == []
    assert location.all(NOW) == {aor: stored}


# A worker (a process of its own: LMDB's handles do not cross a fork) changing two users, stopped
# in the middle of it.
DIES_MIDWAY = """
import pathlib, sys, time
from pyproxy.modules.usrloc.store import Binding, Location
shared = Location(0, "", sys.argv[1]).shared
with shared.write() as txn:
    shared.replace(txn, ("alice", ""), [Binding("sip:b@10.0.0.2", 1_800_000_060)])
    shared.replace(txn, ("bob", ""), [Binding("sip:b@10.0.0.2", 1_800_000_060)])
    pathlib.Path(sys.argv[2]).write_text("x")
    time.sleep(120)
"""


def test_a_writer_killed_mid_change_leaves_the_file_as_it_was(location, tmp_path):
    """A worker dies holding the writer lock, its change half made: the others go on, the change
    is not there, and the lock is taken over (a robust mutex)."""
    before = [binding("sip:a@10.0.0.1", NOW + 60)]
    location.change(("alice", ""), NOW, lambda current: (before, None))
    ready = tmp_path / "ready"
    worker = subprocess.Popen([sys.executable, "-c", DIES_MIDWAY, str(tmp_path / "location.db"), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and worker.poll() is None, "the writer never got midway"
            time.sleep(0.01)
    finally:
        worker.kill()
        worker.wait()
    assert location.lookup(("alice", ""), NOW) == before and location.lookup(("bob", ""), NOW) == []
    after = [binding("sip:a@10.0.0.3", NOW + 60)]
    assert location.change(("alice", ""), NOW, lambda current: (after, current)) == before
    assert location.lookup(("alice", ""), NOW) == after


def _a_pid_not_running() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


def test_a_running_daemon_whose_first_pid_was_ours_keeps_its_files():
    ours = os.path.basename(new_cache_path())
    taken = os.path.join(os.path.dirname(new_cache_path()), f"pyproxy-{os.getpid()}-location.db")
    prepare(0, "", taken, NOW)
    claimed = claim(taken)
    try:
        other = new_cache_path()
        assert ours == os.path.basename(taken) and other != taken
        assert all(os.path.exists(path) for path in shared_files(taken))
    finally:
        os.close(claimed)
        remove_cache(taken)


def test_a_full_table_is_a_database_error_and_keeps_what_it_had(tmp_path, monkeypatch):
    """At its largest size (or with /dev/shm full) a change fails as the database would (save()
    answers 500), and what was stored stays readable."""
    monkeypatch.setattr(store, "MAP_SIZE", 256 * 1024)
    path = str(tmp_path / "small.db")
    prepare(0, "", path, NOW)
    location = Location(0, "", path)
    try:
        bulky = [binding("sip:a@10.0.0.1;" + "x" * 1000, NOW + 600)]
        with pytest.raises(DatabaseError, match="shared location table"):
            for n in range(1000):
                location.change((f"u{n}", ""), NOW, lambda current: (bulky, None))
        assert location.lookup(("u0", ""), NOW) == bulky
        assert location.remove(("u0", ""), NOW) == 1        # and room is made again
    finally:
        location.close()
        remove_cache(path)


# A server whose /dev/shm fills up: a process (SIGBUS would kill it) writing bindings into a
# shared file on a 4 MiB tmpfs until the table cannot grow.
FILLS_A_SMALL_SHM = """
import sys
from pyproxy.modules.usrloc import store
from pyproxy.modules.usrloc.store import Binding, DatabaseError, Location, prepare
store.ROOM = 1 << 20         # (allocated ahead 1 MiB at a time, to fill the 4 MiB gradually)
path = sys.argv[1]
prepare(0, "", path, 1_800_000_000)
location = Location(0, "", path)
bulky = [Binding("sip:a@10.0.0.1;" + "x" * 3000, 1_800_000_600)]
try:
    for n in range(100_000):
        location.change((f"u{n}", ""), 1_800_000_000, lambda current: (bulky, None))
except DatabaseError as e:
    print("refused after", n, e)
print("lookup", len(location.lookup(("u0", ""), 1_800_000_000)))
"""


def test_a_full_dev_shm_is_an_error_not_a_crash(tmp_path):
    """The table's memory is allocated before pages are written through the map, so a tmpfs
    that is full refuses a change (a 500 for that REGISTER) instead of killing the worker."""
    shm = tmp_path / "shm"
    shm.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "none", str(shm)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here: {mounted.stderr.strip()}")
    try:
        run = subprocess.run([sys.executable, "-c", FILLS_A_SMALL_SHM, str(shm / "location.db")],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
        assert "refused after" in run.stdout and "cannot grow" in run.stdout, run.stdout
        assert "lookup 1" in run.stdout
    finally:
        subprocess.run(["umount", str(shm)], capture_output=True)


# A worker of db_mode 1 adding its own contacts to two users, one at a time.
ADDS_CONTACTS = """
import sys
from pyproxy.modules.usrloc.store import Binding, Location
location = Location(1, sys.argv[1], sys.argv[2])
for n in range(150):
    for user in ("alice", "bob"):
        contact = f"sip:{sys.argv[3]}-{n}@10.0.0.1"
        location.change((user, ""), 1_800_000_000,
                        lambda current: (current + [Binding(contact, 1_800_000_600)], None))
location.close()
"""


def test_write_through_changes_of_one_user_from_two_workers_are_all_kept(tmp_path):
    """db_mode 1 writes the database outside the table's writer lock, under a lock of the AOR's
    slot: two workers adding contacts to the same users lose none, and the database holds what
    the shared file holds."""
    from pyproxy.db import connect, schema
    url = f"sqlite://{tmp_path}/location-db.db"
    db = connect(url)
    schema.create(db)
    db.close()
    path = str(tmp_path / "location.db")
    prepare(1, url, path, NOW)
    workers = [subprocess.Popen([sys.executable, "-c", ADDS_CONTACTS, url, path, name]) for name in ("w1", "w2")]
    try:
        assert [worker.wait(120) for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            worker.kill()
    location = Location(1, url, path)
    try:
        expected = {f"sip:{name}-{n}@10.0.0.1" for name in ("w1", "w2") for n in range(150)}
        for user in ("alice", "bob"):
            assert {b.contact for b in location.lookup((user, ""), NOW)} == expected
            assert {b.contact for b in location.table.get((user, ""), NOW)} == expected
    finally:
        location.close()
        remove_cache(path)
