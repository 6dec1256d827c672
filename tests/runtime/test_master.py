"""The master process (issue 3, "Master" and "Logging"): the pid file (-P), detaching (fork=yes
without -D), dropping to `user`/`group` after binding, logging to syslog (log_facility) or to
stderr with the role and pid on every line, SIGHUP reserved for reload, SIGUSR1 statistics, and
what the master does with children that die right after they start (back-off, then a clear stop
rather than an endless respawn loop).

Every proxy runs on 127.0.0.1 on free ports; every process is registered with the `reaper` (or,
for the daemon, which escapes its launcher, found by its pid file, its descendants and its
sockets and killed in a finally block); every wait is bounded."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from ._harness import (
    DEFAULT_ROUTE,
    LOOP,
    Proxy,
    descendants,
    free_port,
    tcp_options,
    title,
    udp_options,
    write_config,
)

ROLE_LINE = re.compile(r"^(?P<role>master|worker (?P<n>\d+)|tcp main|mi)\[(?P<pid>\d+)\] "
                       r"(?P<level>DEBUG|INFO|NOTICE|WARNING|ERROR|CRITICAL): ")
STDERR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<rest>.*)$")
STATS_LINE = re.compile(r"\bmaster\[(?P<pid>\d+)\] WARNING: statistics of (?P<role>worker \d+|tcp main|master): "
                        r"(?P<counters>.*)$")


# ------------------------------------------------------------------ helpers

def launch(reaper, folder: Path, *args: str, children: int = 2, extra: str = "", port: int | None = None,
           ready: bool = True, separate_stderr: bool = False) -> Proxy:
    """`python -m pyproxy -f <folder>/pyproxy.cfg ARGS` (the harness's test config) in its own
    session, registered with the reaper; output in <folder>/proxy.log (stderr in proxy.err when
    `separate_stderr`)."""
    folder.mkdir(exist_ok=True)
    port = port or free_port()
    cfg = write_config(folder, port, children, extra, DEFAULT_ROUTE)
    log_path = folder / "proxy.log"
    with open(log_path, "wb") as out:
        if separate_stderr:
            with open(folder / "proxy.err", "wb") as err:
                popen = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), *args], cwd=folder,
                                     stdout=out, stderr=err)
        else:
            popen = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), *args], cwd=folder,
                                 stdout=out, stderr=subprocess.STDOUT)
    proxy = Proxy(popen, port, log_path, children)
    if ready:
        proxy.wait_ready()
    return proxy


def wait_for(predicate, timeout: float, step: float = 0.05):
    """Poll `predicate` until it returns something truthy or `timeout` s pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def wait_exit(proxy: Proxy, timeout: float) -> int | None:
    try:
        return proxy.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (a zombie counts as exited); those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def holders_of(port: int) -> set[int]:
    """Pids of pyproxy processes holding a socket bound to 127.0.0.1:`port` (UDP or TCP)."""
    pids = set()
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.Error:
        return pids
    for c in conns:
        if c.pid and c.laddr and c.laddr.port == port and c.laddr.ip == LOOP:
            try:
                if title(psutil.Process(c.pid)).startswith("pyproxy"):
                    pids.add(c.pid)
            except psutil.Error:
                pass
    return pids


def kill_hard(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def stats_lines(text: str) -> list[tuple[int, str, dict[str, int]]]:
    out = []
    for line in text.splitlines():
        m = STATS_LINE.search(line)
        if m:
            counters = dict((k, int(v)) for k, v in (kv.split("=") for kv in m["counters"].split(", ")))
            out.append((int(m["pid"]), m["role"], counters))
    return out


def usr1_snapshot(proxy: Proxy, expected_lines: int, timeout: float = 5.0) -> dict[str, dict[str, int]]:
    """Send SIGUSR1 to the master; the counters it logs, by role, once all `expected_lines` new
    statistics lines are in the log."""
    before = len(stats_lines(proxy.log()))
    os.kill(proxy.pid, signal.SIGUSR1)
    wait_for(lambda: len(stats_lines(proxy.log())) >= before + expected_lines, timeout)
    new = stats_lines(proxy.log())[before:]
    assert len(new) == expected_lines, \
        f"SIGUSR1: {len(new)} statistics lines within {timeout} s, expected {expected_lines}\n{proxy.tail()}"
    assert {pid for pid, _, _ in new} == {proxy.pid}, f"statistics not logged by the master: {new}"
    return {role: counters for _, role, counters in new}


def privileged_free_port() -> int:
    """A port below 1024, free for UDP and TCP on 127.0.0.1 (only root may bind it)."""
    for port in range(600 + os.getpid() % 300, 1000):
        socks = []
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((LOOP, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free privileged port on 127.0.0.1")


def is_root() -> bool:
    return os.geteuid() == 0


# ------------------------------------------------------------------ 1. the pid file

def test_pid_file_holds_the_master_pid_and_is_removed_on_sigterm(reaper, tmp_path):
    """-P FILE: while the server runs, FILE holds the master's pid (one line); a SIGTERM stops the
    server with status 0 and removes FILE."""
    pid_file = tmp_path / "pyproxy.pid"
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", "-P", str(pid_file))
    assert pid_file.read_text() == f"{proxy.pid}\n"
    assert title(psutil.Process(int(pid_file.read_text()))) == "pyproxy: master"

    proxy.popen.send_signal(signal.SIGTERM)
    rc = wait_exit(proxy, 8)
    assert rc == 0, f"exit status {rc} (None: still running 8 s after SIGTERM)\n{proxy.tail()}"
    assert not pid_file.exists(), f"the pid file survived a clean stop: {pid_file.read_text()!r}"


def test_an_unwritable_pid_file_stops_the_start_saying_why(reaper, tmp_path):
    """-P in a folder that does not exist: the start fails (status 1) with a message naming the
    file and the reason, and nothing is left running."""
    pid_file = tmp_path / "missing" / "pyproxy.pid"
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", "-P", str(pid_file), ready=False)
    rc = wait_exit(proxy, 10)
    kids = descendants(proxy.pid)
    assert rc == 1, f"exit status {rc}\n{proxy.tail()}"
    assert f"cannot write the pid file {pid_file}: No such file or directory" in proxy.log(), proxy.tail()
    assert not gone(kids, 5)


# ------------------------------------------------------------------ 2. daemon

def test_fork_without_D_detaches_and_the_daemon_serves_until_sigterm(reaper, tmp_path):
    """fork=yes without -D: the command returns promptly with status 0 while the master goes on as
    a daemon (found through its -P pid file): reparented away from the command, in a session of its
    own but not its leader (double fork), stdin/stdout/stderr on /dev/null, with its workers and TCP
    supervisor; it answers OPTIONS over UDP and TCP. SIGTERM through the pid file stops it and every
    one of its processes, and removes the pid file. Whatever fails, the daemon is SIGKILLed."""
    folder = tmp_path / "d"
    folder.mkdir()
    port = free_port()
    cfg = write_config(folder, port, 2)
    pid_file = folder / "pyproxy.pid"
    master_pid = None
    seen: set[int] = set()
    leaked_r, leaked_w = os.pipe()         # a descriptor the starting shell left open
    try:
        with open(folder / "launcher.log", "wb") as out:
            t0 = time.monotonic()
            launcher = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), "-P", str(pid_file)],
                                    cwd=folder, stdout=out, stderr=subprocess.STDOUT, pass_fds=(leaked_w,))
        try:
            rc = launcher.wait(10)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
        launcher_log = (folder / "launcher.log").read_text(errors="replace")
        assert rc == 0, f"the command did not return 0 within 10 s (rc={rc}): {launcher_log}"
        assert took < 5, f"the command took {took:.1f} s to return"

        text = wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 5)
        assert text and text.isdigit(), f"no pid file {pid_file} within 5 s of detaching: {text!r}"
        master_pid = int(text)
        master = psutil.Process(master_pid)
        seen.add(master_pid)
        assert title(master) == "pyproxy: master"
        assert master_pid != launcher.pid and master.ppid() != launcher.pid
        sid = os.getsid(master_pid)
        assert sid not in (os.getsid(0), launcher.pid), "the daemon stayed in the launcher's session"
        assert sid != master_pid, "the daemon leads its session: it could acquire a terminal (no double fork)"
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{master_pid}/fd/{fd}") == os.devnull, f"fd {fd} of the daemon"
        assert os.readlink(f"/proc/{master_pid}/cwd") == "/", "the daemon keeps the starting folder busy"
        pipe = os.readlink(f"/proc/self/fd/{leaked_w}")
        held = [os.readlink(f"/proc/{master_pid}/fd/{fd}") for fd in os.listdir(f"/proc/{master_pid}/fd")]
        assert pipe not in held, "the daemon kept a descriptor it inherited"
        assert "pyproxy: warning: logging to standard error" in launcher_log

        got = wait_for(lambda: (udp_options(port, timeout=0.5, tries=1), tcp_options(port, timeout=1.0))
                       == (200, 200), 10, step=0.2)
        assert got, f"the daemon does not answer OPTIONS on UDP and TCP port {port}: " \
                    f"{udp_options(port, timeout=0.5, tries=1), tcp_options(port, timeout=1.0)}"
        kids = master.children(recursive=True)
        seen.update(k.pid for k in kids)
        assert sorted(title(k) for k in kids) == ["pyproxy: tcp main", "pyproxy: worker 1", "pyproxy: worker 2"]

        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        alive = gone([master, *kids], 10)
        assert not alive, f"still running 10 s after SIGTERM: {[(p.pid, title(p)) for p in alive]}"
        assert not pid_file.exists(), "the daemon left its pid file behind"
        assert not holders_of(port)
    finally:
        os.close(leaked_r)
        os.close(leaked_w)
        if pid_file.exists():
            try:
                seen.add(int(pid_file.read_text().strip()))
            except ValueError:
                pass
        for pid in list(seen):
            seen.update(p.pid for p in descendants(pid))
        seen |= holders_of(port)
        kill_hard(seen)
        procs = []
        for pid in seen:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        gone(procs, 5)


