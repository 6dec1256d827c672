"""pyproxy as a systemd service: the readiness protocol (a real Unix datagram socket as
``NOTIFY_SOCKET``), the watchdog fed only while every worker's loop turns, a stuck worker replaced,
and SIGHUP reloads that lose nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ._harness import (DEFAULT_ROUTE, ROOT, TEST_CONFIG, Proxy, free_port, options_request, run_uac, start_uas,
                       udp_options, udp_socket, write_config)
from .test_tls_calls import stunnel, tls_extra

DEADLINE = 30.0


class NotifySocket:
    """What systemd's side of NOTIFY_SOCKET receives, with the time each datagram arrived."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = str(path)
        self.received: list[tuple[float, dict]] = []

    def poll(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.received.append((time.monotonic(), fields))
            return

    def wait_for(self, key: str, value: str = "1", timeout: float = DEADLINE, after: int = 0) -> int:
        """Index of the first datagram from ``after`` on that sets key=value."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (_, fields) in enumerate(self.received[after:], after):
                if fields.get(key) == value:
                    return i
            if time.monotonic() > deadline:
                raise AssertionError(f"no {key}={value} within {timeout} s; got {self.received}")
            self.poll(deadline)

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


def start(reaper, folder, extra: str, env: dict, children: int = 2, route: str = DEFAULT_ROUTE) -> Proxy:
    port = free_port()
    cfg = write_config(folder, port, children, extra, route)
    log_path = folder / "proxy.log"
    with open(log_path, "wb") as logf:
        popen = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), "-D", "-E"], cwd=folder,
                             stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, **env})
    return Proxy(popen, port, log_path, children)


def wait_log(proxy: Proxy, text: str, timeout: float = DEADLINE, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while proxy.log().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} x{count} in the log\n" + proxy.tail()
        assert proxy.alive(), "pyproxy exited\n" + proxy.tail()
        time.sleep(0.1)


def test_readiness_reload_and_stopping_are_told_to_systemd_in_order(reaper, tmp_path, notify):
    proxy = start(reaper, tmp_path, "", {"NOTIFY_SOCKET": notify.path})
    ready = notify.wait_for("READY")
    fields = notify.received[ready][1]
    assert fields["MAINPID"] == str(proxy.pid)
    assert "2 workers" in fields["STATUS"]
    assert udp_options(proxy.port) == 200        # READY=1 came once it serves
    os.kill(proxy.pid, signal.SIGHUP)
    reloading = notify.wait_for("RELOADING", after=ready + 1)
    assert "MONOTONIC_USEC" in notify.received[reloading][1]
    notify.wait_for("READY", after=reloading + 1)
    proxy.popen.terminate()
    notify.wait_for("STOPPING", after=reloading + 1)
    assert proxy.popen.wait(DEADLINE) == 0


def test_abstract_notify_socket_names_are_reached(reaper, tmp_path):
    name = f"pyproxy-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(DEADLINE)
    try:
        start(reaper, tmp_path, "", {"NOTIFY_SOCKET": "@" + name})
        assert b"READY=1" in sock.recv(4096)
    finally:
        sock.close()


def test_a_stopped_worker_pauses_the_watchdog_and_is_replaced(reaper, tmp_path, notify):
    # beats every second; the watchdog waits for three missed beats, the master kills at eight
    proxy = start(reaper, tmp_path, "heartbeat_timeout=8", {"NOTIFY_SOCKET": notify.path,
                                                              "WATCHDOG_USEC": "1000000"})
    ready = notify.wait_for("READY")
    first = notify.wait_for("WATCHDOG", after=ready)
    notify.wait_for("WATCHDOG", after=first + 1)         # fed while all is well
    victim = proxy.workers()[1]
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_log(proxy, "has not turned its loop")
    assert f"worker 1 (pid {victim})" in proxy.log()
    assert "process state: stopped" in proxy.log()
    deadline = time.monotonic() + DEADLINE
    while proxy.workers().get(1) in (None, victim):
        assert time.monotonic() < deadline, "worker 1 was not replaced\n" + proxy.tail()
        time.sleep(0.1)
    assert udp_options(proxy.port) == 200
    # the pings paused while the worker was silent, and resumed after its replacement
    resumed = notify.wait_for("WATCHDOG", after=len(notify.received))
    pings = [t for t, f in notify.received[:resumed + 1] if f.get("WATCHDOG") == "1"]
    gaps = [b - a for a, b in zip(pings, pings[1:]) if b > stopped_at]
    assert max(gaps) >= 3.0, f"the watchdog was fed while a worker did not answer: gaps {gaps}"


def test_a_worker_stuck_in_a_loop_is_replaced_and_its_stack_logged(reaper, tmp_path):
    # a regex that backtracks for hours on 40 a's: the script's endless loop
    route = 'route { if (uri=~"^sip:(a|aa)+b") { exit; }; sl_send_reply("200", "OK"); }'
    proxy = start(reaper, tmp_path, "heartbeat_timeout=2", {}, children=1, route=route)
    proxy.wait_ready()
    victim = proxy.workers()[1]
    with udp_socket() as s:
        s.sendto(options_request(proxy.port, "spin-call", "UDP", s.getsockname()[1],
                                 f"sip:{'a' * 40}@127.0.0.1:{proxy.port}"), ("127.0.0.1", proxy.port))
    wait_log(proxy, "has not turned its loop")
    assert "it was in:" in proxy.log() and "File " in proxy.log(), proxy.tail()
    deadline = time.monotonic() + DEADLINE
    while proxy.workers().get(1) in (None, victim):
        assert time.monotonic() < deadline, "worker 1 was not replaced\n" + proxy.tail()
        time.sleep(0.1)
    proxy.wait_ready()


RELOADED_ROUTE = DEFAULT_ROUTE.replace('sl_send_reply("200", "OK")', 'sl_send_reply("200", "Reloaded %s")')


def options_reason(port: int) -> str:
    with udp_socket(timeout=2.0) as s:
        s.sendto(options_request(port, f"reason-{time.monotonic_ns()}", "UDP", s.getsockname()[1]),
                 ("127.0.0.1", port))
        return s.recv(65536).split(b"\r\n", 1)[0].decode()


def rewrite(path, text: str) -> None:
    """As an editor saves: a new file renamed over the old one."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


def test_three_reloads_under_load_lose_no_call(sipp, reaper, tmp_path, pki):
    tls_port, tunnel_port = free_port(), free_port()
    extra = "debug=2\n" + tls_extra(pki, tls_port)
    proxy = start(reaper, tmp_path, extra, {})
    cfg, port = tmp_path / "pyproxy.cfg", proxy.port
    proxy.wait_ready()
    stunnel(reaper, tmp_path, "client", tunnel_port, tls_port, pki)
    _, uas_port = start_uas(reaper, tmp_path, "udp")
    calls, rate = 1200, 100         # each: 200 calls/s in all for 12 s
    udp = run_uac(reaper, tmp_path, port, uas_port, "udp", calls, rate, name="uac_udp", wait=False)
    tls = run_uac(reaper, tmp_path, tunnel_port, uas_port, "tcp", calls, rate, name="uac_tls", tp="TLS",
                  uas_tp="udp", wait=False)
    good = cfg.read_text()
    head = TEST_CONFIG.format(children=2, port=port, extra=extra, route="", head="")
    steps = [(head + RELOADED_ROUTE % "one", "Reloaded one"),
             (head + "route {\n    forward(;\n}\n", "Reloaded one"),      # broken: the old one stays
             (good.replace(DEFAULT_ROUTE, RELOADED_ROUTE % "three").replace("children=2", "children=3"),
              "Reloaded three")]
    for n, (text, reason) in enumerate(steps, 1):
        time.sleep(2.5)             # spreads the reloads over the 12 s of load; nothing waits on it
        rewrite(cfg, text)
        os.kill(proxy.pid, signal.SIGHUP)
        wait_log(proxy, "SIGHUP: reloading", count=n)
        if n == 2:
            wait_log(proxy, "reload refused")
            assert f"{cfg}:" in proxy.log().split("reload refused")[0].rsplit("SIGHUP", 1)[1]
        else:
            wait_log(proxy, "configuration reloaded:", count=1 if n == 1 else 2)
        deadline = time.monotonic() + DEADLINE
        while options_reason(port) != f"SIP/2.0 200 {reason}":
            assert time.monotonic() < deadline, f"step {n}: {options_reason(port)}\n" + proxy.tail()
            time.sleep(0.2)
    assert "reload: children (2 -> 3) takes effect at the next restart" in proxy.log()
    assert len(proxy.workers()) == 2
    for r in (udp(), tls()):
        assert r.created == calls and r.successful == calls and r.failed == 0, f"{r.describe()}\n{proxy.tail()}"
    assert proxy.alive()


def test_the_state_folder_rule():
    from pyproxy.config.values import state_dir
    assert state_dir("", "/etc/pyproxy", {}) == "/var/lib/pyproxy"
    assert state_dir("", "/etc", {}) == "/var/lib/pyproxy"
    assert state_dir("", "/etc/pyproxy", {"STATE_DIRECTORY": "/var/lib/pyproxy:/x"}) == "/var/lib/pyproxy"
    assert state_dir("", "/home/me/pyproxy/etc", {}) == "/home/me/pyproxy/etc"
    assert state_dir("", "/etcetera", {}) == "/etcetera"
    assert state_dir("data", "/etc/pyproxy", {}) == "/etc/pyproxy/data"


def test_a_service_writes_its_certificate_and_database_in_its_state_folder(reaper, tmp_path):
    """As under systemd (StateDirectory= sets $STATE_DIRECTORY): the shipped config's throw-away
    certificate and SQLite database go there, not beside the read-only config."""
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    port = free_port()
    text = (ROOT / "etc" / "pyproxy.cfg").read_text()
    text = text.replace("127.0.0.1:5060", f"127.0.0.1:{port}").replace("127.0.0.1:5061", f"127.0.0.1:{free_port()}")
    text = text.replace("/tmp/pyproxy_mi.sock", str(tmp_path / "mi.sock"))
    (etc / "pyproxy.cfg").write_text(text)
    log_path = tmp_path / "proxy.log"
    with open(log_path, "wb") as logf:
        popen = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(etc / "pyproxy.cfg"), "-D", "-E"],
                             cwd=tmp_path, stdout=logf, stderr=subprocess.STDOUT,
                             env={**os.environ, "STATE_DIRECTORY": str(state)})
    proxy = Proxy(popen, port, log_path, 2)
    deadline = time.monotonic() + DEADLINE
    while udp_options(port) != 200:
        assert time.monotonic() < deadline and proxy.alive(), proxy.tail()
    assert (state / "tls" / "cert.pem").exists() and (state / "pyproxy.db").exists(), sorted(state.rglob("*"))
    assert sorted(p.name for p in etc.iterdir()) == ["pyproxy.cfg"]


