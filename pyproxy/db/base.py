"""What the database package and its drivers share: the URL and the errors."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_URL = "sqlite:///var/lib/pyproxy/pyproxy.db"

CONNECT_TIMEOUT = 3             # seconds


class DatabaseError(Exception):
    """A statement failed: the text names the database and the reason."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached (or is locked) now; a later attempt may succeed."""


@dataclass(frozen=True)
class DbUrl:
    scheme: str                 # sqlite, postgres or mysql
    path: str | None = None     # sqlite: the file
    user: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None

    def __str__(self) -> str:
        """The URL without its password: for logs and messages."""
        if self.scheme == "sqlite":
            return f"sqlite://{self.path}"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{self.host or ''}{port}/{self.database or ''}"


SCHEMES = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres", "mysql": "mysql"}


def parse_url(text: str) -> DbUrl:
    """A db_url, checked; ValueError says what is wrong with it."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError(f"'{text}' is not a database URL: expected sqlite:///path/to/file.db, "
                         f"postgres://user:password@host/database or mysql://user:password@host/database")
    scheme = SCHEMES[scheme.lower()]
    if scheme == "sqlite":
        if not rest.startswith("/"):
            raise ValueError(f"'{text}': an SQLite URL names an absolute path: sqlite:///path/to/file.db")
        return DbUrl("sqlite", path=rest)
    parts = urlsplit(text)
    database = parts.path.lstrip("/")
    if not parts.hostname or not database:
        raise ValueError(f"'{text}': expected {scheme}://user:password@host[:port]/database")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"'{text}': the port is not a number from 1 to 65535") from None
    return DbUrl(scheme, user=unquote(parts.username) if parts.username else None,
                 password=unquote(parts.password) if parts.password is not None else None,
                 host=parts.hostname, port=port, database=unquote(database))