# ------------------------------------------------------------------ 3. user and group

def test_every_process_runs_as_user_and_group_after_binding(reaper, tmp_path):
    """user=nobody / group=nogroup in the config. As root: the sockets are bound first (a port
    below 1024, which nobody may not bind), then the master and every child run as nobody/nogroup
    (real, effective and saved ids; supplementary groups only nogroup) and OPTIONS are answered
    over UDP and TCP. Not root: the start fails with a message saying it needs root."""
    extra = 'user="nobody"\ngroup="nogroup"\n'
    if not is_root():
        proxy = launch(reaper, tmp_path / "p", "-D", "-E", extra=extra, ready=False)
        rc = wait_exit(proxy, 10)
        assert rc == 1, f"exit status {rc}\n{proxy.tail()}"
        assert "cannot switch to user nobody / group nogroup: not root" in proxy.log(), proxy.tail()
        return
    import grp
    import pwd
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", extra=extra, port=privileged_free_port(), ready=False)
    proxy.wait_ready()
    procs = [psutil.Process(proxy.pid), *psutil.Process(proxy.pid).children()]
    assert sorted(title(p) for p in procs) == \
        ["pyproxy: master", "pyproxy: tcp main", "pyproxy: worker 1", "pyproxy: worker 2"]
    for p in procs:
        assert tuple(p.uids()) == (uid,) * 3, f"{title(p)}: uids {p.uids()}"
        assert tuple(p.gids()) == (gid,) * 3, f"{title(p)}: gids {p.gids()}"
        groups = next(ln for ln in Path(f"/proc/{p.pid}/status").read_text().splitlines()
                      if ln.startswith("Groups:")).split()[1:]
        assert groups in ([], [str(gid)]), f"{title(p)} kept supplementary groups {groups}"
    assert proxy.answers() == (200, 200)


