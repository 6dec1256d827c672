"""Helpers for the transaction-stateful tests (test_stateful*.py): the stateful routing script,
raw SIP peers that keep every message they receive, and sipp runs of the scenarios in ./sipp
(or the shared bench ones) with their message traces read back.

A `Peer` is one SIP endpoint on 127.0.0.1: a UDP socket, a TCP connection to the proxy (or to a
stunnel in front of it), or a TCP listener taking the proxy's connections. Tests wait for the
message they need (`expect`), never for time; `settle` is the barrier of a one-worker proxy:
once the proxy has answered an OPTIONS sent after some message, it has done everything that
message made it do, and everything it sent over UDP is in the receivers' buffers.
"""

from __future__ import annotations

import re
import selectors
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pyproxy.sip import Request, SIPError, make_response, parse_message, parse_uri

from ._harness import LOOP, SIPP_T, free_port, owner, port_in_use, scenario, stop_process

HERE = Path(__file__).parent / "sipp"
WAIT = 10.0             # the deadline of a message the test is sure to get (a loaded 2-core CI)

STATEFUL_ROUTE = """\
loadmodule "tm"
loadmodule "rr"
loadmodule "textops"
{modparams}
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (method=="OPTIONS" && uri==myself && $rU==$null) {{ sl_send_reply("200", "OK"); exit; }}
    if (loose_route()) {{ t_relay(); exit; }}
    if (method=="INVITE") record_route();
{body}
    if (!t_relay()) {{ sl_reply_error(); }}
}}
{routes}
"""


def stateful_route(body: str = "", routes: str = "", **tm) -> str:
    """The `route=` of proxy_factory: tm and rr loaded, in-dialog requests along their Route
    set, INVITEs record-routed, everything relayed with t_relay(). ``body`` goes just before
    t_relay(), ``routes`` after the main route; keyword arguments are tm's modparams."""
    modparams = "\n".join(f'modparam("tm", "{k}", {v})' for k, v in tm.items())
    return STATEFUL_ROUTE.format(modparams=modparams, body=body, routes=routes)


def assert_sound(proxy, workers: dict | None = None):
    """The proxy runs, logged no internal error, and (given the pids it started with) lost no
    worker: a worker that crashed and was respawned would hide the bug that killed it."""
    assert proxy.alive(), f"pyproxy exited with {proxy.popen.returncode}\n{proxy.tail()}"
    log = proxy.log()
    bad = [ln for ln in log.splitlines() if "Traceback" in ln or "internal error" in ln or " died" in ln]
    assert not bad, "the proxy logged internal errors:\n" + "\n".join(bad[:10]) + "\n" + proxy.tail(80)
    if workers is not None:
        assert proxy.workers() == workers, f"workers changed: {workers} -> {proxy.workers()}\n{proxy.tail()}"


# ------------------------------------------------------------------ building messages

def new_branch() -> str:
    return f"z9hG4bK{uuid.uuid4().hex[:16]}"


def new_call_id(prefix: str = "st") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@{LOOP}"


def call_id_owned_by(worker: int, children: int, prefix: str = "st") -> str:
    """A new Call-ID that worker ``worker`` (numbered from 1) owns."""
    while True:
        call_id = new_call_id(prefix)
        if owner(call_id, children) == worker:
            return call_id


