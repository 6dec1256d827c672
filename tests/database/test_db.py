"""The database layer on real SQLite, PostgreSQL and MariaDB: URLs, OpenSER's tables, subscribers,
transactions that write all or nothing, and a connection that breaks and comes back."""

import time

import pytest

import pyproxy.db
from pyproxy.db import (
    DatabaseError,
    DatabaseUnavailable,
    DbUrl,
    connect,
    parse_url,
    schema,
    subscribers,
)
from pyproxy.db.subscribers import SubscriberError, digests


def test_urls():
    assert parse_url("sqlite:///var/lib/pyproxy/pyproxy.db") == DbUrl("sqlite", path="/var/lib/pyproxy/pyproxy.db")
    url = parse_url("postgres://op:s%40cret@db.example.com:5433/sip")
    assert (url.scheme, url.user, url.password, url.host, url.port, url.database) == \
        ("postgres", "op", "s@cret", "db.example.com", 5433, "sip")
    assert str(url) == "postgres://op@db.example.com:5433/sip"          # no password in logs
    assert parse_url("mysql://root@127.0.0.1/openser").scheme == "mysql"
    assert parse_url("postgresql://u@h/d").scheme == "postgres"


@pytest.mark.parametrize("bad, why", [
    ("sqlite://relative.db", "absolute path"), ("oracle://u@h/d", "not a database URL"),
    ("postgres://u@h", "expected postgres://"), ("mysql://u@h:99999/d", "port"), ("/var/lib/x.db", "not a")])
def test_bad_urls_say_what_is_expected(bad, why):
    with pytest.raises(ValueError, match=why):
        parse_url(bad)


def test_tables_are_made_once_with_openser_versions(db_url):
    db = connect(db_url)
    try:
        assert schema.create(db) == ["version", "subscriber", "location", "uri"]
        assert schema.create(db) == []
        versions = dict(db.query("SELECT table_name, table_version FROM version"))
        assert versions == {"subscriber": 6, "location": 1004, "uri": 1}
        schema.require(db, ["subscriber", "location"])
    finally:
        db.close()


def test_missing_tables_are_named_with_the_remedy(db_url):
    db = connect(db_url)
    try:
        with pytest.raises(DatabaseError, match="no table location, subscriber.*pyproxyctl db init"):
            schema.require(db, ["subscriber", "location"])
    finally:
        db.close()


def test_subscribers(db_url):
    db = connect(db_url)
    try:
        schema.create(db)
        subscribers.add(db, "alice", "domA.net", "secret", "alice@domA.net")
        subscribers.add(db, "o'brien", "domA.net", "x'); DROP TABLE subscriber; --")     # stored, not run
        with pytest.raises(SubscriberError, match="exists already"):
            subscribers.add(db, "alice", "domA.net", "other")
        query = "SELECT password, ha1, ha1b, ha1_sha256 FROM subscriber WHERE username = ?"
        assert tuple(db.query(query, ("alice",))[0]) == ("", *digests("alice", "domA.net", "secret"))
        subscribers.set_password(db, "alice", "domA.net", "new", keep_password=True)   # (calculate_ha1=1's)
        assert tuple(db.query(query, ("alice",))[0]) == ("new", *digests("alice", "domA.net", "new"))
        assert subscribers.listing(db) == [("alice", "domA.net", "alice@domA.net"), ("o'brien", "domA.net", "")]
        subscribers.remove(db, "o'brien", "domA.net")
        with pytest.raises(SubscriberError, match="no subscriber"):
            subscribers.remove(db, "bob", "domA.net")
        with pytest.raises(SubscriberError, match="not a SIP user name"):
            subscribers.add(db, "a b", "domA.net", "pw")
    finally:
        db.close()


def test_ha1_is_rfc_2617s():
    # RFC 2617 3.5's example: Mufasa, testrealm@host.com, Circle Of Life
    assert digests("Mufasa", "testrealm@host.com", "Circle Of Life")[0] == "939e7578ed9e3c518a452acee763bce9"