@pytest.mark.parametrize("how", ["-u", "user=", "-g", "group="])
def test_an_unknown_user_or_group_is_a_clear_startup_error(reaper, tmp_path, how):
    """An unknown user (-u or user=) or group (-g or group=) stops the start with status 1, a message
    naming it, and no process left (this needs no root: the name is looked up before switching)."""
    name = f"nosuch{os.getpid() % 1000}{'user' if how in ('-u', 'user=') else 'group'}"
    args, extra = ["-D", "-E"], ""
    if how.startswith("-"):
        args += [how, name]
    else:
        extra = f'{how}"{name}"\n'
    proxy = launch(reaper, tmp_path / "p", *args, extra=extra, ready=False)
    rc = wait_exit(proxy, 10)
    kids = descendants(proxy.pid)
    assert rc == 1, f"exit status {rc}\n{proxy.tail()}"
    lines = [ln for ln in proxy.log().splitlines() if name in ln]
    assert lines and any(re.search(r"no such (user|group)", ln) for ln in lines), proxy.tail()
    assert not gone(kids, 5)


def test_pid_file_in_a_root_only_folder_with_user(reaper, tmp_path):
    """-P FILE -u nobody, FILE in a folder only root may write (as /run is): the pid file is written
    before the privileges are dropped (as OpenSER does), so the server starts, runs as nobody and
    FILE holds the master's pid. Not root: -u nobody fails with the not-root message."""
    private = tmp_path / "run"
    private.mkdir(mode=0o755)
    pid_file = private / "pyproxy.pid"
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", "-u", "nobody", "-P", str(pid_file), ready=False)
    if not is_root():
        assert wait_exit(proxy, 10) == 1, proxy.tail()
        assert "cannot switch to user nobody / group -: not root" in proxy.log(), proxy.tail()
        return
    proxy.wait_ready()
    assert pid_file.read_text() == f"{proxy.pid}\n"
    assert psutil.Process(proxy.pid).uids().effective != 0