def build_request(method: str, ruri: str, *, via: str, call_id: str, cseq: int, from_tag: str,
                  to: str = "<sip:bob@127.0.0.1>", to_tag: str | None = None, routes=(),
                  contact: str | None = None, headers=(), body: bytes = b"", cseq_method: str | None = None,
                  max_forwards: int = 70) -> bytes:
    """A request's bytes. ``via``: the whole top Via value."""
    lines = [f"{method} {ruri} SIP/2.0", f"Via: {via}", f"Max-Forwards: {max_forwards}",
             f"From: <sip:alice@{LOOP}>;tag={from_tag}", f"To: {to}" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} {cseq_method or method}"]
    lines += [f"Route: {r}" for r in routes]
    if contact:
        lines.append(f"Contact: {contact}")
    lines += list(headers)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SDP = (b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def uri_of(value: str):
    """The URI of a name-addr (Route, Record-Route, Contact value)."""
    return parse_uri(value[value.index("<") + 1:value.index(">")] if "<" in value else value)


# ------------------------------------------------------------------ raw peers

@dataclass
class Got:
    """A message a peer received: parsed, raw, when, and the way back (a connection or an address)."""
    msg: object
    raw: bytes
    at: float
    back: object
    answered: bool = False          # for the tests' own bookkeeping

    @property
    def method(self) -> str | None:
        return getattr(self.msg, "method", None)

    @property
    def status(self) -> int | None:
        return getattr(self.msg, "status", None)

    @property
    def call_id(self) -> str:
        return self.msg.call_id

    @property
    def branch(self) -> str | None:
        return self.msg.top_via.branch

    @property
    def cseq(self) -> tuple[int, str]:
        return self.msg.cseq

    def __repr__(self) -> str:
        first = self.raw.split(b"\r\n", 1)[0].decode(errors="replace")
        return f"<{first} | CSeq {self.cseq[0]} {self.cseq[1]} | {self.call_id} | branch {self.branch}>"


def matches(got: Got, spec: str, call_id: str | None) -> bool:
    """``spec``: "INVITE" (a request by method), "180" (a response by status) or "200 BYE" (by
    status and CSeq method); "2xx"-style classes work too."""
    if call_id is not None and got.call_id != call_id:
        return False
    what, _, method = spec.partition(" ")
    if what[0].isdigit():
        if got.status is None:
            return False
        ok = got.status // 100 == int(what[0]) if what.endswith("xx") else got.status == int(what)
        return ok and (not method or got.cseq[1] == method)
    return got.method == what


class Peer:
    """One SIP endpoint on 127.0.0.1 that keeps every message it receives (``inbox``)."""

    def __init__(self, name: str, transport: str = "udp", *, connect: int | None = None, listen: bool = False,
                 port: int = 0, proto: str | None = None):
        """``proto``: the transport the proxy sees (TLS for a stream through a stunnel)."""
        self.name, self.transport, self.proto = name, transport, proto or transport
        self.sel = selectors.DefaultSelector()
        self.conns: list[socket.socket] = []
        self.buffers: dict[socket.socket, bytearray] = {}
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((LOOP, port))
            self.sel.register(self.sock, selectors.EVENT_READ, "udp")
        elif connect is not None:
            self.sock = socket.create_connection((LOOP, connect), timeout=5)
            self._add_conn(self.sock)
        else:
            assert listen
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((LOOP, port))
            self.sock.listen(16)
            self.sel.register(self.sock, selectors.EVENT_READ, "listen")
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.contact_port = self.port       # what its Contact names (a stunnel in front of it)
        self.inbox: list[Got] = []
        self.taken: set[int] = set()

    def _add_conn(self, conn: socket.socket):
        conn.setblocking(False)
        self.conns.append(conn)
        self.buffers[conn] = bytearray()
        self.sel.register(conn, selectors.EVENT_READ, "stream")

    def close(self):
        for s in [*self.conns, self.sock]:
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.sel.close()

    # -- sending ------------------------------------------------------------------------------
    def via(self, branch: str | None = None) -> str:
        """A top Via naming this peer; ``branch``: None for a new one, "" for none (RFC 2543)."""
        sent_by = self.port if self.transport == "udp" or not self.conns else self.conns[0].getsockname()[1]
        branch = new_branch() if branch is None else branch
        return f"SIP/2.0/{self.proto.upper()} {LOOP}:{sent_by}" + (f";branch={branch}" if branch else "") + ";rport"

    def send(self, data: bytes, port: int | None = None):
        """A message to the proxy: over UDP to ``port``, over a stream on the (first) connection."""
        if self.transport == "udp":
            self.sock.sendto(data, (LOOP, port))
        else:
            assert self.conns, f"{self.name} has no connection to send on"
            self.conns[0].sendall(data)

    def reply(self, got: Got, data: bytes):
        """Back the way ``got`` came: to its source address (UDP) or on its connection."""
        if self.transport == "udp":
            self.sock.sendto(data, got.back)
        else:
            got.back.sendall(data)

    def answer(self, got: Got, status: int, reason: str = "", *, tag: str | None = None, contact=True,
               body: bytes = b"") -> bytes:
        """Answer request ``got`` as a UAS: To tag, its Record-Route echoed, a Contact naming
        this peer; returns the bytes sent."""
        data = response_to(got, status, reason, tag=tag or f"{self.name}-tag",
                           contact=self.contact() if contact and status > 100 else None, body=body)
        self.reply(got, data)
        return data

    def contact(self) -> str:
        param = "" if self.proto == "udp" else f";transport={self.proto}"
        return f"<sip:{self.name}@{LOOP}:{self.contact_port}{param}>"

    # -- receiving ----------------------------------------------------------------------------
    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for input; take in whatever is there."""
        for key, _ in self.sel.select(max(timeout, 0)):
            kind, s = key.data, key.fileobj
            if kind == "udp":
                while True:
                    try:
                        data, addr = s.recvfrom(65535)
                    except BlockingIOError:
                        break
                    self._keep(data, addr)
            elif kind == "listen":
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    continue
                self._add_conn(conn)
            else:
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    self.sel.unregister(s)
                    continue
                buf = self.buffers[s]
                buf += chunk
                for data in frames(buf):
                    self._keep(data, s)

    def _keep(self, data: bytes, back) -> None:
        try:
            msg = parse_message(data)
        except SIPError as e:
            raise AssertionError(f"{self.name} received a message that does not parse ({e}): {data!r}") from None
        self.inbox.append(Got(msg, data, time.monotonic(), back))

    def drain(self) -> None:
        self.pump(0)
        while self.sel.select(0):
            self.pump(0)

    def expect(self, spec: str, call_id: str | None = None, timeout: float = WAIT, where=None) -> Got:
        """The first message not taken yet that matches ``spec`` (see matches()) and ``where``;
        waits for it up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            for i, got in enumerate(self.inbox):
                if i not in self.taken and matches(got, spec, call_id) and (where is None or where(got)):
                    self.taken.add(i)
                    return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name} did not receive {spec} (Call-ID {call_id}) within {timeout} s; "
                                     f"it received:\n  " + "\n  ".join(map(repr, self.inbox)))
            self.pump(min(left, 0.2))

    def all(self, spec: str, call_id: str | None = None) -> list[Got]:
        """Every message received so far that matches (taken or not)."""
        self.drain()
        return [g for g in self.inbox if matches(g, spec, call_id)]

    def settle(self, proxy_port: int) -> None:
        """Barrier of a one-worker proxy: an OPTIONS to the proxy itself (``proxy_port``: its
        port for this transport) from this peer, answered 200, proves that the proxy processed
        what this peer sent before."""
        call_id = new_call_id("settle")
        self.send(build_request("OPTIONS", f"sip:{LOOP}:{proxy_port}", via=self.via(), call_id=call_id, cseq=1,
                                from_tag="settle", to=f"<sip:{LOOP}:{proxy_port}>"), proxy_port)
        self.expect("200 OPTIONS", call_id)


