"""pyproxyctl's everyday commands against a running pyproxy, over its real mi socket: ps, uptime,
stats, debug, reload, shutdown (text and --json), the socket found in the config given with -f,
the run-time log level followed by every process, reset_statistics, tls_list PEER, and the exit
statuses scripts rely on (0 done, 1 refused, 2 usage, 3 unreachable)."""

import json
import socket
import subprocess
import sys
import time

import pytest

from pyproxy import ctl
from pyproxy.mi.client import DEFAULT_SOCKET

from ._harness import LOOP, free_port, options_request, status_of, udp_options, udp_socket
from .test_mi import call_id_for, tls_lines
from .test_tls import client_context, tls_options

DEADLINE = 20.0     # seconds: CI is a loaded two-core machine


def pyproxyctl(*args, status=0, cwd=None):
    r = subprocess.run([sys.executable, "-m", "pyproxy.ctl", *map(str, args)], capture_output=True, text=True,
                       timeout=60, cwd=cwd)
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    return r


def with_mi(proxy_factory, tmp_path, children=2, extra=""):
    sock = tmp_path / "mi.sock"
    proxy = proxy_factory(children=children, extra=f'mi_socket="{sock}"\n' + extra)
    return proxy, proxy.log_path.parent / "pyproxy.cfg", sock


def test_everyday_commands_find_the_socket_in_the_config(proxy_factory, tmp_path):
    proxy, cfg, sock = with_mi(proxy_factory, tmp_path)
    lines = pyproxyctl("-f", cfg, "ps").stdout.splitlines()
    assert lines[0].split() == ["PID", "RSS", "ROLE"]
    assert sorted(line.split("KiB")[1].strip() for line in lines[1:]) == \
        ["master", "mi", "tcp main", "worker 1", "worker 2"]
    procs = json.loads(pyproxyctl("-f", cfg, "--json", "ps").stdout)
    assert {p["pid"] for p in procs} >= {proxy.pid}
    assert json.loads(pyproxyctl("-f", cfg, "ps", "--json").stdout) is not None   # after the command too
    assert pyproxyctl("uptime", "-s", sock).stdout.startswith("up 0:00:")
    assert json.loads(pyproxyctl("-f", cfg, "--json", "uptime").stdout)["uptime"] >= 0

    for _ in range(3):
        assert udp_options(proxy.port) == 200
    table = pyproxyctl("-f", cfg, "stats").stdout.splitlines()
    assert table[0].split() == ["counter", "total", "worker", "1", "worker", "2", "tcp", "main", "master"]
    requests_in = next(line.split() for line in table if line.startswith("requests_in "))
    assert int(requests_in[1]) >= 3 and int(requests_in[1]) == sum(map(int, requests_in[2:]))
    stats = json.loads(pyproxyctl("-f", cfg, "--json", "stats").stdout)
    assert sum(s["requests_in"] for s in stats.values()) >= 3

    assert json.loads(pyproxyctl("-f", cfg, "mi", "reset_statistics").stdout) == {"reset": 4, "kept": ["tm_inuse"]}
    stats = json.loads(pyproxyctl("-f", cfg, "--json", "stats").stdout)
    assert sum(s["requests_in"] for s in stats.values()) == 0, stats

    # mi without a command: the list of commands
    names = pyproxyctl("-f", cfg, "mi").stdout.split()
    assert {"debug", "reset_statistics", "shutdown", "reload", "tls_list", "which"} <= set(names)
    assert json.loads(pyproxyctl("-f", cfg, "--json", "mi").stdout) == names


