"""End-to-end harness for the pyproxy runtime: free ports, a proxy started from a config in a
temporary folder, sipp UAC/UAS runs, and a tiny raw SIP client (OPTIONS, bad input).

Every process is started in its own session (process group) and registered with a `Reaper`, so
a failing test never leaves a proxy or a sipp behind: SIGTERM first, SIGKILL after a grace time.
Everything is on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOP = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
# CI runs from a clone in another folder with shared/ laid beside it: never hardcode /work.
SHARED = ROOT.parent / "shared"
SIPP_DIR = SHARED / "bench" / "sipp"
RFC4475 = SHARED / "conformance" / "rfc4475"

# `<asctime> worker 3[<pid>] DEBUG: processing request INVITE Call-ID <cid> from udp:127.0.0.1:6000`
PROCESSING = re.compile(
    r"\bworker (?P<worker>\d+)\[(?P<pid>\d+)\] DEBUG: processing (?P<kind>request|reply) (?P<what>\S+) "
    r"Call-ID (?P<callid>\S+) from (?P<src>\S+)")

TEST_CONFIG = """\
debug=4
fork=yes
log_stderror=yes
children={children}
call_affinity=yes
{head}
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
{extra}
loadmodule "sl"
loadmodule "maxfwd"
{route}
"""

DEFAULT_ROUTE = """\
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (method=="OPTIONS" && uri==myself && $rU==$null) { sl_send_reply("200", "OK"); exit; }
    forward();
}"""


def owner(call_id: str, children: int) -> int:
    """The worker (numbered from 1, as in the process titles) that owns a Call-ID."""
    return zlib.crc32(call_id.encode()) % children + 1


# ------------------------------------------------------------------ ports

_handed_out: set[int] = set()


def _bindable(port: int, kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> bool:
    socks = []
    try:
        for kind in kinds:
            s = socket.socket(socket.AF_INET, kind)
            socks.append(s)
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((LOOP, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_port(span: int = 1) -> int:
    """A port p such that p..p+span-1 are free for UDP and TCP on 127.0.0.1 (bind-tested), never
    handed out twice in this test session. Picked below the kernel's ephemeral range so that the
    proxy's and sipp's outgoing connections cannot take it in the meantime."""
    seed = (os.getpid() * 7919 + int(time.monotonic() * 1000)) % 10000
    for i in range(5000):
        base = 20000 + (seed + i * 7) % 12000
        ports = range(base, base + span)
        if any(p in _handed_out for p in ports):
            continue
        if all(_bindable(p) for p in ports):
            _handed_out.update(ports)
            return base
    raise RuntimeError("no free port block on 127.0.0.1")


def port_in_use(port: int, kind: int) -> bool:
    return not _bindable(port, (kind,))


# ------------------------------------------------------------------ processes

class Reaper:
    """Processes started by a test, each in its own session; stop_all() ends them all."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def popen(self, cmd, **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            stop_process(p)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def stop_process(p: subprocess.Popen, grace: float = 5.0) -> int | None:
    """SIGTERM the process, wait `grace` s, then SIGKILL its process group and every descendant
    seen before. Returns the exit code (None when it had to be killed)."""
    kids = descendants(p.pid)
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    code = p.poll()
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for k in kids:
        try:
            k.kill()
        except psutil.Error:
            pass
    if p.poll() is None:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
    return code


# ------------------------------------------------------------------ raw SIP client

def options_request(port: int, call_id: str, proto: str, lport: int, ruri: str | None = None) -> bytes:
    tag = uuid.uuid4().hex[:10]
    return (f"OPTIONS {ruri or f'sip:{LOOP}:{port}'} SIP/2.0\r\n"
            f"Via: SIP/2.0/{proto.upper()} {LOOP}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:tester@{LOOP}>;tag={tag}\r\n"
            f"To: <sip:{LOOP}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def status_of(data: bytes) -> int | None:
    """The status code of a SIP response's first line, None if it is not a response."""
    m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    return int(m.group(1)) if m else None


def udp_socket(timeout: float = 1.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOP, 0))
    s.settimeout(timeout)
    return s


def udp_exchange(port: int, data: bytes | None = None, *, sock=None, timeout: float = 1.0,
                 tries: int = 1) -> bytes | None:
    """Send `data` (or an OPTIONS) over UDP, return the first datagram back or None.
    Retransmits up to `tries` times, as a UAC would (Timer E)."""
    own = sock is None
    s = sock or udp_socket(timeout)
    try:
        if data is None:
            data = options_request(port, f"opt-{uuid.uuid4().hex}", "udp", s.getsockname()[1])
        for _ in range(tries):
            s.sendto(data, (LOOP, port))
            try:
                return s.recvfrom(65535)[0]
            except socket.timeout:
                continue
        return None
    finally:
        if own:
            s.close()


