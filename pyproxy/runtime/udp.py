"""A worker's side of the shared UDP sockets: reading datagrams (each wakes one worker, the
sockets being registered with EPOLLEXCLUSIVE) and choosing the socket a datagram leaves by."""

from __future__ import annotations

import logging
import socket

from ..config.values import UDP, Proto
from ..script.context import ReceiveInfo
from .listeners import Listener, source_address

UDP_BURST = 32              # datagrams read per wake-up


class UDPTransport:
    def __init__(self, listeners: list[Listener], settings, ratelog) -> None:
        udp = [l for l in listeners if l.proto is Proto.UDP]
        self.first = udp[0] if udp else None
        by_family = {l.family: l for l in reversed(udp)}               # the first of each family
        self.default4 = by_family.get(socket.AF_INET) or self.first
        self.default6 = by_family.get(socket.AF_INET6) or self.first
        self.at = {(l.host, l.port): l for l in udp}
        self.on_host = {l.host: l for l in reversed(udp) if not l.wildcard}
        self.several = len(self.at) > 1
        self.mhomed = settings.mhomed
        self.max_size = settings.max_message_size
        self.ratelog = ratelog
        self.deliver = None         # (data, rcv, msg): where a datagram goes (the hand-off channel)

    def on_readable(self, listener: Listener) -> None:
        sock = listener.sock
        for _ in range(UDP_BURST):
            try:
                data, addr = sock.recvfrom(self.max_size + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.ratelog("udp", logging.WARNING, f"receiving on {listener}: {e.strerror}")
                return
            self.deliver(data, ReceiveInfo(addr[0], addr[1], listener.host, listener.port, UDP))

    def send(self, ip: str, port: int, data: bytes, listener: Listener | None = None) -> bool:
        listener = listener or self.default_for(ip)
        if listener is None:
            self.ratelog("noudp", logging.ERROR, "no UDP socket to send from")
            return False
        try:
            listener.sock.sendto(data, (ip, port))
            return True
        except OSError as e:
            self.ratelog("udpsend", logging.WARNING, f"sending to udp:{ip}:{port}: {e.strerror}")
            return False

    def socket_for(self, ip: str, rcv: ReceiveInfo) -> Listener | None:
        """Of several UDP sockets, the one to send to ``ip`` from, as OpenSER chose it: with
        mhomed=yes the one bound to the address the kernel routes ``ip`` by; else the one the
        message came in on, if of the family of ``ip``; else the first of that family, else the
        first."""
        if self.mhomed:
            found = self.on_host.get(source_address(ip))
            if found is not None:
                return found
        found = self.at.get((rcv.dst_ip, rcv.dst_port)) if rcv.proto is Proto.UDP else None
        if found is not None and (":" in found.host) == (":" in ip):
            return found
        return self.default_for(ip)

    def default_for(self, ip: str) -> Listener | None:
        """The first socket of the address family of ``ip``, else the first."""
        return self.default6 if ":" in ip else self.default4