def frames(buf: bytearray) -> list[bytes]:
    """Whole SIP messages off the front of a stream buffer (CRLF keep-alives skipped)."""
    out = []
    while True:
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        m = re.search(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", bytes(buf[:end]), re.IGNORECASE)
        total = end + 4 + (int(m.group(1)) if m else 0)
        if len(buf) < total:
            return out
        out.append(bytes(buf[:total]))
        del buf[:total]


def response_to(got: Got, status: int, reason: str = "", *, tag: str | None = "callee", contact: str | None = None,
                body: bytes = b"") -> bytes:
    request = got.msg
    assert isinstance(request, Request), got
    headers = [("Record-Route", v) for v in request.header_values("record-route")] if status < 300 else []
    if contact:
        headers.append(("Contact", contact))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return make_response(request, status, reason or REASONS.get(status, "Whatever"), to_tag=tag,
                         headers=headers, body=body)


REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 408: "Request Timeout", 481: "Call/Transaction Does Not Exist",
           486: "Busy Here", 487: "Request Terminated", 500: "Server Internal Error"}


class Call:
    """The caller's side of one INVITE dialog through the proxy: its requests, and the route set
    and remote target learned from the 2xx (RFC 3261 12.1.2)."""

    def __init__(self, peer: Peer, proxy_port: int, ruri: str, call_id: str | None = None,
                 branch: str | None = None):
        """``branch``: the INVITE's (and its CANCEL's and ACK's), "" for none (RFC 2543)."""
        self.peer, self.proxy_port, self.ruri = peer, proxy_port, ruri
        self.call_id = call_id or new_call_id()
        self.branch = new_branch() if branch is None else branch
        self.from_tag = uuid.uuid4().hex[:8]
        self.cseq = 1
        self.route: list[str] = []
        self.target: str | None = None
        self.to_tag: str | None = None
        self.invite_bytes: bytes | None = None

    def _request(self, method: str, *, branch: str | None = None, in_dialog=False, cseq: int | None = None,
                 body: bytes = b"") -> bytes:
        return build_request(method, self.target if in_dialog else self.ruri, via=self.peer.via(branch),
                             call_id=self.call_id, cseq=cseq or self.cseq, from_tag=self.from_tag,
                             to_tag=self.to_tag if in_dialog else None, routes=self.route if in_dialog else (),
                             contact=self.peer.contact(), body=body)

    def send(self, data: bytes):
        self.peer.send(data, self.proxy_port)

    def invite(self) -> bytes:
        self.invite_bytes = self._request("INVITE", branch=self.branch, body=SDP)
        self.send(self.invite_bytes)
        return self.invite_bytes

    def cancel(self):
        """RFC 3261 9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq number and top Via."""
        self.send(self._request("CANCEL", branch=self.branch))

    def ack_failure(self, final: Got):
        """17.1.1.3: the ACK of a non-2xx final response: the INVITE's branch, the response's To."""
        self.send(build_request("ACK", self.ruri, via=self.peer.via(self.branch), call_id=self.call_id,
                                cseq=1, from_tag=self.from_tag, to_tag=final.msg.to.tag))

    def accepted(self, ok: Got):
        """The dialog the 2xx made: remote target (its Contact), route set (its Record-Route,
        reversed), the callee's tag."""
        self.to_tag = ok.msg.to.tag
        self.target = str(ok.msg.contacts[0].uri)
        self.route = list(reversed(ok.msg.header_values("record-route")))

    def ack(self):
        self.send(self._request("ACK", in_dialog=True, cseq=1))

    def request(self, method: str, body: bytes = b"") -> bytes:
        """A new request inside the dialog (BYE, re-INVITE ...), along the route set."""
        self.cseq += 1
        data = self._request(method, in_dialog=True, body=body)
        self.send(data)
        return data