def test_a_failed_transaction_writes_nothing(db_url):
    db = connect(db_url)
    try:
        schema.create(db)
        with pytest.raises(DatabaseError):
            with db.transaction():
                db.execute("INSERT INTO uri (username, domain, uri_user) VALUES (?, ?, ?)", ("a", "d", "x"))
                db.execute("INSERT INTO uri (username, domain, uri_user) VALUES (?, ?, ?)", ("a", "d", "x"))
        assert db.query("SELECT COUNT(*) FROM uri")[0][0] == 0
        with pytest.raises(RuntimeError):
            with db.transaction():
                db.execute("INSERT INTO uri (username, domain, uri_user) VALUES (?, ?, ?)", ("a", "d", "x"))
                raise RuntimeError("the caller changed its mind")
        assert db.query("SELECT COUNT(*) FROM uri")[0][0] == 0
    finally:
        db.close()


def test_a_nested_transaction_is_the_outer_ones(db_url):
    """Inside another, a transaction neither commits nor rolls back: the outer one decides."""
    db = connect(db_url)
    try:
        schema.create(db)
        with pytest.raises(RuntimeError):
            with db.transaction():
                with db.transaction():
                    db.execute("INSERT INTO uri (username, domain, uri_user) VALUES (?, ?, ?)", ("a", "d", "x"))
                assert db.in_transaction
                raise RuntimeError("the outer one fails")
        assert not db.in_transaction
        assert db.query("SELECT COUNT(*) FROM uri")[0][0] == 0
        with db.transaction():
            with db.transaction():
                db.execute("INSERT INTO uri (username, domain, uri_user) VALUES (?, ?, ?)", ("a", "d", "x"))
        assert db.query("SELECT COUNT(*) FROM uri")[0][0] == 1
    finally:
        db.close()


def test_a_commit_that_fails_is_a_database_error_and_writes_nothing(tmp_path):
    """SQLite checks a deferred foreign key at COMMIT: the commit itself fails."""
    db = connect(f"sqlite://{tmp_path}/fk.db")
    try:
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child (id INTEGER, parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(DatabaseError, match="FOREIGN KEY"):
            with db.transaction():
                db.execute("INSERT INTO child VALUES (1, 42)")
        assert not db.in_transaction
        assert db.query("SELECT COUNT(*) FROM child") == [(0,)]
        with db.transaction():          # and the next one works
            db.execute("INSERT INTO parent VALUES (42)")
            db.execute("INSERT INTO child VALUES (1, 42)")
        assert db.query("SELECT COUNT(*) FROM child") == [(1,)]
    finally:
        db.close()


def test_a_broken_connection_fails_the_statement_then_comes_back(db_url, monkeypatch):
    monkeypatch.setattr(pyproxy.db, "RECONNECT_INTERVAL", 0.2)
    db = connect(db_url)
    try:
        schema.create(db)
        db.conn.close()                 # the server went away under it
        with pytest.raises(DatabaseError):
            db.query("SELECT COUNT(*) FROM subscriber")
        deadline = time.monotonic() + 10
        while True:
            try:
                assert db.query("SELECT COUNT(*) FROM subscriber")[0][0] == 0
                break
            except DatabaseUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        db.close()


@pytest.mark.parametrize("url", ["postgres://nobody@127.0.0.1:1/none", "mysql://nobody@127.0.0.1:1/none"])
def test_an_unreachable_server_fails_fast_after_the_first_try(url):
    db = connect(url)
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        db.query("SELECT 1")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="unavailable"):
        db.query("SELECT 1")
    assert time.monotonic() - started < 0.5     # no second wait for a connect within RECONNECT_INTERVAL


def test_sqlite_in_a_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    db = connect(f"sqlite://{tmp_path}/file/sub/pyproxy.db")
    with pytest.raises(DatabaseUnavailable, match="cannot make the folder"):
        db.query("SELECT 1")
