"""usrloc's shared file (SharedBindings, store.py) on a real SQLite file: what the workers write is
what they read, expired bindings are never read, and the expiry timer removes them."""

from __future__ import annotations

import glob
import os

import pytest

from pyproxy.modules.usrloc.store import Binding, Location, claim, new_cache_path, prepare, remove_cache, shard_paths

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
    assert [row for store in location.stores for row in store.db.query("SELECT username, soonest, latest FROM bindings")] == [("alice", NOW + 100, NOW + 100)]
    assert location.lookup(("alice", "d"), NOW + 10) == [later]


def test_no_bindings_leaves_no_row(location):
    location.change(("alice", ""), NOW, lambda current: ([binding("sip:a@10.0.0.1", NOW + 60)], None))
    assert location.remove(("alice", ""), NOW) == 1
    assert sum(store.db.query("SELECT count(*) FROM bindings")[0][0] for store in location.stores) == 0


def test_addresses_of_record_spread_over_the_shards_and_are_listed_in_order(location):
    users = [f"u{n:03d}" for n in range(40)]
    for user in reversed(users):
        location.change((user, "d"), NOW, lambda current, u=user: ([binding(f"sip:{u}@10.0.0.1", NOW + 60)], None))
    assert all(store.db.query("SELECT count(*) FROM bindings")[0][0] for store in location.stores)
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
        assert all(os.path.exists(path) for path in (base + ".lock", *shard_paths(base)))
        location = Location(0, "", base)
        location.change(("alice", ""), NOW, lambda current: ([binding("sip:a@10.0.0.1", NOW + 60)], None))
        location.close()
    finally:
        os.close(claimed)                                   # the server is gone
    new_cache_path()
    assert not glob.glob(base + "*")


def test_the_write_ahead_logs_stay_small(location, tmp_path):
    """Each shard's WAL is checkpointed and cut back to 1 MiB: eight that grew to 4 MiB each and
    stayed so would take 32 MiB of /dev/shm."""
    bulky = [binding(f"sip:a{n}@10.0.0.1;" + "x" * 200, NOW + 600, path="<sip:p@10.0.0.9;lr>" * 4) for n in range(5)]
    for n in range(4000):
        location.change((f"u{n % 500}", ""), NOW, lambda current: (bulky, None))
    sizes = [os.path.getsize(path + "-wal") for path in shard_paths(str(tmp_path / "location.db")) if os.path.exists(path + "-wal")]
    assert sizes and max(sizes) <= 1100 * 1024, sizes


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
        assert all(os.path.exists(path) for path in (taken + ".lock", *shard_paths(taken)))
    finally:
        os.close(claimed)
        remove_cache(taken)


def test_a_shard_remade_after_a_failure_keeps_its_settings(location):
    shard = location.stores[0].db
    assert shard.query("PRAGMA cache_size") == [(-1024,)]
    shard.close()                               # as Database does when the connection breaks
    assert shard.query("PRAGMA cache_size") == [(-1024,)]
