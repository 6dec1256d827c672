"""The sockets pyproxy listens on, bound by the master before it forks.

``listen=`` entries (and ``-l``) name them; without any, pyproxy listens on every address with
UDP and TCP on ``port``, as OpenSER did. A TLS listener is a TCP socket: the worker that gets a
connection does the handshake.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ..config.values import Proto, SocketSpec
from ..sip.uri import host_port

WILDCARDS = ("*", "0.0.0.0", "[::]", "::")


class BindError(Exception):
    pass


@dataclass
class Listener:
    proto: Proto
    host: str            # as bound: an address, or 0.0.0.0 / :: for every address
    port: int
    sock: socket.socket

    def __post_init__(self) -> None:
        # Read per message, so plain attributes (socket.family makes an enum on every read).
        self.family = self.sock.family
        self.wildcard = self.host in WILDCARDS
        self.host_port = host_port(self.host, self.port)    # as a Via or Record-Route names it

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto.text}:{host}:{self.port}"


def socket_specs(settings) -> list[SocketSpec]:
    """Every socket to bind, with proto and port filled in; one entry without a proto means both
    UDP and TCP (OpenSER)."""
    specs = settings.listen or [SocketSpec(None, "0.0.0.0", None)]
    out: list[SocketSpec] = []
    for spec in specs:
        protos = [spec.proto] if spec.proto else [Proto.UDP, Proto.TCP]
        for proto in protos:
            if proto is Proto.TLS and settings.disable_tls:
                continue
            if proto is Proto.TCP and settings.disable_tcp:
                continue
            default = settings.tls_port_no if proto is Proto.TLS else settings.port
            host = "0.0.0.0" if spec.host == "*" else spec.host
            key = SocketSpec(proto, host, spec.port or default)
            if key not in out:
                out.append(key)
    return out


def bind(spec: SocketSpec) -> Listener:
    host = spec.host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, spec.port, 0,
                                   socket.SOCK_DGRAM if spec.proto is Proto.UDP else socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise BindError(f"listen={spec}: cannot resolve '{host}': {e.strerror}") from None
    family, kind, _, _, address = infos[0]
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # TCP: rebind right after a restart despite TIME_WAIT. Never for UDP, where Linux would
            # let a second pyproxy bind the same port and silently take its traffic.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if kind == socket.SOCK_STREAM:
            # SIP messages are small and wait for each other: Nagle's algorithm with delayed ACKs
            # would hold each one for tens of milliseconds. Set here, every accepted connection
            # inherits it (one system call less per connection).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.listen(1024)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise BindError(f"listen={spec}: cannot bind {address[0]}:{address[1]}: {e.strerror}") from None
    return Listener(spec.proto, address[0], address[1], sock)


def bind_all(settings) -> list[Listener]:
    listeners: list[Listener] = []
    try:
        for spec in socket_specs(settings):
            listeners.append(bind(spec))
    except BindError:
        for listener in listeners:
            listener.sock.close()
        raise
    return listeners


_source_addresses: dict[str, str] = {}


def source_address(ip: str) -> str:
    """The local address the kernel sends to ``ip`` from (for sockets bound to every address)."""
    cached = _source_addresses.get(ip)
    if cached is None:
        probe = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((ip, 9))
            cached = probe.getsockname()[0]
        except OSError:
            cached = "127.0.0.1"
        finally:
            probe.close()
        if len(_source_addresses) > 1000:
            _source_addresses.clear()
        _source_addresses[ip] = cached
    return cached
