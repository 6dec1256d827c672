"""tools/microbench.py, the in-process measure of the hot paths sessions compare their changes
by: both of its worker paths still run, and what they check of the replies holds (the forwarded
INVITE and 200 OK are counted as sent; a REGISTER's 200 OK lists every binding of its user)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MICROBENCH = Path(__file__).resolve().parents[2] / "tools" / "microbench.py"


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(MICROBENCH), "--rounds", "1", "--number", "200", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_stateless_paths_run():
    out = run()
    assert re.search(r"INVITE through a worker, sent: [\d.]+ us/message", out), out
    assert re.search(r"200 OK through a worker, sent: [\d.]+ us/message", out), out


def test_the_register_path_runs_with_several_bindings_per_user():
    out = run("--register", "--bindings", "3")
    assert re.search(r"REGISTER through a worker, 3 binding\(s\) per user: [\d.]+ us/message", out), out
