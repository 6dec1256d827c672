"""Where the bindings live, per ``db_mode``, behind one interface (``Location``).

Every worker must see every registration, and a registration must outlive the worker that took
it. So the "memory" of OpenSER's usrloc is here a small SQLite database in shared memory
(``/dev/shm``, the "shared file"): all workers open it, they take turns to change it, and a worker
that dies mid-write leaves it consistent. The master makes it empty at start (loaded from the
database in db_mode 1 and 2) and removes it at stop. It is ours alone, so it is shaped for speed:
``SHARDS`` files, an address of record in one of them by a hash, each a table of one row per
address of record with its bindings in one value (``SharedBindings``). The databases of db_mode
1-3 keep OpenSER's ``location`` table (``Bindings``).

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
import marshal
import os
import re
import tempfile
import zlib
from dataclasses import dataclass

from ...db import Database, DatabaseError, connect, schema

COLUMNS = ("contact", "expires", "q", "callid", "cseq", "received", "path", "socket", "user_agent",
           "flags", "cflags", "methods", "last_modified")
SELECT = ", ".join(COLUMNS)
INSERT = (f"INSERT INTO location (username, domain, {SELECT}) "
          f"VALUES ({', '.join('?' * (len(COLUMNS) + 2))})")
DIRTY_TABLE = "CREATE TABLE IF NOT EXISTS location_dirty (username TEXT NOT NULL, domain TEXT NOT NULL, " \
              "PRIMARY KEY (username, domain))"
# The shared file is this many SQLite files, an address of record living in one of them by a hash:
# a write locks one file, so two workers seldom wait for each other, and invalidates the other
# processes' page cache of that file only. (Two processes changing and looking up bindings as fast
# as they could took 100 us of wall time and 60 of CPU per change and lookup with one file; with
# eight, 42 and 40.)
SHARDS = 8
# The shared file's table: ``soonest`` and ``latest`` are the first and last expiry of the row's
# bindings, which the expiry timer reads instead of the bindings themselves.
SHARED_TABLE = ("CREATE TABLE IF NOT EXISTS bindings (username TEXT NOT NULL, domain TEXT NOT NULL, "
                "soonest INTEGER NOT NULL, latest INTEGER NOT NULL, data BLOB NOT NULL, "
                "PRIMARY KEY (username, domain)) WITHOUT ROWID")


@dataclass(slots=True)
class Binding:
    """One Contact of an address of record (RFC 3261 10.2)."""
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

    def fields(self) -> tuple:
        return (self.contact, self.expires, self.q, self.callid, self.cseq, self.received, self.path, self.socket,
                self.user_agent, self.flags, self.cflags, self.methods, self.last_modified)

    def row(self) -> tuple:
        return (self.contact, db_time(self.expires), self.q, self.callid, self.cseq, self.received, self.path,
                self.socket, self.user_agent, self.flags, self.cflags, self.methods, db_time(self.last_modified))

    @classmethod
    def from_row(cls, row) -> Binding:
        b = cls(*row)
        b.expires, b.last_modified, b.q, b.cseq = unix_time(b.expires), unix_time(b.last_modified), float(b.q), int(b.cseq)
        return b


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
    """The bindings in the shared file: one row per address of record, its bindings as one
    ``marshal`` value (the file is written by this server only, mode 0600), so that a change is one
    read and one write of one row, with no date text to format or parse. Expired bindings are left
    out when read and removed by ``expire``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, aor: tuple[str, str], now: float) -> list[Binding]:
        rows = self.db.query("SELECT data FROM bindings WHERE username = ? AND domain = ?", aor)
        return _live(rows[0][0], now) if rows else []

    def replace(self, aor: tuple[str, str], bindings: list[Binding]) -> None:
        if not bindings:
            self.db.execute("DELETE FROM bindings WHERE username = ? AND domain = ?", aor)
            return
        expiries = [b.expires for b in bindings]
        self.db.execute("INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?)",
                        (*aor, min(expiries), max(expiries), marshal.dumps([b.fields() for b in bindings])))

    def all(self, now: float) -> dict[tuple[str, str], list[Binding]]:
        out = {}
        for user, domain, data in self.db.query("SELECT username, domain, data FROM bindings WHERE latest > ? "
                                                "ORDER BY username, domain", (int(now),)):
            live = _live(data, now)
            if live:
                out[(user, domain)] = live
        return out

    def expire(self, now: float) -> int:
        """Remove the expired bindings (inside the caller's turn); how many there were."""
        count = 0
        with self.db.transaction():
            rows = self.db.query("SELECT username, domain, data FROM bindings WHERE soonest <= ?", (int(now),))
            for user, domain, data in rows:
                stored = marshal.loads(data)
                live = [Binding(*fields) for fields in stored if fields[1] > now]
                count += len(stored) - len(live)
                self.replace((user, domain), live)
        return count


def _live(data: bytes, now: float) -> list[Binding]:
    return [Binding(*fields) for fields in marshal.loads(data) if fields[1] > now]


