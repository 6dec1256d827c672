"""tm and rr over a fake network: a config compiled as the worker compiles it, the same router
and hooks the worker runs, a runtime that records what it sends, and a clock the test moves.

    proxy = FakeProxy(ROUTE)
    proxy.receive(invite())                 # from 10.0.0.1:5062 over UDP, as a UAC would
    branch, = proxy.take()                  # what the proxy sent since the last take()
    proxy.receive(reply_to(branch.msg, 180), src=UAS)
    proxy.advance(31)                       # timers fire

Nothing here opens a socket: the end-to-end tests (tests/runtime/test_stateful*.py) run the
same flows through real processes and sipp.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import uuid
from dataclasses import dataclass

from pyproxy.assembly.loader import load_config_text
from pyproxy.config.values import Proto, SocketSpec
from pyproxy.script.forward import transport_failure
from pyproxy.modules.sl import stateless_to_tag
from pyproxy.myself import Myself
from pyproxy.script.context import Destination, ReceiveInfo, ScriptContext
from pyproxy.script.router import MessageRouter
from pyproxy.sip import Request, make_response, parse_message

UAC = ("10.0.0.1", 5062)
UAS = ("10.0.0.2", 5060)
UAS2 = ("10.0.0.3", 5060)
PROXY = ("127.0.0.1", 5060)

HEAD = """\
loadmodule "sl"
loadmodule "maxfwd"
loadmodule "tm"
loadmodule "rr"
loadmodule "textops"
"""
HEAD_XLOG = HEAD + 'loadmodule "xlog"\n'     # for tests that look at $variables through xlog()


class Clock:
    def __init__(self):
        self.now = 0.0
        self.timers: list = []
        self.seq = itertools.count()

    def call_later(self, delay: float, callback) -> "FakeTimer":
        timer = FakeTimer(self.now + delay, callback)
        heapq.heappush(self.timers, (timer.when, next(self.seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on, firing every timer due on the way, in order."""
        end = self.now + seconds
        while self.timers and self.timers[0][0] <= end:
            when, _, timer = heapq.heappop(self.timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = end

    def pending(self) -> int:
        return sum(1 for _, _, t in self.timers if not t.cancelled)


class FakeTimer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when, callback):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Sent:
    dest: Destination
    data: bytes
    at: float

    @property
    def msg(self):
        return parse_message(self.data)

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode()

    def __repr__(self) -> str:
        return f"Sent({self.dest.proto.value}:{self.dest.host}:{self.dest.port} {self.first_line!r} at {self.at})"


class FakeStats:
    """The worker's statistics slot (runtime/shm.py StatSlot): add() and set() by Stat."""

    def __init__(self):
        self.counters: collections.Counter = collections.Counter()

    def add(self, stat, n: int = 1) -> None:
        self.counters[stat] += n

    def set(self, stat, value: int) -> None:
        self.counters[stat] = value

    def __getitem__(self, stat) -> int:
        return self.counters[stat]


class FakeRuntime:
    reply_to_via = False

    def __init__(self, clock: Clock):
        self.clock = clock
        self.is_myself = Myself([SocketSpec(Proto.UDP, *PROXY), SocketSpec(Proto.TCP, *PROXY),
                                 SocketSpec(Proto.TLS, PROXY[0], 5061)], [], 5060)
        self.sent: list[Sent] = []
        self.logs: list[tuple[int, str]] = []
        self.refuse: set[tuple[str, int]] = set()       # send() fails at once to these
        self.stats = FakeStats()

    def send(self, ctx, dest, data, source=None) -> bool:
        if (dest.host, dest.port) in self.refuse:
            return False
        self.sent.append(Sent(dest, data, self.clock.now))
        return True

    def via_sent_by(self, proto, dest, rcv):
        return f"{PROXY[0]}:{5061 if proto is Proto.TLS else PROXY[1]}", None

    def received_on(self, rcv) -> str:
        return f"{rcv.dst_ip}:{rcv.dst_port}"

    def connected(self, proto, ip, port) -> bool:
        return False

    def log(self, level, text) -> None:
        self.logs.append((level, text))

    def call_later(self, delay, callback):
        return self.clock.call_later(delay, callback)

    def now(self) -> float:
        return self.clock.now


