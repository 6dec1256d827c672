"""OpenSER 1.3's tables, with its table and column names, so that old databases and habits carry
over: ``version``, ``subscriber`` (auth_db, uri_db), ``location`` (usrloc), ``uri`` (uri_db).

Differences, all additive: ``subscriber.ha1_sha256`` holds the SHA-256 HA1 (RFC 7616) beside the
MD5 ``ha1``; ``subscriber.password`` is 64 characters, not 25; ``location.contact`` and ``path``
512. Times (``expires``, ``last_modified``) are UTC.
"""

from __future__ import annotations

from . import Database, DatabaseError

TIME = {"SQLite": "TIMESTAMP", "PostgreSQL": "TIMESTAMP WITHOUT TIME ZONE", "MySQL": "DATETIME"}

# table -> (version OpenSER 1.3 gave it, columns, indexes); {id} and {time} depend on the backend
TABLES = {
    "version": (None, """
        table_name VARCHAR(32) NOT NULL,
        table_version INTEGER DEFAULT 0 NOT NULL,
        CONSTRAINT version_t_name_idx UNIQUE (table_name)""", ()),
    "subscriber": (6, """
        id {id},
        username VARCHAR(64) DEFAULT '' NOT NULL,
        domain VARCHAR(64) DEFAULT '' NOT NULL,
        password VARCHAR(64) DEFAULT '' NOT NULL,
        email_address VARCHAR(64) DEFAULT '' NOT NULL,
        ha1 VARCHAR(64) DEFAULT '' NOT NULL,
        ha1b VARCHAR(64) DEFAULT '' NOT NULL,
        ha1_sha256 VARCHAR(64) DEFAULT '' NOT NULL,
        rpid VARCHAR(64) DEFAULT NULL,
        CONSTRAINT subscriber_account_idx UNIQUE (username, domain)""",
        ("CREATE INDEX IF NOT EXISTS subscriber_username_idx ON subscriber (username)",)),
    "location": (1004, """
        id {id},
        username VARCHAR(64) DEFAULT '' NOT NULL,
        domain VARCHAR(64) DEFAULT '' NOT NULL,
        contact VARCHAR(512) DEFAULT '' NOT NULL,
        received VARCHAR(128) DEFAULT NULL,
        path VARCHAR(512) DEFAULT NULL,
        expires {time} DEFAULT '2020-05-28 21:32:15' NOT NULL,
        q REAL DEFAULT 1.0 NOT NULL,
        callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
        cseq INTEGER DEFAULT 13 NOT NULL,
        last_modified {time} DEFAULT '1900-01-01 00:00:01' NOT NULL,
        flags INTEGER DEFAULT 0 NOT NULL,
        cflags INTEGER DEFAULT 0 NOT NULL,
        user_agent VARCHAR(255) DEFAULT '' NOT NULL,
        socket VARCHAR(64) DEFAULT NULL,
        methods INTEGER DEFAULT NULL""",
        ("CREATE INDEX IF NOT EXISTS location_aor_idx ON location (username, domain)",
         "CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires)")),
    "uri": (1, """
        id {id},
        username VARCHAR(64) DEFAULT '' NOT NULL,
        domain VARCHAR(64) DEFAULT '' NOT NULL,
        uri_user VARCHAR(64) DEFAULT '' NOT NULL,
        last_modified {time} DEFAULT '1900-01-01 00:00:01' NOT NULL,
        CONSTRAINT uri_account_idx UNIQUE (username, domain, uri_user)""", ()),
}


def existing_tables(db: Database) -> set[str]:
    name = db.driver.name
    if name == "SQLite":
        rows = db.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    elif name == "PostgreSQL":
        rows = db.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    else:
        rows = db.query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
    return {r[0].lower() for r in rows}


def create(db: Database, tables=tuple(TABLES)) -> list[str]:
    """Create what is missing of ``tables`` (and ``version``), recording their versions; the
    tables made now. Existing tables are left as they are."""
    have = existing_tables(db)
    made = []
    for table in ("version", *[t for t in tables if t != "version"]):
        if table in have:
            continue
        version, columns, indexes = TABLES[table]
        ddl = columns.format(id=db.driver.autoincrement, time=TIME[db.driver.name])
        with db.transaction():
            db.execute(f"CREATE TABLE {table} ({ddl})")
            for index in indexes:
                db.execute(index)
            if version is not None:
                db.execute("DELETE FROM version WHERE table_name = ?", (table,))
                db.execute("INSERT INTO version (table_name, table_version) VALUES (?, ?)", (table, version))
        made.append(table)
    return made


def require(db: Database, tables) -> None:
    """DatabaseError naming every table of ``tables`` that is missing, and the remedy."""
    missing = sorted(set(tables) - existing_tables(db))
    if missing:
        raise DatabaseError(f"database {db.url} has no table {', '.join(missing)}: "
                            f"create the tables with 'pyproxyctl db init'")