class Location:
    """usrloc's bindings for one process, wherever db_mode keeps them."""

    def __init__(self, mode: int, db_url: str, cache_path: str | None) -> None:
        self.mode = mode
        self.db = connect(db_url) if mode else None
        if mode == 3:
            self.stores = [Bindings(self.db)]
            self.locks = None
        else:
            paths = shard_paths(cache_path)
            self.stores = [SharedBindings(connect(f"sqlite://{path}", SHARD_SETTINGS)) for path in paths]
            # Writers take turns on a lock of the kernel's (a lock file per shard): one waiting for
            # it wakes the moment it is free, where SQLite's own busy handler sleeps 1 ms and more
            # between tries (at 2,000 REGISTER/s the two workers spent more time asleep than working)
            self.locks = [os.open(path + ".lock", os.O_RDWR) for path in paths]
        self.turns = [Turn(lock) for lock in self.locks] if self.locks else [contextlib.nullcontext()]
        self.backing = Bindings(self.db) if mode in (1, 2) else None

    def lookup(self, aor: tuple[str, str], now: float) -> list[Binding]:
        return self.stores[shard_of(aor, len(self.stores))].get(aor, now)

    def change(self, aor: tuple[str, str], now: float, update, memory_only: bool = False):
        """Run ``update(current bindings)`` -> (new bindings or None for no change, result) as one
        step that no other worker interleaves with; the result. ``memory_only``: the shared file
        only, not the database of db_mode 1 and 2 (save()'s flag 0x01)."""
        shard = shard_of(aor, len(self.stores))
        store = self.stores[shard]
        with self.turns[shard], store.db.transaction():
            new, result = update(store.get(aor, now))
            if new is not None:
                store.replace(aor, new)
                if self.mode == 1 and not memory_only:      # if the database refuses, nothing changed
                    with self.db.transaction():
                        self.backing.replace(aor, new)
                elif self.mode == 2 and not memory_only:
                    store.db.execute("INSERT OR IGNORE INTO location_dirty (username, domain) VALUES (?, ?)", aor)
        return result

    def remove(self, aor: tuple[str, str], now: float) -> int:
        """Remove every binding of ``aor``; how many there were."""
        return self.change(aor, now, lambda current: ([], len(current)))

    def all(self, now: float) -> dict:
        found = {}
        for store in self.stores:
            found.update(store.all(now))
        return dict(sorted(found.items()))

    def expire(self, now: float) -> int:
        """Forget what has expired (the first worker, every timer_interval)."""
        count = 0
        for shard, store in enumerate(self.stores):
            with self.turns[shard]:
                count += store.expire(now)
        if self.mode == 1:
            self.backing.expire(now)
        return count

    def flush(self, now: float) -> int:
        """db_mode 2: write the AORs changed since the last flush to the database."""
        if self.mode != 2:
            return 0
        flushed = 0
        for shard, store in enumerate(self.stores):
            dirty = store.db.query("SELECT username, domain FROM location_dirty")
            for aor in dirty:
                with self.turns[shard], store.db.transaction():
                    bindings = store.get(aor, now)
                    with self.db.transaction():
                        self.backing.replace(aor, bindings)
                    store.db.execute("DELETE FROM location_dirty WHERE username = ? AND domain = ?", aor)
            flushed += len(dirty)
        if flushed:
            self.backing.expire(now)
        return flushed

    def close(self) -> None:
        for db in (self.db, *(store.db for store in self.stores)):    # (closing one twice is harmless)
            if db is not None:
                db.close()
        for lock in self.locks or ():
            os.close(lock)
        self.locks = None


class Turn:
    """``with turn:``: this process's turn to write a shard of the shared file, on a lock file of
    its own (a class rather than a generator: it is entered once per REGISTER)."""
    __slots__ = ("lock",)

    def __init__(self, lock: int) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        fcntl.flock(self.lock, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.lock, fcntl.LOCK_UN)


def shard_of(aor: tuple[str, str], shards: int) -> int:
    """The shard of the shared file that holds ``aor`` (the same in every process)."""
    return zlib.crc32(f"{aor[0]}@{aor[1]}".encode("utf-8", "surrogateescape")) % shards if shards > 1 else 0


def shard_paths(cache_path: str) -> list[str]:
    return [f"{cache_path}.{k}" for k in range(SHARDS)]


# A shard as a process uses it: a page cache of at most 1 MiB (SQLite's default is 2 MiB per
# connection, and every process has one per shard), and a write-ahead log checkpointed every 256
# pages and cut back to 1 MiB after (it would grow to 4 MiB per shard and stay so, in memory:
# /dev/shm is 64 MiB in a container by default).
SHARD_SETTINGS = ("PRAGMA cache_size=-1024", "PRAGMA wal_autocheckpoint=256", "PRAGMA journal_size_limit=1048576")


def shared_files(cache_path: str) -> list[str]:
    """The SQLite URLs of the shared file's shards (with their lock files), and that of the
    instance's lock file (for hand_over())."""
    return [f"sqlite://{path}" for path in (cache_path, *shard_paths(cache_path))]


# Every file of an instance's shared file: its shards, SQLite's files beside them, the lock files.
_FILE_NAME = re.compile(r"pyproxy-(\d+)-location\.db(\.\d+)?(-wal|-shm|-journal|\.lock)?")


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
    for path in (cache_path + ".lock", *(shard + suffix for shard in shard_paths(cache_path) for suffix in ("", ".lock"))):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))   # (SQLite gives its -wal and -shm the same mode)
    for shard, path in enumerate(shard_paths(cache_path)):
        cache = connect(f"sqlite://{path}")
        try:
            cache.execute(SHARED_TABLE)
            cache.execute(DIRTY_TABLE)
            bindings = SharedBindings(cache)
            with cache.transaction():
                for aor, items in loaded.items():
                    if shard_of(aor, SHARDS) == shard:
                        bindings.replace(aor, items)
        finally:
            cache.close()
    return sum(map(len, loaded.values()))


def remove_cache(cache_path: str | None) -> None:
    if cache_path is None:
        return
    for path in (cache_path, *shard_paths(cache_path)):
        for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
            with contextlib.suppress(OSError):
                os.unlink(path + suffix)


__all__ = ["Binding", "DatabaseError", "Location", "claim", "new_cache_path", "prepare", "remove_cache",
           "shared_files"]
