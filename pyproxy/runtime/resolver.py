"""Turning a SIP target host into an address.

IP literals need nothing. Names are resolved with the system resolver (A/AAAA) and cached for a
minute; RFC 3263 NAPTR/SRV selection is not done yet, so a name without a port goes to 5060
(5061 for TLS). The lookup blocks the worker that asks: keep names out of hot routes, or use
addresses, until an asynchronous resolver arrives.
"""

from __future__ import annotations

import ipaddress
import socket
import time

TTL = 60.0


class Resolver:
    def __init__(self) -> None:
        self.cache: dict[str, tuple[float | None, str | None]] = {}   # host -> (expiry, address)

    def address(self, host: str) -> str | None:
        hit = self.cache.get(host)          # addresses are cached too: this is the hot path
        if hit is not None and (hit[0] is None or hit[0] > time.monotonic()):
            return hit[1]
        if len(self.cache) > 10000:
            self.cache.clear()
        bare = host.strip("[]")
        try:
            ipaddress.ip_address(bare)
            self.cache[host] = (None, bare)     # never expires
            return bare
        except ValueError:
            pass
        now = time.monotonic()
        try:
            infos = socket.getaddrinfo(host, None, 0, socket.SOCK_DGRAM)
            ip = infos[0][4][0] if infos else None
        except (socket.gaierror, UnicodeError):
            ip = None
        self.cache[host] = (now + TTL, ip)
        return ip