def test_default_socket_without_a_readable_config(tmp_path, monkeypatch):
    monkeypatch.setattr(ctl, "DEFAULT_CONFIG", str(tmp_path / "missing-default.cfg"))
    args = ctl.build_parser().parse_args(["ps"])
    assert ctl._socket(args) == DEFAULT_SOCKET      # no config at the default path
    args = ctl.build_parser().parse_args(["-f", str(tmp_path / "missing.cfg"), "ps"])
    with pytest.raises(ctl.CtlError, match="missing.cfg: cannot load the config"):
        ctl._socket(args)                           # the one named does not load: said
    cfg = tmp_path / "p.cfg"
    cfg.write_text(f'listen=udp:127.0.0.1:5060\nmi_socket="{tmp_path}/x.sock"\nroute {{ drop; }}\n')
    assert ctl._socket(ctl.build_parser().parse_args(["-f", str(cfg), "ul", "show"])) == f"{tmp_path}/x.sock"
    assert ctl._socket(ctl.build_parser().parse_args(["-f", str(cfg), "ul", "-s", "/a", "show"])) == "/a"


def _logged(proxy, call_id: str) -> bool:
    return any(m.group("callid") == call_id for m in proxy.processing())


def _options_logged(proxy, u, worker: int) -> bool:
    """An OPTIONS that worker `worker` owns, answered; whether its DEBUG line was written (before
    the answer: the worker logs, then routes)."""
    call_id = call_id_for(worker, proxy.children, "dbg")
    u.sendto(options_request(proxy.port, call_id, "udp", u.getsockname()[1]), (LOOP, proxy.port))
    assert status_of(u.recvfrom(65535)[0]) == 200
    return _logged(proxy, call_id)


def test_debug_level_set_at_run_time_in_every_process(proxy_factory, tmp_path):
    proxy, cfg, sock = with_mi(proxy_factory, tmp_path, extra="debug=2\n")
    assert pyproxyctl("-f", cfg, "debug").stdout == "debug level 2 (notice)\n"
    with udp_socket(timeout=5.0) as u:
        assert not any(_options_logged(proxy, u, w) for w in (1, 2)), proxy.tail()
        assert pyproxyctl("-f", cfg, "debug", "4").stdout == "debug level 4 (debug)\n"
        deadline = time.monotonic() + DEADLINE
        waiting = {1, 2}
        while waiting and time.monotonic() < deadline:
            waiting = {w for w in waiting if not _options_logged(proxy, u, w)}
            time.sleep(0.1)
        assert not waiting, f"workers {waiting} still write no DEBUG line\n{proxy.tail()}"
        assert json.loads(pyproxyctl("-f", cfg, "--json", "debug").stdout) == {"debug": 4, "logs": "debug"}

        pyproxyctl("-f", cfg, "debug", "2")
        deadline = time.monotonic() + DEADLINE
        waiting = {1, 2}
        while waiting and time.monotonic() < deadline:
            waiting = {w for w in waiting if _options_logged(proxy, u, w)}
            time.sleep(0.1)
        assert not waiting, f"workers {waiting} still write DEBUG lines\n{proxy.tail()}"
        assert not any(_options_logged(proxy, u, w) for w in (1, 2, 1, 2))
    r = pyproxyctl("-f", cfg, "debug", "12", status=1)
    assert "expected a level from -3 to 9" in r.stderr
    assert pyproxyctl("-f", cfg, "debug", "loud", status=2).stderr.startswith("usage:")


