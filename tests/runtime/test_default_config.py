"""The shipped etc/pyproxy.cfg, started as README.rst says, serves OPTIONS on 127.0.0.1:5060 over
UDP and TCP.

The command is README.rst's literal block that runs `pyproxy -f etc/pyproxy.cfg` without -c (the
part after the last `&&`, today `pyproxy -f etc/pyproxy.cfg -D -E`), run from the repository root
with the installed `pyproxy` script. Should README.rst lose that command, the test falls back to
`pyproxy -f etc/pyproxy.cfg -D -E` and says so in its output."""

import re
import shlex
import shutil
import socket
import subprocess
import sys

import pytest
from ._harness import ROOT, Proxy, port_in_use

FALLBACK = "pyproxy -f etc/pyproxy.cfg -D -E"
PORT = 5060


def readme_run_command() -> str | None:
    readme = (ROOT / "README.rst").read_text()
    for block in re.findall(r"::\n\n((?:(?:    .*)?\n)+)", readme):
        for line in block.splitlines():
            for part in reversed(line.split("&&")):
                words = shlex.split(part.strip()) if part.strip() else []
                if words[:1] == ["pyproxy"] and "-c" not in words and "etc/pyproxy.cfg" in words:
                    return part.strip()
    return None


def test_shipped_config_serves_options_on_5060(reaper, tmp_path):
    command = readme_run_command()
    if command is None:
        print(f"README.rst has no run command for etc/pyproxy.cfg yet; using: {FALLBACK}")
        command = FALLBACK
    busy = [kind for kind, k in (("UDP", socket.SOCK_DGRAM), ("TCP", socket.SOCK_STREAM)) if port_in_use(PORT, k)]
    if busy:
        pytest.fail(f"127.0.0.1:{PORT} is already in use ({'/'.join(busy)}) on this machine: stop whatever "
                    f"listens there (ss -lntup | grep {PORT}); the shipped config listens on {PORT}")
    words = shlex.split(command)
    if "-D" not in words:
        pytest.fail(f"README.rst's run command `{command}` does not stay in the foreground (-D): a daemon "
                    f"would escape this test's clean-up, so it is not started")
    argv = ([shutil.which("pyproxy")] if shutil.which("pyproxy") else [sys.executable, "-m", "pyproxy"]) + words[1:]
    log_path = tmp_path / "proxy.log"
    with open(log_path, "wb") as log:
        popen = reaper.popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    proxy = Proxy(popen, PORT, log_path, children=2)
    proxy.wait_ready(timeout=10)
    assert proxy.answers() == (200, 200)
    assert proxy.stop() == 0, f"`{command}` did not exit 0 on SIGTERM\n{proxy.tail()}"