def hangup(call: Call, callee: Peer):
    """BYE from the caller through the proxy, answered 200 by the callee; returns the BYE the
    callee got."""
    call.request("BYE")
    bye = callee.expect("BYE", call.call_id)
    callee.answer(bye, 200)
    call.peer.expect("200 BYE", call.call_id)
    return bye


def place_call(call: Call, callee: Peer, *, ring=True) -> tuple[Got, Got]:
    """INVITE through the proxy, answered (180 and) 200 by the callee, ACKed by the caller along
    the route set; returns (the INVITE, the ACK) the callee received."""
    call.invite()
    invite = callee.expect("INVITE", call.call_id)
    if ring:
        callee.answer(invite, 180)
        call.peer.expect("180", call.call_id)
    callee.answer(invite, 200, body=SDP)
    ok = call.peer.expect("200 INVITE", call.call_id)
    call.accepted(ok)
    call.ack()
    ack = callee.expect("ACK", call.call_id)
    return invite, ack


# ------------------------------------------------------------------ which worker holds a socket

def worker_holding(proxy, *, local_port: int | None = None, remote_port: int | None = None,
                   timeout: float = WAIT) -> int:
    """The number of the worker that holds an established TCP connection of the proxy with this
    local and/or remote port; waits for the hand-off from the TCP supervisor."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for number, pid in proxy.workers().items():
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            for c in conns:
                if c.status != psutil.CONN_ESTABLISHED or not c.raddr:
                    continue
                if (local_port is None or c.laddr.port == local_port) and \
                        (remote_port is None or c.raddr.port == remote_port):
                    found.append(number)
        if len(found) == 1:
            return found[0]
        assert time.monotonic() < deadline, \
            f"no single worker holds the connection local {local_port} remote {remote_port}: {found}"
        time.sleep(0.05)


# ------------------------------------------------------------------ sipp with traces

# "UDP message received [660] bytes :" / "TCP message sent (441 bytes):", then a blank line
TRACE_HEAD = re.compile(rb"-{47} [^\n]*\n(\w+) message (?:(received) \[(\d+)\] bytes :|(sent) \((\d+) bytes\):)\n\n")


def sipp_trace(path: Path) -> list[tuple[str, object]]:
    """The messages of a sipp -trace_msg log: [("received"|"sent", parsed message)]. Received
    stream data is logged per read, so it is framed again here."""
    data = path.read_bytes() if path.exists() else b""
    out, streams = [], {"received": bytearray(), "sent": bytearray()}
    pos = 0
    while True:
        m = TRACE_HEAD.search(data, pos)
        if not m:
            break
        direction = (m.group(2) or m.group(4)).decode()
        size = int(m.group(3) or m.group(5))
        chunk = data[m.end():m.end() + size]
        pos = m.end() + size
        if m.group(1) == b"UDP":
            out.append((direction, parse_message(chunk)))
        else:
            buf = streams[direction]
            buf += chunk
            out += [(direction, parse_message(f)) for f in frames(buf)]
    return out


@dataclass
class Sipp:
    """One sipp process on a scenario, its messages traced for the test to read back."""
    popen: subprocess.Popen
    folder: Path
    name: str
    port: int
    timeout: float
    started: float = field(default_factory=time.monotonic)

    def finish(self) -> int:
        try:
            return self.popen.wait(self.timeout + 10)
        except subprocess.TimeoutExpired:
            stop_process(self.popen, grace=2)
            return -999

    def messages(self) -> list[tuple[str, object]]:
        return sipp_trace(self.folder / f"{self.name}_messages.log")

    def received(self) -> list:
        return [m for d, m in self.messages() if d == "received"]

    def stats(self) -> dict:
        csv = self.folder / f"{self.name}.csv"
        if not csv.exists():
            return {}
        lines = [ln for ln in csv.read_text(errors="replace").splitlines() if ln.strip()]
        return dict(zip(lines[0].rstrip(";").split(";"), lines[-1].rstrip(";").split(";")))

    def describe(self) -> str:
        out = f"sipp {self.name} rc={self.popen.poll()} stats: " + \
            ", ".join(f"{k}={self.stats().get(k)}" for k in ("TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)"))
        for f in (self.folder / f"{self.name}_errors.log", self.folder / f"{self.name}.stderr"):
            if f.exists():
                out += f"\n--- {f.name} ---\n" + f.read_text(errors="replace")[-1500:]
        return out


def sipp_scenario(name: str) -> Path:
    """A scenario of ./sipp, or of the shared bench folder."""
    here = HERE / name
    return here if here.is_file() else scenario(name)


def start_sipp(reaper, folder: Path, name: str, scenario_name: str, transport: str, *, remote: int | None = None,
               keys: dict | None = None, calls: int = 1, rate: int = 10, port: int | None = None,
               cid_prefix: str | None = None, timeout: float = 60, hold_ms: int = 0) -> Sipp:
    """sipp on a scenario: a UAC when ``remote`` (the port it sends to) is given, else a UAS,
    returned once it listens. Every message it sends and receives is traced."""
    port = port or free_port()
    cmd = ["sipp", "-sf", str(sipp_scenario(scenario_name)), "-i", LOOP, "-bind_local", "-p", str(port),
           "-t", SIPP_T[transport], "-nostdin", "-timeout", f"{int(timeout)}s", "-mp", str(free_port(span=4)),
           "-trace_msg", "-message_file", str(folder / f"{name}_messages.log"),
           "-trace_err", "-error_file", str(folder / f"{name}_errors.log"), "-max_recv_loops", "10000"]
    for k, v in (keys or {}).items():
        cmd += ["-key", k, str(v)]
    if remote is not None:
        cmd[1:1] = [f"{LOOP}:{remote}"]
        cmd += ["-m", str(calls), "-r", str(rate), "-l", str(max(calls, 10)), "-recv_timeout", "10000",
                "-trace_stat", "-stf", str(folder / f"{name}.csv"), "-fd", "1", "-d", str(hold_ms),
                # a multi-process proxy may relay a 180 after the 200: do not abort the call on it
                "-default_behaviors", "all,-abortunexp"]
        if cid_prefix:
            cmd += ["-cid_str", f"{cid_prefix}-%u@%s"]
    with open(folder / f"{name}.stderr", "wb") as err:
        p = reaper.popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=err)
    run = Sipp(p, folder, name, port, timeout)
    if remote is None:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        deadline = time.monotonic() + WAIT
        while not port_in_use(port, kind):
            assert p.poll() is None and time.monotonic() < deadline, f"sipp {name} did not start\n{run.describe()}"
            time.sleep(0.05)
    return run


def by_call(messages) -> dict[str, list]:
    out: dict[str, list] = {}
    for m in messages:
        out.setdefault(m.call_id, []).append(m)
    return out


def summary(messages) -> list[str]:
    """["INVITE", "ACK", "200 BYE", ...]: a call's messages, short."""
    return [m.method if hasattr(m, "method") else f"{m.status} {m.cseq[1]}" for m in messages]
