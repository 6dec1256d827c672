"""Fresh databases on the three backends, for tests: SQLite in a temporary folder, and a new
database on the PostgreSQL (127.0.0.1:5432, trust) and MariaDB (127.0.0.1:3306, root) servers of
the test machine, dropped afterwards. A server that is not running skips its tests with the reason.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest

from pyproxy.db import DatabaseError, connect

SERVERS = {
    "postgres": ("postgres://postgres@127.0.0.1:5432/postgres", "postgres://postgres@127.0.0.1:5432/{name}"),
    "mysql": ("mysql://root@127.0.0.1:3306/mysql", "mysql://root@127.0.0.1:3306/{name}"),
}
BACKENDS = ("sqlite", "postgres", "mysql")


@contextlib.contextmanager
def fresh_database(backend: str, folder):
    """The URL of an empty database on ``backend``; dropped when the block ends."""
    if backend == "sqlite":
        yield f"sqlite://{folder}/pyproxy-{uuid.uuid4().hex[:8]}.db"
        return
    admin_url, url = SERVERS[backend]
    name = f"pyproxy_test_{uuid.uuid4().hex[:12]}"
    admin = connect(admin_url)
    try:
        admin.execute(f"CREATE DATABASE {name}")
    except DatabaseError as e:
        admin.close()
        pytest.skip(f"{backend} server not available on this machine: {e}")
    try:
        yield url.format(name=name)
    finally:
        drop = f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if backend == "postgres" else "")
        try:
            admin.execute(drop)
        finally:
            admin.close()
