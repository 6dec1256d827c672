"""Per-message state the script reads and writes, and what it asks of the runtime.

``ScriptContext`` is made for each message: the message, where it came from, the script flags and
AVPs. ``Runtime`` is the interface the worker (or a test) provides: sending, logging, and the
``myself`` test. The script engine never touches a socket.
"""

from __future__ import annotations

import socket
from typing import Protocol

from ..config.values import Proto


class ReceiveInfo:
    """Where a message came from and on what. A plain class, not a dataclass: one is made per
    received message, and a frozen dataclass's __init__ costs several times as much."""

    __slots__ = ("src_ip", "src_port", "dst_ip", "dst_port", "proto", "conn_id", "conn_owner", "tls")

    def __init__(self, src_ip: str, src_port: int, dst_ip: str, dst_port: int, proto: Proto,
                 conn_id: int | None = None, conn_owner: int | None = None, tls: dict | None = None):
        self.src_ip = src_ip
        self.src_port = src_port
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.proto = proto
        self.conn_id = conn_id          # the TCP/TLS connection it came on
        self.conn_owner = conn_owner    # the worker that owns that connection
        self.tls = tls                  # TLS connections: the peer summary ($tls_* variables)

    @property
    def af(self) -> int:
        return socket.AF_INET6 if ":" in self.src_ip else socket.AF_INET

    def __repr__(self) -> str:
        return (f"ReceiveInfo({self.proto.text}:{self.src_ip}:{self.src_port} -> "
                f"{self.dst_ip}:{self.dst_port}, conn={self.conn_id})")


NOT_RECEIVED = ReceiveInfo("0.0.0.0", 0, "0.0.0.0", 0, Proto.UDP)     # for messages we make ourselves


class Destination:
    """Where a message goes. Plain and slotted for the same reason as ReceiveInfo."""

    __slots__ = ("proto", "host", "port")

    def __init__(self, proto: Proto, host: str, port: int | None):
        self.proto = proto
        self.host = host        # address or name still to resolve
        self.port = port        # None: the transport's default or DNS SRV decides

    def resolve(self, msg) -> Destination:
        """Where it goes for ``msg``: here, as it is (script.core.UriDestination reads the
        Request-URI instead)."""
        return self

    def __eq__(self, other) -> bool:
        return isinstance(other, Destination) and (self.proto, self.host, self.port) == \
            (other.proto, other.host, other.port)

    __hash__ = None

    def __repr__(self) -> str:
        return f"Destination({self.proto.text}:{self.host}:{self.port})"


class Runtime(Protocol):
    def is_myself(self, host: str, port: int | None, proto: Proto | None = None) -> bool: ...
    def send(self, ctx: "ScriptContext", dest: Destination, data: bytes, source=None) -> bool: ...
    # our Via's sent-by (host:port), and the socket (opaque here) that send() is then given as source
    def via_sent_by(self, proto: Proto, dest: Destination, rcv: ReceiveInfo) -> tuple[str, object]: ...
    # host:port of the socket a message came in on, as its sender reaches it (Record-Route)
    def received_on(self, rcv: ReceiveInfo) -> str: ...
    def connected(self, proto: Proto, ip: str, port: int) -> bool: ...
    def log(self, level: int, text: str) -> None: ...
    # run callback() in ``delay`` seconds; the result has cancel() (transaction timers)
    def call_later(self, delay: float, callback): ...
    def now(self) -> float: ...     # the clock call_later() counts by
    reply_to_via: bool


class ScriptContext:
    __slots__ = ("msg", "rcv", "runtime", "flags", "avps", "route_type", "dropped", "last_error",
                 "dst_uri", "branches", "record_route", "tm", "auth")

    def __init__(self, msg, rcv: ReceiveInfo, runtime: Runtime, route_type=None):
        self.msg = msg
        self.rcv = rcv
        self.runtime = runtime
        self.flags = 0
        self.avps: dict = {}
        self.route_type = route_type
        self.dropped = False
        self.last_error: tuple[int, str] | None = None   # what sl_reply_error() answers
        self.dst_uri: str | None = None     # $du: where the request goes next (loose_route), else its R-URI
        self.branches: list | None = None   # append_branch(): more (uri, dst_uri) targets for t_relay
        self.record_route = None            # rr's record_route(): Record-Route values made when it leaves
        self.tm = None                      # tm's state for this message (armed routes, transaction)
        self.auth = None                    # auth's: the credentials authorize() accepted
