"""The three backends: how each connects, spells a placeholder, begins a transaction, and which of
its errors mean "not reachable now" rather than "this statement is wrong"."""

from __future__ import annotations

import os
import sqlite3

from .base import CONNECT_TIMEOUT, DatabaseError, DbUrl

MADE_FOLDERS: set[str] = set()      # folders made for SQLite files (hand_over() gives them away)


class SQLite:
    name = "SQLite"
    errors = (sqlite3.Error,)
    autoincrement = "INTEGER PRIMARY KEY AUTOINCREMENT"

    @staticmethod
    def connect(url: DbUrl):
        folder = os.path.dirname(url.path)
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder, mode=0o750)
                MADE_FOLDERS.add(folder)
        except OSError as e:
            raise sqlite3.OperationalError(f"cannot make the folder {folder}: {e.strerror}") from None
        # The subscribers' passwords and HA1s: a new file is its owner's alone, as a private key
        # is (SQLite gives its journal files the database file's mode)
        try:
            os.close(os.open(url.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as e:
            raise sqlite3.OperationalError(f"unable to open {url.path}: {e.strerror}") from None
        # autocommit (isolation_level=None): transactions are BEGIN IMMEDIATE, so that two workers
        # updating one user's bindings take turns instead of failing; a busy database is waited for
        conn = sqlite3.connect(url.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")     # readers do not wait for a writer
            conn.execute("PRAGMA synchronous=NORMAL")   # durable at each checkpoint; safe with WAL
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    @staticmethod
    def sql(text: str) -> str:
        return text

    @staticmethod
    def begin(conn) -> None:
        conn.execute("BEGIN IMMEDIATE")

    @staticmethod
    def is_unavailable(e: Exception) -> bool:
        text = str(e).lower()
        if isinstance(e, sqlite3.ProgrammingError):
            return "closed" in text
        return isinstance(e, sqlite3.OperationalError) and any(
            word in text for word in ("locked", "busy", "unable to open", "disk i/o", "readonly", "folder"))


class Postgres:
    name = "PostgreSQL"
    autoincrement = "SERIAL PRIMARY KEY"

    def __init__(self) -> None:
        import psycopg
        self.psycopg = psycopg
        self.errors = (psycopg.Error,)

    def connect(self, url: DbUrl):
        return self.psycopg.connect(host=url.host, port=url.port or 5432, user=url.user, password=url.password,
                                    dbname=url.database, connect_timeout=CONNECT_TIMEOUT, autocommit=True,
                                    options="-c statement_timeout=10000")

    @staticmethod
    def sql(text: str) -> str:
        return text.replace("?", "%s")

    @staticmethod
    def begin(conn) -> None:
        conn.execute("BEGIN")

    def is_unavailable(self, e: Exception) -> bool:
        return isinstance(e, (self.psycopg.OperationalError, self.psycopg.InterfaceError))


class MySQL:
    name = "MySQL"
    autoincrement = "INT AUTO_INCREMENT PRIMARY KEY"
    GONE = {2003, 2006, 2013, 2055, 1205, 1213}      # cannot connect, gone away, lost, lock wait, deadlock

    def __init__(self) -> None:
        import pymysql
        self.pymysql = pymysql
        self.errors = (pymysql.err.Error,)

    def connect(self, url: DbUrl):
        return self.pymysql.connect(host=url.host, port=url.port or 3306, user=url.user or "root",
                                    password=url.password or "", database=url.database, autocommit=True,
                                    charset="utf8mb4", connect_timeout=CONNECT_TIMEOUT, read_timeout=10,
                                    write_timeout=10)

    @staticmethod
    def sql(text: str) -> str:
        return text.replace("?", "%s")

    @staticmethod
    def begin(conn) -> None:
        conn.begin()

    def is_unavailable(self, e: Exception) -> bool:
        if isinstance(e, self.pymysql.err.InterfaceError):
            return True
        return isinstance(e, self.pymysql.err.OperationalError) and bool(e.args) and e.args[0] in self.GONE


def driver_for(url: DbUrl):
    if url.scheme == "sqlite":
        return SQLite()
    try:
        return Postgres() if url.scheme == "postgres" else MySQL()
    except ImportError:
        extra, package = ("postgres", "psycopg") if url.scheme == "postgres" else ("mysql", "PyMySQL")
        raise DatabaseError(f"database {url}: the {package} driver is not installed "
                            f"(pip install 'pyproxy[{extra}]')") from None
