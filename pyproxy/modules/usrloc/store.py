"""Where the bindings live, per ``db_mode``, behind one interface (``Location``).

Every worker must see every registration, and a registration must outlive the worker that took
it. So the "memory" of OpenSER's usrloc is here a small LMDB database in shared memory
(``/dev/shm``, the "shared file"): all workers open it, they take turns to change it (LMDB's one
writer lock), they read it without waiting, and a worker that dies mid-write leaves it as it was
before that write (LMDB writes new pages and commits by switching to them; its writer lock is a
robust mutex, which the next writer takes over). The master makes it empty at start (loaded from
the database in db_mode 1 and 2) and removes it at stop. It is ours alone, so it is shaped for
speed: one entry per address of record with its bindings in one value (``SharedBindings``). The
databases of db_mode 1-3 keep OpenSER's ``location`` table (``Bindings``).

- db_mode 0: the shared file only; registrations end with the server.
- db_mode 1 (write-through): each change goes to the database in the same step; if the database
  refuses, the change is not made and the REGISTER gets a 500.
- db_mode 2 (write-back): changes mark their AOR dirty; the first worker writes dirty AORs to the
  database every ``timer_interval`` seconds, and the master once more at stop.
- db_mode 3 (database only): no shared file; every worker reads and writes the database
  (several proxies may share it).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import hashlib
import marshal
import operator
import os
import re
import struct
import tempfile
import zlib
from typing import NamedTuple

import lmdb

from ...db import Database, DatabaseError, connect, schema

COLUMNS = ("contact", "expires", "q", "callid", "cseq", "received", "path", "socket", "user_agent",
           "flags", "cflags", "methods", "last_modified")
SELECT = ", ".join(COLUMNS)
INSERT = (f"INSERT INTO location (username, domain, {SELECT}) "
          f"VALUES ({', '.join('?' * (len(COLUMNS) + 2))})")
# The shared file, an LMDB environment: one file and its lock file (``-lock``), not synced to disk
# (it lives in memory and ends with the server). Pages are written through a writable map: a
# commit is then stores to memory (written with pwrite(), a change took about six system calls
# more, and the server 20 % more CPU at 8,000 REGISTER/s). A write into the map where /dev/shm has no
# memory left would kill the worker (SIGBUS), so the file's memory is allocated ahead of the pages
# in use (ROOM, in steps), and a /dev/shm too full for that is an error for the REGISTER that met
# it (a 500). MAP_SIZE is the most the table may take; READERS, the processes that may read it at
# once; an AOR's bindings may take at most MAX_VALUE bytes (else that REGISTER gets a 500).
MAP_SIZE = 1 << 30
ROOM = 16 << 20
MAX_VALUE = 1 << 20
ROOM_CHECK = 4              # (ROOM_CHECK * MAX_VALUE, and their pages, within ROOM // 2)
READERS = 1024
WRITE_BATCH = 256           # entries changed per write where many are (expiry, the start-up load)
SLOTS = 64                  # db_mode 1: changes of AORs in different slots reach the database at once
_SOONEST = struct.Struct("<q")       # an entry's value: its first expiry, then the marshal'd AOR and bindings
_PAST_SOONEST = _SOONEST.size
MARSHAL = 2     # marshal's version 2: without the references between objects of version 4, which
                # a value of a few short strings gains nothing from (its dumps and loads cost more)


class Binding(NamedTuple):
    """One Contact of an address of record (RFC 3261 10.2). A named tuple: a REGISTER reads
    and writes all of its address of record's bindings, and a tuple is made from the shared
    file's fields, and given back to it, in one C call each (a dataclass took a Python
    ``__init__`` and a ``fields()`` per binding)."""
    contact: str                # the Contact URI, as registered
    expires: int                # when it ends (Unix time)
    q: float = 1.0
    callid: str = ""
    cseq: int = 0
    received: str | None = None     # sip:ip:port;transport=t -- where the REGISTER came from
    path: str | None = None         # RFC 3327 Path, comma-separated
    socket: str | None = None       # proto:ip:port of the socket it came in on
    user_agent: str = ""
    flags: int = 0
    cflags: int = 0
    methods: int | None = None
    last_modified: int = 0

    def row(self) -> tuple:
        return (self.contact, db_time(self.expires), *self[2:12], db_time(self.last_modified))

    @classmethod
    def from_row(cls, row) -> Binding:
        contact, expires, q, callid, cseq, *rest, last_modified = row
        return cls(contact, unix_time(expires), float(q), callid, int(cseq), *rest, unix_time(last_modified))


_binding = functools.partial(tuple.__new__, Binding)     # a Binding of the shared file's fields
_expires_of = operator.itemgetter(Binding._fields.index("expires"))


def db_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(int(t), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def unix_time(value) -> int:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value[:19])
    return int(value.replace(tzinfo=datetime.UTC).timestamp())


class Bindings:
    """The location table of one SQL database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, aor: tuple[str, str], now: float) -> list[Binding]:
        rows = self.db.query(f"SELECT {SELECT} FROM location WHERE username = ? AND domain = ? AND expires > ?",
                             (*aor, db_time(now)))
        return [Binding.from_row(r) for r in rows]

    def replace(self, aor: tuple[str, str], bindings: list[Binding]) -> None:
        """The AOR's bindings become ``bindings`` (inside the caller's transaction)."""
        self.db.execute("DELETE FROM location WHERE username = ? AND domain = ?", aor)
        if bindings:
            self.db.executemany(INSERT, [(*aor, *b.row()) for b in bindings])

    def all(self, now: float) -> dict[tuple[str, str], list[Binding]]:
        out: dict[tuple[str, str], list[Binding]] = {}
        for row in self.db.query(f"SELECT username, domain, {SELECT} FROM location WHERE expires > ? "
                                 f"ORDER BY username, domain", (db_time(now),)):
            out.setdefault((row[0], row[1]), []).append(Binding.from_row(row[2:]))
        return out

    def expire(self, now: float) -> int:
        return self.db.execute("DELETE FROM location WHERE expires <= ?", (db_time(now),))