def test_reload_then_shutdown(proxy_factory, tmp_path):
    proxy, cfg, sock = with_mi(proxy_factory, tmp_path)
    mi_pid = _mi_pid(cfg)
    good = cfg.read_text()
    cfg.write_text(good + "route[9] { forward(; }\n")      # a typo: the answer says so, nothing reloads
    refused = pyproxyctl("reload", "-s", sock, status=1).stderr     # (-f would fail on the typo itself)
    assert "reload refused: 1 error(s)" in refused and f"{cfg}:{len(good.splitlines()) + 1}:" in refused, refused
    cfg.write_text(good)
    assert "SIGHUP" not in proxy.log() and _mi_pid(cfg) == mi_pid
    assert pyproxyctl("-f", cfg, "reload").stdout == "reload requested\n"
    deadline = time.monotonic() + DEADLINE
    while "SIGHUP" not in proxy.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "SIGHUP" in proxy.log(), proxy.tail()
    assert udp_options(proxy.port) == 200
    # the master starts the mi process again with the new config: wait for the new one
    while _mi_pid(cfg) in (mi_pid, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pyproxyctl("-f", cfg, "shutdown").stdout == "shutdown requested\n"
    proxy.popen.wait(DEADLINE)
    assert proxy.popen.returncode == 0, proxy.tail()
    r = pyproxyctl("-f", cfg, "ps", status=3)
    assert str(sock) in r.stderr


def _mi_pid(cfg) -> int | None:
    r = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "-f", str(cfg), "--json", "ps"], capture_output=True,
                       text=True, timeout=60)
    return next((p["pid"] for p in json.loads(r.stdout) if p["role"] == "mi"), None) if r.returncode == 0 else None


def test_exit_statuses(proxy_factory, tmp_path):
    proxy, cfg, sock = with_mi(proxy_factory, tmp_path, children=1)
    # 1: pyproxy said no
    assert "unknown command 'nope'" in pyproxyctl("mi", "-s", sock, "nope", status=1).stderr
    assert "TLS is disabled" in pyproxyctl("mi", "-s", sock, "tls_list", status=1).stderr
    # 2: usage
    assert pyproxyctl("ps", "--bogus", status=2).stderr.startswith("usage:")
    assert pyproxyctl(status=2).stderr.startswith("usage:")
    # 3: nobody there, nobody listening, nobody answering
    r = pyproxyctl("ps", "-s", tmp_path / "none.sock", status=3)
    assert f"{tmp_path / 'none.sock'}: No such file or directory" in r.stderr
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    assert "Connection refused" in pyproxyctl("uptime", "-s", tmp_path / "stale.sock", status=3).stderr
    with socket.socket(socket.AF_UNIX) as mute:
        mute.bind(str(tmp_path / "mute.sock"))
        mute.listen(1)
        r = pyproxyctl("--timeout", "1", "stats", "-s", tmp_path / "mute.sock", status=3)
        assert "did not answer in 1 s" in r.stderr
    assert pyproxyctl("mi", "-f", tmp_path / "no-fifo", "version", status=3).stderr


def test_tls_list_filtered_by_peer(proxy_factory, pki, tmp_path):
    port = free_port()
    proxy, cfg, sock = with_mi(proxy_factory, tmp_path, extra=tls_lines(pki, "localhost", port))
    assert tls_options(port, client_context(pki))[1] == "localhost"
    raw = socket.create_connection((LOOP, port))
    held = client_context(pki, server_name="localhost").wrap_socket(raw, server_hostname="localhost")
    try:
        mine = held.getsockname()[1]
        deadline = time.monotonic() + DEADLINE
        entries = []
        while not entries and time.monotonic() < deadline:
            entries = json.loads(pyproxyctl("-f", cfg, "mi", "tls_list", f"{LOOP}:{mine}").stdout)
        assert [e["peer"] for e in entries] == [f"{LOOP}:{mine}"] and entries[0]["established"]
        everyone = json.loads(pyproxyctl("-f", cfg, "mi", "tls_list", LOOP).stdout)
        assert f"{LOOP}:{mine}" in {e["peer"] for e in everyone}
        assert [e["peer"] for e in json.loads(pyproxyctl("-f", cfg, "mi", "tls_list", "LOCALH").stdout)] \
            == [f"{LOOP}:{mine}"]      # the SNI, ignoring case
        for other in ("10.1.2.3", f"{LOOP}:1", "[::1]:5061", "no-such-peer"):
            assert json.loads(pyproxyctl("-f", cfg, "mi", "tls_list", other).stdout) == [], other
        assert "not IP, IP:PORT" in pyproxyctl("-f", cfg, "mi", "tls_list", f"{LOOP}:x", status=1).stderr
    finally:
        held.close()