class FakeProxy:
    def __init__(self, route: str, modparams: str = "", head: str = HEAD):
        self.config = load_config_text(head + modparams + route, "test.cfg")
        self.clock = Clock()
        self.runtime = FakeRuntime(self.clock)
        self.router = MessageRouter.for_process(self.config, 0, self.runtime)
        self.taken = 0

    @property
    def layer(self):
        from pyproxy.modules.tm import _LAYERS
        return _LAYERS[self.runtime]

    def receive(self, data: bytes | str, src=UAC, proto: Proto = Proto.UDP, dst=PROXY) -> ScriptContext:
        msg = parse_message(data.encode() if isinstance(data, str) else data)
        msg.validate(deep=False)
        ctx = ScriptContext(msg, ReceiveInfo(src[0], src[1], dst[0], dst[1], proto), self.runtime)
        if isinstance(msg, Request):
            self.router.request(ctx)
        else:
            self.router.reply(ctx)
        return ctx

    def fail(self, sent: Sent, why: str = "connection refused") -> None:
        """What the worker does when a request it handed to the transport could not leave
        (Worker.bounce): an ACK is dropped; any other request gets a response made from its
        bytes, as if from the next hop, handed to the router as a reply from port 0."""
        request = sent.msg
        if request.method == "ACK":
            return
        status, reason = transport_failure(request, why)
        self.receive(make_response(request, status, reason, to_tag=stateless_to_tag(request)),
                     src=("0.0.0.0", 0))

    def take(self) -> list[Sent]:
        """What was sent since the last take()."""
        out = self.runtime.sent[self.taken:]
        self.taken = len(self.runtime.sent)
        return out

    def advance(self, seconds: float) -> list[Sent]:
        self.clock.advance(seconds)
        return self.take()

    def logged(self, needle: str) -> list[str]:
        """The log lines (xlog() and the proxy's own) that contain ``needle``."""
        return [text for _, text in self.runtime.logs if needle in text]

    def idle(self) -> bool:
        """No transaction left and no timer running: everything was let go."""
        layer = self.layer
        timers = len(getattr(layer, "running", ()))     # the layer's own timer lists, if it has them
        return not layer.servers and not layer.clients and not timers and self.clock.pending() == 0


def invite(ruri: str = "sip:bob@10.0.0.2", branch: str | None = None, method: str = "INVITE",
           call_id: str | None = None, cseq: int = 1, extra: str = "", to_tag: str | None = None,
           via: str | None = None) -> str:
    branch = branch or f"z9hG4bK{uuid.uuid4().hex[:12]}"
    call_id = call_id or f"{uuid.uuid4().hex[:12]}@10.0.0.1"
    to = "<sip:bob@10.0.0.2>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: {via or f'SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch={branch}'}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@10.0.0.1>;tag=a1\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:alice@{UAC[0]}:{UAC[1]}>\r\n"
            f"{extra}"
            "Content-Length: 0\r\n\r\n")


def cancel_of(request_text: str) -> str:
    """The CANCEL a UAC sends for its INVITE (RFC 3261 9.1)."""
    msg = parse_message(request_text.encode())
    lines = [f"CANCEL {msg.ruri} SIP/2.0"]
    for name in ("via", "from", "to", "call-id"):
        lines.append(f"{name.title() if name != 'call-id' else 'Call-ID'}: {msg.header(name)}")
    lines += [f"CSeq: {msg.cseq[0]} CANCEL", "Max-Forwards: 70", "Content-Length: 0", "", ""]
    return "\r\n".join(lines)


def ack_of(request_text: str, response) -> str:
    """The ACK a UAC sends for a non-2xx final response (same branch, RFC 3261 17.1.1.3)."""
    msg = parse_message(request_text.encode())
    return (f"ACK {msg.ruri} SIP/2.0\r\nVia: {msg.header('via')}\r\nFrom: {msg.header('from')}\r\n"
            f"To: {response.header('to')}\r\nCall-ID: {msg.call_id}\r\nCSeq: {msg.cseq[0]} ACK\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def reply_to(request, status: int, reason: str = "", to_tag: str | None = "b1", extra=()) -> bytes:
    """A UAS's response to a request it received: the Vias as they came, its Record-Route
    copied (RFC 3261 12.1.1)."""
    if isinstance(request, Sent):
        request = request.msg
    record_route = tuple(("Record-Route", v) for v in request.header_values("record-route"))
    return make_response(request, status, reason or REASONS.get(status, "Whatever"),
                         to_tag=to_tag if status > 100 else None, headers=record_route + tuple(extra))


REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 302: "Moved Temporarily",
           401: "Unauthorized", 404: "Not Found", 407: "Proxy Authentication Required",
           408: "Request Timeout", 480: "Temporarily Unavailable", 486: "Busy Here",
           487: "Request Terminated", 500: "Server Internal Error", 503: "Service Unavailable",
           600: "Busy Everywhere", 603: "Decline"}


def status(sent: Sent) -> int:
    return sent.msg.status


def requests(out: list[Sent]) -> list[Sent]:
    return [s for s in out if not s.data.startswith(b"SIP/2.0 ")]


def responses(out: list[Sent]) -> list[Sent]:
    return [s for s in out if s.data.startswith(b"SIP/2.0 ")]


def methods(out: list[Sent]) -> list[str]:
    """The method of each request sent, the status (as text) of each response."""
    return [s.first_line.split()[1] if s.data.startswith(b"SIP/2.0 ") else s.first_line.split()[0]
            for s in out]


def ack_2xx(request_text: str, response, ruri: str | None = None, routes=(), branch: str | None = None) -> str:
    """The ACK a UAC sends for a 2xx (RFC 3261 13.2.2.4): a new transaction (its own branch), to
    the remote target, along the route set."""
    msg = parse_message(request_text.encode())
    branch = branch or f"z9hG4bK{uuid.uuid4().hex[:12]}"
    route = "".join(f"Route: {r}\r\n" for r in routes)
    return (f"ACK {ruri or msg.ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch={branch}\r\n"
            f"{route}From: {msg.header('from')}\r\nTo: {response.header('to')}\r\n"
            f"Call-ID: {msg.call_id}\r\nCSeq: {msg.cseq[0]} ACK\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n")