def test_numeric_ids_and_the_management_interface_with_user(reaper, tmp_path):
    """-u 65534 -g 65534 (numbers, as OpenSER took them): the FIFO and the socket belong to that
    user, so its mi process can answer root's pyproxyctl on the FIFO, and the master (that user by
    then) removes both when it stops; so does an autogenerated key, which tls_reload reads."""
    shared = Path(tempfile.mkdtemp(prefix="pyproxy-test-"))     # pytest's folders are root's alone
    try:
        shared.chmod(0o1777)       # as /tmp is
        extra = (f'mi_socket="{shared}/mi.sock"\nfifo="{shared}/fifo"\ndisable_tls=no\ntls_autogenerate=yes\n'
                 f'listen=tls:{LOOP}:{free_port()}\ntls_certificate="tls/cert.pem"\ntls_private_key="tls/key.pem"\n')
        proxy = launch(reaper, tmp_path / "p", "-D", "-E", "-u", "65534", "-g", "65534", extra=extra, ready=False)
        if not is_root():
            assert wait_exit(proxy, 10) == 1, proxy.tail()
            return
        proxy.wait_ready()
        assert psutil.Process(proxy.pid).uids().effective == 65534
        assert os.stat(shared / "fifo").st_uid == 65534 == os.stat(shared / "mi.sock").st_uid
        assert os.stat(tmp_path / "p" / "tls" / "key.pem").st_uid == 65534     # for tls_reload
        r = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "mi", "-f", str(shared / "fifo"), "uptime"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.startswith("200 OK"), r.stdout + r.stderr + proxy.tail()
        proxy.popen.send_signal(signal.SIGTERM)
        assert wait_exit(proxy, 10) == 0
        assert not (shared / "fifo").exists() and not (shared / "mi.sock").exists(), proxy.tail()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ------------------------------------------------------------------ 4. logging

