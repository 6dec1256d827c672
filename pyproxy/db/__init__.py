"""Databases behind one small interface, chosen by a URL (a module's ``db_url``).

    sqlite:///var/lib/pyproxy/pyproxy.db        embedded (Kamailio's db_sqlite spelling: sqlite:// + absolute path)
    postgres://user:password@host:port/database  PostgreSQL, with psycopg 3   (pip install 'pyproxy[postgres]')
    mysql://user:password@host:port/database     MySQL/MariaDB, with PyMySQL  (pip install 'pyproxy[mysql]')

A ``Database`` connects lazily, on its first statement, so one made in the master before fork
carries no connection into the workers. SQL is written once with ``?`` placeholders and always
parameterised. A connection that breaks is dropped and made again on the next statement, at most
once a second: while the server is away each statement fails at once with ``DatabaseUnavailable``
(the request that needed it gets a 500) instead of every worker waiting on it.
"""

from __future__ import annotations

import os
import time

from .base import CONNECT_TIMEOUT, DEFAULT_URL, DatabaseError, DatabaseUnavailable, DbUrl, parse_url
from .drivers import MADE_FOLDERS, driver_for

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_URL", "Database", "DatabaseError", "DatabaseUnavailable", "DbUrl",
           "check_url", "connect", "hand_over", "hand_over_files", "module_url", "parse_url", "resolve_url"]

RECONNECT_INTERVAL = 1.0        # seconds between two attempts to reach a server that is away


def check_url(text: str) -> None:
    """A modparam check: an empty db_url (the default database) or a valid one."""
    if text:
        parse_url(resolve_url(text, "/"))


def resolve_url(text: str, folder: str) -> str:
    """``sqlite://`` followed by a relative path names a file in ``folder`` (pyproxy's addition
    to Kamailio's ``sqlite:///absolute/path``)."""
    if text.startswith("sqlite://") and not text[len("sqlite://"):].startswith("/"):
        return "sqlite://" + os.path.join(os.path.abspath(folder), text[len("sqlite://"):])
    return text


def module_url(config, module: str) -> str:
    """The database a module uses: its db_url (a relative SQLite file in the state folder, where
    pyproxy writes), else the default one."""
    url = config.modparams.get(module, {}).get("db_url")
    return resolve_url(url, config.state_dir) if url else DEFAULT_URL


def hand_over(url: str, settings) -> None:
    """An SQLite database the master made before dropping privileges (user=, group=): the
    workers, running as that user, must write the file, its journal, and the folder the journal
    goes in when pyproxy made that folder."""
    if not url.startswith("sqlite://"):
        return
    path = url[len("sqlite://"):]
    folder = os.path.dirname(path)
    hand_over_files((path, path + "-wal", path + "-shm", path + ".lock", *(f for f in MADE_FOLDERS if f == folder)),
                    settings)


def hand_over_files(paths, settings) -> None:
    """Files the master made before dropping privileges (user=, group=) go to that user: the
    workers write them. (Those that do not exist are left.)"""
    from ..kernel.process import run_as
    ids = run_as(settings.user, settings.group)
    for path in paths if ids is not None else ():
        if os.path.exists(path):
            os.chown(path, *ids)