def handed_off(proxy: Proxy, worker: int) -> int:
    """Worker ``worker``'s handoffs_out counter, from the statistics SIGUSR1 makes the master log."""
    before = proxy.log().count(f"statistics of worker {worker}:")
    os.kill(proxy.pid, signal.SIGUSR1)
    wait_log(proxy, f"statistics of worker {worker}:", count=before + 1)
    line = proxy.log().split(f"statistics of worker {worker}:")[-1].split("\n")[0]
    return int(line.split("handoffs_out=")[1].split(",")[0])


def test_a_reload_while_a_worker_is_stuck_leaves_the_server_running(reaper, tmp_path):
    """The stuck worker's hand-off queue is full: the master cannot tell it, says so, and goes on.
    The queue is the hand-off socket's send buffer, which every sender shares: up to twice
    net.core.wmem_max (8 MiB where that is 4 MiB), however many hand-offs a datagram batches. So
    each request carries 8 KB of padding: a few hundred fill it on any machine."""
    from .test_mi import call_id_for
    padding = b"\r\nX-Fill: " + b"x" * 8000 + b"\r\n\r\n"
    proxy = start(reaper, tmp_path, "call_affinity=yes\nheartbeat_timeout=0", {})
    proxy.wait_ready()
    stuck = proxy.workers()[1]
    os.kill(stuck, signal.SIGSTOP)
    try:
        with udp_socket() as s:
            for attempt in range(1, 25):    # until its queue is full when a HUP comes
                target = handed_off(proxy, 2) + 400
                for _ in range(500):
                    request = options_request(proxy.port, call_id_for(1, 2, "fill"), "UDP", s.getsockname()[1])
                    s.sendto(request.replace(b"\r\n\r\n", padding, 1), ("127.0.0.1", proxy.port))
                deadline = time.monotonic() + DEADLINE
                while handed_off(proxy, 2) < target:       # worker 2 passed them on
                    assert time.monotonic() < deadline, proxy.tail()
                os.kill(proxy.pid, signal.SIGHUP)
                wait_log(proxy, "configuration reloaded:", count=attempt)
                if "reload: worker 1 cannot be told" in proxy.log():
                    break
        assert "reload: worker 1 cannot be told (Resource temporarily unavailable)" in proxy.log(), proxy.tail()
    finally:
        os.kill(stuck, signal.SIGCONT)
    assert proxy.alive()
    deadline = time.monotonic() + DEADLINE
    while udp_options(proxy.port) != 200:
        assert time.monotonic() < deadline, proxy.tail()