class SharedBindings:
    """The bindings in the shared file: an entry per address of record, its value the first
    expiry of its bindings (what the expiry timer reads) then the AOR and its bindings as one
    ``marshal`` value (the file is written by this server only, mode 0600), so that a change is
    one read and one write of one entry, with no text to format or parse. Expired bindings are
    left out when read and removed by ``expire``. Changes of db_mode 2 not yet written back are
    listed in a second table (``dirty``)."""

    def __init__(self, path: str, create: bool = False) -> None:
        self.path = path
        try:
            self.env = lmdb.open(path, subdir=False, create=create, mode=0o600, map_size=MAP_SIZE, max_dbs=2,
                                 max_readers=READERS, sync=False, metasync=False, readahead=False, writemap=True)
            self.entries = self.env.open_db(b"bindings")
            self.dirty = self.env.open_db(b"dirty")
            self.fd = os.open(path, os.O_RDWR)
        except (lmdb.Error, OSError) as e:
            raise DatabaseError(f"the shared location table {path}: {e}") from None
        self.page = self.env.stat()["psize"]
        self.allocated = 0          # how much of the file this process made sure has memory
        self.unchecked = 0          # changes until write() looks at the pages in use again

    def get(self, aor: tuple[str, str], now: float) -> list[Binding]:
        with self.env.begin() as txn:
            return self.current(txn, aor, now)

    def write(self, batch: bool = False) -> lmdb.Transaction:
        """A change: ``with shared.write() as txn:`` (committed at the end, or nothing on an
        exception). ``batch``: one that may change many entries. How much of the file is in use
        is looked at before a batch and before every ROOM_CHECK-th change (env.info() is a
        tenth of a change's work): a change of one entry writes at most MAX_VALUE and a few
        pages, and ROOM_CHECK of them fit in the half of ROOM kept ahead."""
        self.unchecked -= 1
        if batch or self.unchecked <= 0:
            self.unchecked = ROOM_CHECK
            used = (self.env.info()["last_pgno"] + 1) * self.page
            if used + ROOM // 2 > self.allocated:
                self._allocate(min(used + ROOM, MAP_SIZE))
        return self.env.begin(write=True)

    def _allocate(self, size: int) -> None:
        """Memory behind the first ``size`` bytes of the file, before pages there are written
        through the map. (Other processes' writes may have allocated it already: then this
        costs one system call.)"""
        try:
            os.posix_fallocate(self.fd, 0, size)
        except OSError as e:
            raise DatabaseError(f"the shared location table {self.path} cannot grow to {size >> 20} MiB: "
                                f"{e.strerror}") from None
        self.allocated = size

    def current(self, txn, aor: tuple[str, str], now: float) -> list[Binding]:
        """The AOR's live bindings, read in ``txn``."""
        data = txn.get(_key(aor), db=self.entries)
        return _live(data, now)

    def replace(self, txn, aor: tuple[str, str], bindings: list[Binding]) -> None:
        self.store(txn, _key(aor), encoded(aor, bindings))

    def store(self, txn, key: bytes, value: bytes | None) -> None:
        """The entry under ``key`` (an AOR's _key()) becomes ``value`` (encoded()); None: it goes."""
        if value is None:
            txn.delete(key, db=self.entries)
        else:
            txn.put(key, value, db=self.entries)

    def mark_dirty(self, txn, key: bytes, aor: tuple[str, str]) -> None:
        txn.put(key, marshal.dumps(aor), db=self.dirty)

    def all(self, now: float) -> dict[tuple[str, str], list[Binding]]:
        out = {}
        with self.env.begin(db=self.entries) as txn:
            for data in txn.cursor().iternext(keys=False):
                live = _live(data, now)
                if live:
                    out[_aor_of(data)] = live
        return out

    def expire(self, now: float) -> int:
        """Remove the expired bindings; how many there were. The entries are looked over without
        the writer lock (their first expiry, not their bindings), and only those with bindings
        to remove are changed under it."""
        with self.env.begin(db=self.entries) as txn:
            due = [key for key, data in txn.cursor() if _SOONEST.unpack_from(data)[0] <= now]
        count = 0
        for start in range(0, len(due), WRITE_BATCH):     # (each write short, and within ROOM)
            with self.write(batch=True) as txn:
                for key in due[start:start + WRITE_BATCH]:
                    data = txn.get(key, db=self.entries)
                    if data is None:
                        continue
                    aor, stored = marshal.loads(data[_PAST_SOONEST:])
                    live = _alive(stored, now)
                    count += len(stored) - len(live)
                    self.replace(txn, tuple(aor), live)
        self.env.reader_check()         # the read slots of processes that died are freed
        return count

    def dirty_entries(self) -> list[tuple[bytes, tuple[str, str]]]:
        with self.env.begin(db=self.dirty) as txn:
            return [(key, tuple(marshal.loads(value))) for key, value in txn.cursor()]

    def raw(self, key: bytes) -> bytes | None:
        with self.env.begin(db=self.entries) as txn:
            return txn.get(key)

    def __len__(self) -> int:
        with self.env.begin() as txn:
            return txn.stat(self.entries)["entries"]

    def close(self) -> None:
        self.env.close()
        os.close(self.fd)


