"""pyproxyctl db / add / passwd through the real command against real SQLite files: what lands
in the table and in the file system, and the exit statuses scripts rely on."""

import json
import os
import sqlite3
import stat
import subprocess
import sys

from pyproxy.db.subscribers import digests

MANUAL_AUTH = 'loadmodule "sl"\nloadmodule "auth"\nloadmodule "auth_db"\nmodparam("auth_db", "calculate_ha1", 1)\n'


def _row(db, user):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT password, ha1 FROM subscriber WHERE username = ?", (user,)).fetchone()


def test_the_clear_text_password_is_kept_only_where_it_is_needed(ctl, tmp_path):
    """HA1 digests only, unless asked (--plaintext) or the config's auth_db computes the HA1
    from the password column (calculate_ha1=1, the manual's Example 1-14)."""
    db = tmp_path / "users.db"
    url = f"sqlite://{db}"
    assert json.loads(ctl("--json", "--db-url", url, "db", "init").stdout) == {
        "database": url, "created": ["version", "subscriber", "location", "uri"]}
    assert stat.S_IMODE(db.stat().st_mode) == 0o600        # passwords' digests: the owner's alone
    ctl("--db-url", url, "add", "alice@domA.net", "secret")
    assert _row(db, "alice") == ("", digests("alice", "domA.net", "secret")[0])
    ctl("--db-url", url, "passwd", "--plaintext", "alice@domA.net", "new")
    assert _row(db, "alice") == ("new", digests("alice", "domA.net", "new")[0])
    ctl("--db-url", url, "passwd", "alice@domA.net", "newer")
    assert _row(db, "alice")[0] == ""
    cfg = tmp_path / "manual.cfg"
    cfg.write_text(f'alias="domA.net"\n{MANUAL_AUTH}modparam("auth_db", "db_url", "{url}")\n')
    assert ctl("-f", cfg, "add", "bob", "bobs-secret").stderr == ""
    assert _row(db, "bob") == ("bobs-secret", digests("bob", "domA.net", "bobs-secret")[0])
    warned = ctl("-f", cfg, "add", "carol@domB.net", "pw").stderr       # a domain the config does not serve
    assert "warning: domB.net is none of" in warned and _row(db, "carol")


def test_usage_errors_exit_2_and_a_closed_pipe_is_no_error(ctl, tmp_path):
    url = f"sqlite://{tmp_path}/users.db"
    ctl("--db-url", url, "db", "init")
    assert ctl("--db-url", url, "add", "dave@domA.net", status=2).stderr == \
        "pyproxyctl: add needs USER PASSWORD (or --file FILE)\n"
    # a reader that stopped early (| head): the output ends quietly, no traceback
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "--json", "--db-url", url, "db", "init"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and "Error" not in done.stderr, done.stderr