def udp_options(port: int, call_id: str | None = None, timeout: float = 1.0, tries: int = 3) -> int | None:
    with udp_socket(timeout) as s:
        cid = call_id or f"opt-{uuid.uuid4().hex}"
        reply = udp_exchange(port, options_request(port, cid, "udp", s.getsockname()[1]), sock=s,
                             timeout=timeout, tries=tries)
    return status_of(reply) if reply else None


def tcp_connect(port: int, timeout: float = 2.0) -> socket.socket:
    s = socket.create_connection((LOOP, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_tcp_message(s: socket.socket, deadline: float, buf: bytearray) -> bytes | None:
    """One SIP message from a stream (header section + Content-Length body); None on EOF/timeout."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end])
            m = re.search(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", head, re.I)
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= total:
                msg = bytes(buf[:total])
                del buf[:total]
                return msg
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return None
        if not chunk:
            return None
        buf += chunk


def tcp_options(port: int, call_id: str | None = None, timeout: float = 2.0, sock=None) -> int | None:
    own = sock is None
    try:
        s = sock or tcp_connect(port, timeout)
    except OSError:
        return None
    try:
        cid = call_id or f"opt-{uuid.uuid4().hex}"
        s.sendall(options_request(port, cid, "tcp", s.getsockname()[1]))
        reply = read_tcp_message(s, time.monotonic() + timeout, bytearray())
        return status_of(reply) if reply else None
    except OSError:
        return None
    finally:
        if own:
            s.close()


def wait_closed(s: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the peer closes (EOF or reset) or `timeout` s pass. Returns (closed, data read)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, bytes(data)
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return False, bytes(data)
        except (ConnectionResetError, BrokenPipeError):
            return True, bytes(data)
        if not chunk:
            return True, bytes(data)
        data += chunk


# ------------------------------------------------------------------ the proxy

@dataclass
class Proxy:
    popen: subprocess.Popen
    port: int
    log_path: Path
    children: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 40) -> str:
        lines = self.log().splitlines()
        return f"--- proxy log {self.log_path} (last {min(n, len(lines))} of {len(lines)} lines) ---\n" + \
            "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def processes(self) -> dict[str, int]:
        """Process title ('pyproxy: worker 2', 'pyproxy: tcp main', ...) -> pid, over the master's
        direct children."""
        out = {}
        for child in psutil.Process(self.pid).children():
            try:
                out[title(child)] = child.pid
            except psutil.Error:
                pass
        return out

    def workers(self) -> dict[int, int]:
        """Worker number -> pid."""
        return {int(t.rsplit(" ", 1)[1]): pid for t, pid in self.processes().items()
                if re.fullmatch(r"pyproxy: worker \d+", t)}

    def processing(self) -> list[re.Match]:
        return [m for m in map(PROCESSING.search, self.log().splitlines()) if m]

    def answers(self) -> tuple[int | None, int | None]:
        """(UDP, TCP) status of an OPTIONS to the proxy itself."""
        return udp_options(self.port, timeout=0.5, tries=2), tcp_options(self.port, timeout=1.0)

    def wait_ready(self, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        got = (None, None)
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"pyproxy exited with {self.popen.returncode} before serving\n"
                                     + self.tail())
            got = self.answers()
            if got == (200, 200):
                return
            time.sleep(0.2)
        raise AssertionError(f"pyproxy did not answer OPTIONS with 200 over UDP and TCP on port "
                             f"{self.port} within {timeout} s (UDP, TCP: {got})\n" + self.tail())

    def stop(self, grace: float = 5.0) -> int | None:
        return stop_process(self.popen, grace)


def title(proc: psutil.Process) -> str:
    """What `ps -o args` shows (setproctitle rewrites argv)."""
    cmd = proc.cmdline()
    return " ".join(cmd).strip() if cmd else proc.name()


def write_config(folder: Path, port: int, children: int, extra: str = "", route: str = DEFAULT_ROUTE,
                 head: str = "") -> Path:
    """``head``: lines before the listen lines (a socket listed first), ``extra`` after them."""
    cfg = folder / "pyproxy.cfg"
    cfg.write_text(TEST_CONFIG.format(children=children, port=port, extra=extra, route=route, head=head))
    return cfg


def start_proxy(reaper: Reaper, folder: Path, children: int, extra: str = "", ready: bool = True,
                route: str = DEFAULT_ROUTE, head: str = "") -> Proxy:
    port = free_port()
    cfg = write_config(folder, port, children, extra, route, head)
    log_path = folder / "proxy.log"
    logf = open(log_path, "wb")
    popen = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), "-D", "-E"], cwd=folder,
                         stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    proxy = Proxy(popen, port, log_path, children)
    if ready:
        proxy.wait_ready()
    return proxy


# ------------------------------------------------------------------ sipp

SIPP_T = {"udp": "u1", "tcp": "t1"}


def scenario(name: str) -> Path:
    path = SIPP_DIR / name
    assert path.is_file(), (f"{path} is missing: the shared bench folder must lie beside the "
                            f"repository ({SHARED})")
    return path


@dataclass
class SippResult:
    rc: int
    created: int
    successful: int
    failed: int
    wall: float
    errors: str = ""
    stats: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (f"sipp rc={self.rc} created={self.created} successful={self.successful} "
                f"failed={self.failed} wall={self.wall:.1f}s\n--- sipp errors (tail) ---\n{self.errors}")


def start_uas(reaper: Reaper, folder: Path, transport: str, name: str = "uas", *, tp: str | None = None,
              contact_port: int | None = None) -> tuple[subprocess.Popen, int]:
    """A sipp UAS (shared uas.xml) on a free port; returns (process, port) once it listens.
    Behind a TLS tunnel, ``tp``/``contact_port`` are what the proxy sees (TLS, the tunnel's port)."""
    port = free_port()
    media = free_port(span=4)
    cmd = ["sipp", "-sf", str(scenario("uas.xml")), "-i", LOOP, "-bind_local", "-p", str(port),
           "-t", SIPP_T[transport], "-nostdin", "-timeout", "300s", "-trace_err",
           "-error_file", str(folder / f"{name}_errors.log"), "-max_recv_loops", "10000",
           "-mp", str(media), "-key", "tp", tp or transport.upper(),
           "-key", "contact", f"{LOOP}:{contact_port or port}"]
    err = open(folder / f"{name}.stderr", "wb")
    p = reaper.popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=err)
    err.close()
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    deadline = time.monotonic() + 5
    while not port_in_use(port, kind):
        if p.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"sipp UAS did not start (rc={p.poll()}): "
                                 f"{(folder / f'{name}.stderr').read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return p, port


def parse_stat_csv(path: Path) -> dict:
    lines = [ln.rstrip("\n") for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    hdr = lines[0].rstrip(";").split(";")
    return dict(zip(hdr, lines[-1].rstrip(";").split(";")))


def run_uac(reaper: Reaper, folder: Path, target_port: int, uas_port: int, transport: str, calls: int,
            rate: int, *, hold_ms: int = 100, name: str = "uac", cid_prefix: str | None = None,
            timeout: float | None = None, wait: bool = True, tp: str | None = None,
            uas_tp: str | None = None):
    """sipp UAC (shared uac.xml) -> target -> UAS. Bounded by -m calls and -timeout. With wait=False
    returns a `finish()` callable that waits and returns the SippResult."""
    port = free_port()
    media = free_port(span=4)
    csv = folder / f"{name}.csv"
    errors = folder / f"{name}_errors.log"
    timeout = timeout or (calls / rate + hold_ms / 1000 + 15)
    cmd = ["sipp", f"{LOOP}:{target_port}", "-sf", str(scenario("uac.xml")), "-i", LOOP, "-bind_local",
           "-p", str(port), "-t", SIPP_T[transport], "-s", "bench", "-d", str(hold_ms),
           "-key", "uas", f"{LOOP}:{uas_port}", "-key", "uas_tp", uas_tp or transport,
           "-key", "tp", tp or transport.upper(),
           "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(max(200, calls)),
           "-nostdin", "-timeout", f"{int(timeout)}s", "-recv_timeout", "5000",
           "-trace_stat", "-stf", str(csv), "-fd", "1", "-trace_err", "-error_file", str(errors),
           "-max_recv_loops", "10000", "-mp", str(media),
           # a multi-process proxy may relay a 180 after the 200 (bench README): do not abort on it
           "-default_behaviors", "all,-abortunexp"]
    if cid_prefix:
        cmd += ["-cid_str", f"{cid_prefix}-%u@%s"]
    err = open(folder / f"{name}.stderr", "wb")
    t0 = time.monotonic()
    p = reaper.popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=err)
    err.close()

    def finish() -> SippResult:
        try:
            rc = p.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            stop_process(p, grace=2)
            rc = -999
        wall = time.monotonic() - t0
        stats = {}
        try:
            stats = parse_stat_csv(csv)
        except (OSError, IndexError):
            pass
        tail = ""
        for f in (errors, folder / f"{name}.stderr"):
            if f.exists():
                tail += f.read_text(errors="replace")[-1500:]
        return SippResult(rc, int(stats.get("TotalCallCreated", 0)), int(stats.get("SuccessfulCall(C)", 0)),
                          int(stats.get("FailedCall(C)", 0)), wall, tail, stats)

    return finish() if wait else finish