def _key(aor: tuple[str, str]) -> bytes:
    """An AOR's key: its text, or a hash of it when too long for a key of LMDB's (511 bytes)."""
    text = f"{aor[0]}\x00{aor[1]}".encode("utf-8", "surrogateescape")
    return b"\x01" + text if len(text) < 480 else b"\x02" + hashlib.blake2b(text, digest_size=32).digest()


def encoded(aor: tuple[str, str], bindings: list[Binding]) -> bytes | None:
    """An AOR's entry: the first expiry of its bindings, then the AOR and its bindings; None for
    no bindings. DatabaseError when it would be larger than MAX_VALUE."""
    if not bindings:
        return None
    soonest = bindings[0].expires if len(bindings) == 1 else min(map(_expires_of, bindings))
    value = _SOONEST.pack(soonest) + marshal.dumps((aor, list(map(tuple, bindings))), MARSHAL)
    if len(value) > MAX_VALUE:
        raise DatabaseError(f"the bindings of {aor[0][:60]}@{aor[1][:60]} would take more than "
                            f"{MAX_VALUE >> 20} MiB")
    return value


def _aor_of(data: bytes) -> tuple[str, str]:
    return tuple(marshal.loads(data[_PAST_SOONEST:])[0])


def _live(data: bytes | None, now: float) -> list[Binding]:
    """The live bindings of an entry (none when there is no entry)."""
    if data is None:
        return []
    return _alive(marshal.loads(data[_PAST_SOONEST:])[1], now)