def test_log_facility_sends_every_line_to_syslog_with_role_and_pid(reaper, tmp_path):
    """log_stderror=no, log_facility=LOG_LOCAL3: logs.py sends to the syslog socket /dev/log.
    Without a syslog on this machine and as root, the test serves /dev/log itself and receives the
    master's start line, the workers' per-message lines and the SIGUSR1 statistics, each with
    facility local3 and `pyproxy: <role>[<pid>]` naming the process that wrote it; nothing is
    written on stdout or stderr. Otherwise (a real syslog at /dev/log, or not root) this checks
    what it can: the server serves and writes nothing on stdout or stderr."""
    receiver = None
    if not os.path.exists("/dev/log") and is_root():
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind("/dev/log")
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        proxy = launch(reaper, tmp_path / "p", "-D", separate_stderr=True,
                       extra="log_stderror=no\nlog_facility=LOG_LOCAL3\n")
        pids = {"master": proxy.pid, "tcp main": proxy.processes()["pyproxy: tcp main"],
                **{f"worker {n}": pid for n, pid in proxy.workers().items()}}
        usr1_snapshot_lines = len(pids)
        os.kill(proxy.pid, signal.SIGUSR1)
        time.sleep(0.3)
        proxy.popen.send_signal(signal.SIGTERM)
        assert wait_exit(proxy, 8) == 0
        assert proxy.log() == "", f"stdout: {proxy.log()[-2000:]}"
        err = (tmp_path / "p" / "proxy.err").read_text(errors="replace")
        assert err == "", f"stderr: {err[-2000:]}"
        if receiver is None:
            return

        receiver.settimeout(0.3)
        ours, bad = [], []
        while True:
            try:
                data = receiver.recv(65536).decode("utf-8", "replace").rstrip("\x00")
            except socket.timeout:
                break
            m = re.match(r"^<(?P<pri>\d+)>pyproxy: (?P<rest>.*)$", data, re.S)
            r = ROLE_LINE.match(m["rest"]) if m else None
            if r and int(r["pid"]) not in pids.values():
                continue        # another pyproxy on this machine logging to syslog
            if not (m and r):
                bad.append(data)
                continue
            ours.append((int(m["pri"]), r["role"], int(r["pid"]), m["rest"]))
        assert not bad, f"syslog messages without `pyproxy: <role>[<pid>] LEVEL: `: {bad[:5]}"
        assert ours, "nothing received on /dev/log"
        assert {pri >> 3 for pri, *_ in ours} == {19}, \
            f"facilities {sorted({pri >> 3 for pri, *_ in ours})}, LOG_LOCAL3 is 19"
        wrong = [(role, pid, text) for _, role, pid, text in ours if pids.get(role) != pid]
        assert not wrong, f"lines whose role does not match the pid that wrote them ({pids}): {wrong[:5]}"
        texts = [text for *_, text in ours]
        assert any(t.startswith(f"master[{proxy.pid}] NOTICE: pyproxy started") for t in texts), texts[:5]
        assert any(re.match(r"worker \d+\[\d+\] DEBUG: processing request OPTIONS", t) for t in texts), texts
        assert sum("statistics of" in t for t in texts) == usr1_snapshot_lines, texts
        assert any(t.startswith(f"master[{proxy.pid}] NOTICE: stopping (SIGTERM)") for t in texts), texts
    finally:
        if receiver is not None:
            receiver.close()
            os.unlink("/dev/log")