class Database:
    """One connection to one database, made when first needed, remade when it breaks."""

    def __init__(self, url: DbUrl, driver, settings: tuple[str, ...] = ()) -> None:
        self.url = url
        self.driver = driver
        self.settings = settings    # statements run on every new connection (SQLite PRAGMAs)
        self.conn = None
        self.retry_at = 0.0
        self.last_failure = ""
        self.in_transaction = False

    # -- statements -----------------------------------------------------------------------------
    def query(self, sql: str, params=()) -> list[tuple]:
        return self._statement(sql, tuple(params), _all_rows)

    def execute(self, sql: str, params=()) -> int:
        """Run one statement; the number of rows it changed."""
        return self._statement(sql, tuple(params), _rows_changed)

    def executemany(self, sql: str, rows) -> None:
        self._statement(sql, [tuple(r) for r in rows], None)

    def _statement(self, sql: str, params, result):
        """Run ``sql`` on a cursor of its own and return ``result(cursor)`` (None: executemany).
        Plain try blocks rather than a context manager: a registrar runs two or three statements
        per REGISTER."""
        conn = self._connection()
        try:
            cur = conn.cursor()
            try:
                if result is None:
                    cur.executemany(self.driver.sql(sql), params)
                    return None
                cur.execute(self.driver.sql(sql), params)
                return result(cur)
            finally:
                try:
                    cur.close()
                except Exception:
                    pass
        except self.driver.errors as e:
            raise self._failure(e) from None

    def transaction(self) -> Transaction:
        """All the statements inside, or none of them (``with db.transaction(): ...``)."""
        return Transaction(self)

    def close(self) -> None:
        self._drop()

    # -- the connection -------------------------------------------------------------------------
    def _connection(self):
        if self.conn is not None:
            return self.conn
        now = time.monotonic()
        if now < self.retry_at:
            raise DatabaseUnavailable(f"database {self.url} is unavailable: {self.last_failure}")
        try:
            conn = self.driver.connect(self.url)
            try:
                for statement in self.settings:
                    conn.execute(statement)
            except self.driver.errors:
                conn.close()
                raise
            self.conn = conn
        except self.driver.errors as e:
            self.retry_at = now + RECONNECT_INTERVAL
            self.last_failure = _first_line(e)
            raise DatabaseUnavailable(f"cannot connect to database {self.url}: {self.last_failure}") from None
        return self.conn

    def _failure(self, e: Exception) -> DatabaseError:
        text = _first_line(e)
        if self.driver.is_unavailable(e):
            self._drop()
            self.last_failure = text
            self.retry_at = time.monotonic() + RECONNECT_INTERVAL
            return DatabaseUnavailable(f"database {self.url} is unavailable: {text}")
        return DatabaseError(f"database {self.url}: {text}")

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


class Transaction:
    """What ``with db.transaction()`` enters: BEGIN, then COMMIT, or ROLLBACK on an exception (the
    driver's errors raised as ours). Inside another transaction of the same database it does
    nothing: the outer one decides. (A class rather than a generator: a registrar enters one per
    REGISTER, and a generator-based context manager costs twice as much.)"""
    __slots__ = ("db", "conn")

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn = None        # None: nested (or not begun)

    def __enter__(self) -> Database:
        db = self.db
        if db.in_transaction:
            return db
        conn = db._connection()
        self.conn = conn
        try:
            db.driver.begin(conn)
        except BaseException as e:
            self._abandon(e)
            raise
        db.in_transaction = True
        return db

    def __exit__(self, kind, error, traceback) -> bool:
        if self.conn is None:
            return False
        if error is None:
            try:
                self.conn.commit()
                self.db.in_transaction = False
                return False
            except BaseException as e:
                self._abandon(e)
                raise
        self._abandon(error)
        return False            # the exception goes on

    def _abandon(self, error: BaseException) -> None:
        """Roll back; a driver's error is raised as ours (DatabaseUnavailable when the connection
        is gone)."""
        db = self.db
        db.in_transaction = False
        try:
            self.conn.rollback()
        except Exception:
            db._drop()
        if isinstance(error, db.driver.errors):
            raise db._failure(error) from None


def _all_rows(cur) -> list[tuple]:
    return cur.fetchall()


def _rows_changed(cur) -> int:
    return cur.rowcount


def _first_line(e: Exception) -> str:
    text = str(e).strip() or e.__class__.__name__
    return text.splitlines()[0]


def connect(url: str | DbUrl, settings: tuple[str, ...] = ()) -> Database:
    """A Database for ``url`` (not connected yet), running ``settings`` on each connection it
    makes. DatabaseError when its driver is missing."""
    if isinstance(url, str):
        try:
            url = parse_url(url)
        except ValueError as e:
            raise DatabaseError(str(e)) from None
    return Database(url, driver_for(url), settings)