def _alive(stored: list[tuple], now: float) -> list[Binding]:
    """The bindings of an entry's stored fields that have not expired."""
    return [_binding(fields) for fields in stored if fields[1] > now]     # (fields[1]: expires)


def _shared_errors(method):
    """LMDB's errors (/dev/shm full, the table at MAP_SIZE) raised as DatabaseError: the request
    that met one gets a 500, and the server goes on."""
    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except lmdb.Error as e:
            raise DatabaseError(f"the shared location table: {e}") from None
    return checked


class Location:
    """usrloc's bindings for one process, wherever db_mode keeps them."""

    def __init__(self, mode: int, db_url: str, cache_path: str | None) -> None:
        self.mode = mode
        self.db = connect(db_url) if mode else None
        self.table = Bindings(self.db) if mode else None            # the database's location table
        self.shared = SharedBindings(cache_path) if mode != 3 else None
        self.slots = os.open(cache_path + ".lock", os.O_RDWR) if mode == 1 else None    # (written_through())

    @_shared_errors
    def lookup(self, aor: tuple[str, str], now: float) -> list[Binding]:
        if self.shared is None:
            return self.table.get(aor, now)
        return self.shared.get(aor, now)

    @_shared_errors
    def change(self, aor: tuple[str, str], now: float, update, memory_only: bool = False):
        """Run ``update(current bindings)`` -> (new bindings or None for no change, result) as one
        step that no other worker interleaves with; the result. ``update`` may run twice (it is
        a pure function of the bindings it is given). ``memory_only``: the shared file
        only, not the database of db_mode 1 and 2 (save()'s flag 0x01)."""
        if self.shared is None:
            with self.db.transaction():
                new, result = update(self.table.get(aor, now))
                if new is not None:
                    self.table.replace(aor, new)
            return result
        if self.slots is not None:
            return self.written_through(aor, now, update, memory_only)
        # The update runs before the writer lock is taken, on the entry as read then, and the
        # write goes ahead if the entry is still that; else it runs again under the lock. (With
        # the update under the lock, two workers at 8,000 REGISTER/s waited for each other at
        # most changes, each wait a sleep and a wake-up in the kernel.)
        shared, key = self.shared, _key(aor)
        data = shared.raw(key)
        new, result = update(_live(data, now))
        value = encoded(aor, new)
        with shared.write() as txn:         # (an exception leaves the shared file as it was)
            now_data = txn.get(key, db=shared.entries)
            if now_data != data:
                new, result = update(_live(now_data, now))
                value = encoded(aor, new)
            if new is not None:
                shared.store(txn, key, value)
                if self.mode == 2 and not memory_only:
                    shared.mark_dirty(txn, key, aor)
        return result

    def written_through(self, aor: tuple[str, str], now: float, update, memory_only: bool):
        """db_mode 1's change: the database first (if it refuses, nothing changed), then the
        shared file. The database's round trip is not spent holding the table's writer lock,
        which every REGISTER needs, but a lock of the AOR's slot (a byte of the instance's lock
        file, SLOTS of them), which every change of that AOR takes."""
        key = _key(aor)
        slot = zlib.crc32(key) % SLOTS
        fcntl.lockf(self.slots, fcntl.LOCK_EX, 1, slot)
        try:
            new, result = update(self.shared.get(aor, now))
            if new is not None:
                value = encoded(aor, new)
                if not memory_only:
                    with self.db.transaction():
                        self.table.replace(aor, new)
                with self.shared.write() as txn:
                    self.shared.store(txn, key, value)
            return result
        finally:
            fcntl.lockf(self.slots, fcntl.LOCK_UN, 1, slot)

    def remove(self, aor: tuple[str, str], now: float) -> int:
        """Remove every binding of ``aor``; how many there were."""
        return self.change(aor, now, lambda current: ([], len(current)))

    @_shared_errors
    def all(self, now: float) -> dict:
        found = self.table.all(now) if self.shared is None else self.shared.all(now)
        return dict(sorted(found.items()))

    @_shared_errors
    def expire(self, now: float) -> int:
        """Forget what has expired (the first worker, every timer_interval)."""
        if self.shared is None:
            return self.table.expire(now)
        count = self.shared.expire(now)
        if self.mode == 1:
            self.table.expire(now)
        return count

    @_shared_errors
    def flush(self, now: float) -> int:
        """db_mode 2: write the AORs changed since the last flush to the database. The shared
        file is not locked while the database is written: an AOR changed meanwhile stays marked
        and is written again at the next flush."""
        if self.mode != 2:
            return 0
        shared = self.shared
        dirty = shared.dirty_entries()
        for key, aor in dirty:
            data = shared.raw(key)
            with self.db.transaction():
                self.table.replace(aor, _live(data, now))
            with shared.write() as txn:
                if txn.get(key, db=shared.entries) == data:
                    txn.delete(key, db=shared.dirty)
        if dirty:
            self.table.expire(now)
        return len(dirty)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.shared is not None:
            self.shared.close()
        if self.slots is not None:
            os.close(self.slots)
            self.slots = None