def test_without_a_syslog_the_lines_go_to_stderr_with_a_warning(reaper, tmp_path):
    """A container has no /dev/log: log_stderror=no must not lose every line, the certificate
    warning included."""
    if os.path.exists("/dev/log"):
        pytest.skip("a syslog serves /dev/log on this machine")
    proxy = launch(reaper, tmp_path / "p", "-D", extra="log_stderror=no\n")
    assert udp_options(proxy.port) == 200
    proxy.popen.send_signal(signal.SIGTERM)
    assert wait_exit(proxy, 8) == 0
    log = proxy.log()
    assert "WARNING: syslog cannot be reached (/dev/log: No such file or directory): logging to standard " \
           "error instead" in log, log[-2000:]
    assert "NOTICE: pyproxy started" in log


def test_every_stderr_line_names_its_role_and_pid(reaper, tmp_path):
    """-E, debug=4: every line on stderr is `<date> <time> <role>[<pid>] <LEVEL>: ...` and the pid is
    the one of the process with that role (master, worker N, tcp main); workers log the messages
    they process, the master its start, SIGUSR1 statistics and stop."""
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", children=3)
    pids = {"master": proxy.pid, "tcp main": proxy.processes()["pyproxy: tcp main"],
            **{f"worker {n}": pid for n, pid in proxy.workers().items()}}
    for _ in range(6):
        assert udp_options(proxy.port) == 200
        assert tcp_options(proxy.port) == 200
    usr1_snapshot(proxy, len(pids))
    proxy.popen.send_signal(signal.SIGTERM)
    assert wait_exit(proxy, 8) == 0, proxy.tail()
    lines = proxy.log().splitlines()
    bad, wrong, roles = [], [], set()
    for line in lines:
        m = STDERR_LINE.match(line)
        r = ROLE_LINE.match(m["rest"]) if m else None
        if not r:
            bad.append(line)
        elif pids.get(r["role"]) != int(r["pid"]):
            wrong.append(line)
        else:
            roles.add(r["role"])
    assert lines and not bad, f"lines without `<date> <time> <role>[<pid>] <LEVEL>: `: {bad[:10]}"
    assert not wrong, f"lines whose role does not match the pid of that process ({pids}): {wrong[:10]}"
    assert "master" in roles and any(r.startswith("worker ") for r in roles), roles


# ------------------------------------------------------------------ 5. SIGHUP

def test_sighup_reloads_in_place_and_the_server_goes_on(reaper, tmp_path):
    """SIGHUP reloads the configuration in place. A HUP to the master, then a HUP to the whole
    process group (a terminal hang-up), leave the workers and the supervisor in place (same pids):
    the master reloads once per HUP, the others ignore it; OPTIONS are still answered over UDP
    and TCP."""
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", children=2)
    before = proxy.processes()
    os.kill(proxy.pid, signal.SIGHUP)
    notice = "configuration reloaded:"
    assert wait_for(lambda: notice in proxy.log(), 10), proxy.tail()
    assert re.search(rf"master\[{proxy.pid}\] NOTICE: SIGHUP: reloading", proxy.log()), proxy.tail()
    os.killpg(proxy.pid, signal.SIGHUP)        # start_new_session: the master leads its group
    assert wait_for(lambda: proxy.log().count(notice) >= 2, 10), proxy.tail()
    time.sleep(0.3)
    assert proxy.alive(), f"exited with {proxy.popen.returncode} after SIGHUP\n{proxy.tail()}"
    assert proxy.processes() == before, "SIGHUP changed the processes"
    assert proxy.answers() == (200, 200)


# ------------------------------------------------------------------ 6. children that die at start

def kill_as_soon_as_respawned(proxy: Proxy, number: int, times: int, timeout: float = 3.0) -> list[float]:
    """SIGKILL worker `number` `times` times, each time as soon as its replacement has its title;
    the seconds each replacement took to appear."""
    took = []
    for _ in range(times):
        old = proxy.workers()[number]
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()

        def replaced():
            pid = proxy.workers().get(number)
            return pid if pid and pid != old else None

        new = wait_for(replaced, timeout, step=0.01)
        took.append(time.monotonic() - t0)
        if not new:
            break
    return took