def shared_files(cache_path: str) -> list[str]:
    """The files of the shared file: LMDB's, its lock file, and the instance's lock file."""
    return [cache_path, cache_path + "-lock", cache_path + ".lock"]


# Every file of an instance's shared file: LMDB's two, the instance's lock file (and the SQLite
# files of earlier versions: eight shards, their journals and lock files).
_FILE_NAME = re.compile(r"pyproxy-(\d+)-location\.db(\.\d+)?(-wal|-shm|-journal|-lock|\.lock)?")


def new_cache_path() -> str:
    """This master's shared file; those of servers that are gone go."""
    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    alive: dict[str, bool] = {}
    for name in os.listdir(folder):
        m = _FILE_NAME.fullmatch(name)
        if m is None:
            continue
        pid = m.group(1)
        if pid not in alive:
            locked = _locked(os.path.join(folder, f"pyproxy-{pid}-location.db"))
            alive[pid] = _running(int(pid)) if locked is None else locked
        if not alive[pid]:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
    name, n = str(os.getpid()), 0
    while alive.get(name):      # a running daemon's, whose first pid was ours (pids are reused)
        n += 1
        name = f"{os.getpid()}{n}"
    return os.path.join(folder, f"pyproxy-{name}-location.db")


def claim(cache_path: str) -> int:
    """In the master: a shared lock on the instance's lock file, held by a descriptor every
    process of the server inherits, for as long as one of them runs. It says to other servers
    starting that the files are in use; the master's pid cannot (a daemon forks after making
    them, and its first pid is gone)."""
    fd = os.open(cache_path + ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _locked(cache_path: str) -> bool | None:
    """Whether a server holds the lock file of ``cache_path`` (store.claim); None: there is none."""
    try:
        fd = os.open(cache_path + ".lock", os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError:
        return True         # not ours to judge (another user's)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def prepare(mode: int, db_url: str, cache_path: str | None, now: float) -> int:
    """In the master, before fork: check the database, make the shared file and fill it from the
    database (db_mode 1, 2). The number of bindings loaded. DatabaseError says what failed."""
    if mode:
        db = connect(db_url)
        try:
            if db.url.scheme == "sqlite" and not os.path.exists(db.url.path):
                schema.create(db)   # the embedded database is made on first start
            schema.require(db, ["location"])
            loaded = Bindings(db).all(now) if mode in (1, 2) else {}
        finally:
            db.close()
    else:
        loaded = {}
    if cache_path is None:
        return 0
    remove_cache(cache_path)
    os.close(os.open(cache_path + ".lock", os.O_RDWR | os.O_CREAT, 0o600))     # (claim()'s)
    shared = SharedBindings(cache_path, create=True)
    try:
        aors = list(loaded.items())
        for start in range(0, len(aors), WRITE_BATCH):     # (each write short, and within ROOM)
            with shared.write(batch=True) as txn:
                for aor, items in aors[start:start + WRITE_BATCH]:
                    shared.replace(txn, aor, items)
    except lmdb.Error as e:
        raise DatabaseError(f"the shared location table {cache_path}: {e}") from None
    finally:
        shared.close()      # (the workers open their own, after fork)
    return sum(map(len, loaded.values()))


def remove_cache(cache_path: str | None) -> None:
    if cache_path is None:
        return
    for path in shared_files(cache_path):
        with contextlib.suppress(OSError):
            os.unlink(path)


__all__ = ["Binding", "DatabaseError", "Location", "claim", "new_cache_path", "prepare", "remove_cache",
           "shared_files"]