def test_quick_worker_deaths_are_respawned_with_back_off_and_without_spinning(reaper, tmp_path):
    """There is no config-only way to make a worker fail at boot (Worker.boot runs modules'
    child_init, and no module has one), so this kills a worker with SIGKILL as soon as each
    replacement appears, 4 times (one fewer than RESPAWN_LIMIT): each death within a second of the
    start is respawned after a back-off of 0.1 s x the number of quick deaths in a row (0.1, 0.2,
    0.3, 0.4 s), the master does not spin (little CPU), the server stays up; a death more than a
    second after the last start is respawned at once (the count starts again); OPTIONS are still
    answered."""
    from pyproxy.runtime.arbiter import RESPAWN_LIMIT
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", children=2)
    master = psutil.Process(proxy.pid)
    time.sleep(1.1)         # worker 2 has lived more than a second: its death is not a quick one
    [t] = kill_as_soon_as_respawned(proxy, 2, 1)
    assert t < 0.5, f"a death after a second of life waited {t:.2f} s for its respawn\n{proxy.tail()}"
    cpu0 = sum(master.cpu_times()[:2])
    took = kill_as_soon_as_respawned(proxy, 2, RESPAWN_LIMIT - 1)
    cpu = sum(master.cpu_times()[:2]) - cpu0
    assert len(took) == RESPAWN_LIMIT - 1 and all(t < 3 for t in took), f"{took}\n{proxy.tail()}"
    for k, t in enumerate(took, 1):
        assert 0.1 * k - 0.02 <= t <= 0.1 * k + 0.5, f"quick death {k}: respawned after {t:.3f} s\n{proxy.tail()}"
    assert cpu < 0.5, f"the master used {cpu:.2f} s of CPU for {len(took)} respawns"
    assert proxy.alive(), f"pyproxy stopped after {RESPAWN_LIMIT - 1} quick deaths\n{proxy.tail()}"
    assert len(re.findall(r"master\[\d+\] ERROR: worker 2 \(pid \d+\) died with signal 9; respawning it",
                          proxy.log())) == RESPAWN_LIMIT, proxy.tail()

    time.sleep(1.2)         # the replacement has now lived more than a second
    [t] = kill_as_soon_as_respawned(proxy, 2, 1)
    assert t < 0.5, f"after quick deaths, a death after a second of life waited {t:.2f} s for its respawn"
    assert proxy.alive() and "CRITICAL" not in proxy.log(), proxy.tail()
    assert sorted(proxy.processes()) == ["pyproxy: tcp main", "pyproxy: worker 1", "pyproxy: worker 2"]
    assert proxy.answers() == (200, 200)


def test_a_worker_dying_at_start_again_and_again_stops_the_server(reaper, tmp_path):
    """A worker that dies within a second of starting RESPAWN_LIMIT (5) times in a row is not
    respawned forever: the master logs a CRITICAL line naming it, stops every child and exits with
    status 1, removing its pid file."""
    from pyproxy.runtime.arbiter import RESPAWN_LIMIT
    pid_file = tmp_path / "pyproxy.pid"
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", "-P", str(pid_file), children=2)
    kids = psutil.Process(proxy.pid).children()
    time.sleep(1.1)         # the first death below is not a quick one: the count starts from 0
    took = kill_as_soon_as_respawned(proxy, 1, RESPAWN_LIMIT)
    assert len(took) == RESPAWN_LIMIT and all(t < 3 for t in took) and proxy.alive(), proxy.tail()
    kids += psutil.Process(proxy.pid).children()
    os.kill(proxy.workers()[1], signal.SIGKILL)
    rc = wait_exit(proxy, 10)
    assert rc == 1, f"exit status {rc} (None: still running)\n{proxy.tail()}"
    assert re.search(rf"master\[{proxy.pid}\] CRITICAL: worker 1 died {RESPAWN_LIMIT} times within a second "
                     r"of starting; stopping", proxy.log()), proxy.tail()
    alive = gone(kids, 5)
    assert not alive, [(p.pid, title(p)) for p in alive]
    assert not pid_file.exists()


def test_a_management_process_that_cannot_start_stops_the_server_saying_why(reaper, tmp_path):
    """mi_socket in a folder that does not exist: the master, which creates the management
    endpoints before it forks, stops at once with status 1, every child gone, the pid file
    removed, and a CRITICAL line naming the parameter, its path and why."""
    sock = tmp_path / "missing" / "mi.sock"
    pid_file = tmp_path / "pyproxy.pid"
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", "-P", str(pid_file), extra=f'mi_socket="{sock}"\n',
                   ready=False)
    kids: dict[int, psutil.Process] = {}

    def exited():
        for k in descendants(proxy.pid):
            kids.setdefault(k.pid, k)
        return proxy.popen.poll() is not None

    wait_for(exited, 10, step=0.02)
    rc = proxy.popen.poll()
    assert rc == 1, f"exit status {rc} (None: still running after 10 s)\n{proxy.tail()}"
    alive = gone(list(kids.values()), 5)
    assert not alive, [(p.pid, title(p)) for p in alive]
    assert not pid_file.exists()
    critical = [ln for ln in proxy.log().splitlines() if "CRITICAL" in ln]
    assert critical and f"mi_socket={sock}: No such file or directory" in critical[-1], proxy.tail()


# ------------------------------------------------------------------ 7. SIGUSR1

def test_sigusr1_logs_the_counters_of_every_process(reaper, tmp_path):
    """SIGUSR1 makes the master log one statistics line per process (worker 1..N, tcp main,
    master); between two SIGUSR1, 5 OPTIONS over UDP and 2 over TCP show as 7 more requests_in and
    7 more local_replies summed over the workers, and 2 more tcp_accepted for tcp main; the server
    goes on serving."""
    children = 3
    proxy = launch(reaper, tmp_path / "p", "-D", "-E", children=children)
    roles = {f"worker {n}" for n in range(1, children + 1)} | {"tcp main", "master"}
    first = usr1_snapshot(proxy, children + 2)
    assert set(first) == roles, first
    assert all(set(c) >= {"requests_in", "local_replies", "tcp_accepted", "dropped"} for c in first.values())
    for _ in range(5):
        assert udp_options(proxy.port, tries=1) == 200
    for _ in range(2):
        assert tcp_options(proxy.port) == 200
    time.sleep(0.3)     # a worker counts a reply once it has gone: the client may have it first
    second = usr1_snapshot(proxy, children + 2)
    assert set(second) == roles

    def delta(role_prefix, key):
        return sum(second[r][key] - first[r][key] for r in roles if r.startswith(role_prefix))

    assert delta("worker", "requests_in") == 7, (first, second)
    assert delta("worker", "local_replies") == 7, (first, second)
    assert delta("tcp main", "tcp_accepted") == 2, (first, second)
    assert proxy.alive() and proxy.answers() == (200, 200)


def test_a_daemon_that_fails_after_detaching_says_so_on_the_command(reaper, tmp_path):
    """Without -D the command waits for the daemon's start: a failure after the fork (here the
    pid file, written by the daemon) is printed by the command, which exits 1, nothing left running."""
    folder = tmp_path / "d"
    folder.mkdir()
    cfg = write_config(folder, free_port(), 1)
    def running() -> set[int]:
        pids = set()
        for p in psutil.process_iter():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and title(p).startswith("pyproxy"):
                    pids.add(p.pid)
            except psutil.Error:
                pass
        return pids

    before = running()
    launcher = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), "-P", str(tmp_path / "no" / "x.pid")],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = launcher.communicate(timeout=10)
    assert launcher.returncode == 1
    assert f"cannot write the pid file {tmp_path}/no/x.pid: No such file or directory" in out.decode()
    assert "logging to standard error, which a daemon does not have" in out.decode()   # the harness logs to stderr
    assert wait_for(lambda: not running() - before, 5), "a pyproxy process was left running"
