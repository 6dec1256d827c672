"""Where a SIP target goes: RFC 3263's address and port, found without blocking the worker.

An address needs nothing. A name is looked up in /etc/hosts, then in DNS: with a port, its A
(else AAAA) records; without one, the SRV records of its transport (``_sip._udp``, ``_sip._tcp``,
``_sips._tcp``) — the lowest priority first, weighted at random within it (RFC 2782) — and the
address of the chosen target, else the name's own address on the transport's default port. As
OpenSER with ``dns_try_naptr=no``, the transport comes from the URI, not from NAPTR records.

Answers are cached for their TTL (failures for ``NEGATIVE_TTL``), and concurrent lookups of one
target share one query. The worker's event loop carries the queries: ``target()`` answers from
what is known, ``resolve()`` calls back when DNS has answered or every server has been tried.
dnspython encodes and decodes the messages; the sockets and timers are the worker's.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import time
from typing import Callable

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from ..config.values import Proto
from .logs import log

NEGATIVE_TTL = 30.0         # seconds a failed lookup is remembered
MIN_TTL, MAX_TTL = 5.0, 3600.0
QUERY_TIMEOUT = 1.5         # seconds per server before the next one is asked
UNKNOWN = object()          # target(): not known yet, resolve() it
_SRV_PREFIX = {Proto.UDP: "_sip._udp.", Proto.TCP: "_sip._tcp.", Proto.TLS: "_sips._tcp."}

Target = tuple[str, int]    # (address, port)
Callback = Callable[[Target | None, str], None]     # (target or None, why it failed)


def literal(host: str) -> str | None:
    """The address a host is written as, or None for a name."""
    bare = host[1:-1] if host.startswith("[") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


def read_hosts(path: str = "/etc/hosts") -> dict[str, str]:
    """name -> first address, as the system resolver reads the hosts file."""
    names: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and literal(fields[0]):
                    for name in fields[1:]:
                        names.setdefault(name.lower().rstrip("."), fields[0])
    except OSError:
        pass
    return names


def order_srv(records: list[tuple[int, int, int, str]], rng=random) -> list[tuple[int, int, int, str]]:
    """RFC 2782: (priority, weight, port, target) by ascending priority; within one priority a
    weighted random order, a record of weight w chosen with probability w / sum (zeros last)."""
    ordered = []
    for priority in sorted({r[0] for r in records}):
        pool = [r for r in records if r[0] == priority]
        while pool:
            total = sum(r[1] for r in pool)
            pick = rng.uniform(0, total) if total else 0
            for r in pool:
                pick -= r[1]
                if pick <= 0 and (r[1] or not total):
                    break
            pool.remove(r)
            ordered.append(r)
    return ordered


def nameservers(configured: list[tuple[str, int | None]]) -> list[tuple[str, int]]:
    """The dns_server entries, else the servers of /etc/resolv.conf."""
    if configured:
        return [(host, port or 53) for host, port in configured]
    try:
        found = dns.resolver.Resolver(configure=True).nameservers
    except (dns.exception.DNSException, OSError):
        found = []
    return [(str(s), 53) for s in found] or [("127.0.0.1", 53)]


class Lookup:
    """One RFC 3263 resolution in flight: the queries it still needs, and who waits for it."""

    __slots__ = ("key", "waiting", "ttl")

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.waiting: list[Callback] = []
        self.ttl = MAX_TTL


class Resolver:
    def __init__(self, loop=None, servers: list[tuple[str, int | None]] = (), hosts: dict[str, str] | None = None):
        self.loop = loop
        self.servers = nameservers(list(servers))
        self.hosts = read_hosts() if hosts is None else hosts
        self.cache: dict[tuple, tuple[float | None, Target | None, str]] = {}  # key -> (expiry, target, why)
        self.lookups: dict[tuple, Lookup] = {}
        self.queries: dict[int, tuple] = {}         # DNS id -> (socket, lookup step state)
        self.sockets: dict[int, socket.socket] = {}  # family -> our query socket

    # -- what is known now (the hot path) --------------------------------------------------------
    def target(self, proto: Proto, host: str, port: int | None):
        """(address, port), None (known not to resolve), or UNKNOWN (call resolve())."""
        key = (proto, host, port)
        hit = self.cache.get(key)
        if hit is not None and (hit[0] is None or hit[0] > time.monotonic()):
            return hit[1]
        if len(self.cache) > 10000:
            self.cache.clear()
        address = literal(host) or self.hosts.get(host.lower().rstrip("."))
        if address is not None:
            found = (address, port or proto.default_port)
            self.cache[key] = (None, found, "")
            return found
        return UNKNOWN

    def why(self, proto: Proto, host: str, port: int | None) -> str:
        hit = self.cache.get((proto, host, port))
        return hit[2] if hit else ""

    # -- asking DNS ----------------------------------------------------------------------------
    def resolve(self, proto: Proto, host: str, port: int | None, callback: Callback) -> None:
        """Calls ``callback(target, why)`` once the name is resolved or known not to be."""
        key = (proto, host, port)
        known = self.target(proto, host, port)
        if known is not UNKNOWN:
            callback(known, self.why(proto, host, port))
            return
        lookup = self.lookups.get(key)
        if lookup is not None:
            lookup.waiting.append(callback)
            return
        lookup = self.lookups[key] = Lookup(key)
        lookup.waiting.append(callback)
        name = host.rstrip(".")
        if port is not None:
            self.ask_address(lookup, name, port)
        else:
            self.ask(lookup, _SRV_PREFIX[proto] + name, dns.rdatatype.SRV,
                     lambda answer, why: self.on_srv(lookup, name, answer, why))

    def on_srv(self, lookup: Lookup, name: str, answer, why: str) -> None:
        records = [] if answer is None else [
            (rd.priority, rd.weight, rd.port, rd.target.to_text(omit_final_dot=True))
            for rrset in answer.answer if rrset.rdtype == dns.rdatatype.SRV for rd in rrset]
        records = [r for r in records if r[3] not in ("", ".")]     # "." : no such service here
        if not records:     # RFC 3263 4.2: no SRV, the name's own address on the default port
            self.ask_address(lookup, name, lookup.key[0].default_port)
            return
        lookup.ttl = min(lookup.ttl, *(rrset.ttl for rrset in answer.answer))
        _, _, port, target = order_srv(records)[0]
        glue = [rd.address for rrset in answer.additional if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
                and rrset.name.to_text(omit_final_dot=True).lower() == target.lower() for rd in rrset]
        if glue:
            self.finish(lookup, (glue[0], port), "")
        elif literal(target) or target.lower() in self.hosts:
            self.finish(lookup, (literal(target) or self.hosts[target.lower()], port), "")
        else:
            self.ask_address(lookup, target, port)

    def ask_address(self, lookup: Lookup, name: str, port: int, rdtype=dns.rdatatype.A) -> None:
        def on_answer(answer, why):
            addresses = [] if answer is None else [
                (rd.address, rrset.ttl) for rrset in answer.answer if rrset.rdtype == rdtype for rd in rrset]
            if addresses:
                lookup.ttl = min(lookup.ttl, addresses[0][1])
                self.finish(lookup, (addresses[0][0], port), "")
            elif rdtype == dns.rdatatype.A and answer is not None and not why:
                self.ask_address(lookup, name, port, dns.rdatatype.AAAA)
            else:
                self.finish(lookup, None, why or f"{name} has no address")
        self.ask(lookup, name, rdtype, on_answer)

    def finish(self, lookup: Lookup, found: Target | None, why: str) -> None:
        ttl = max(MIN_TTL, min(MAX_TTL, lookup.ttl)) if found else NEGATIVE_TTL
        self.cache[lookup.key] = (time.monotonic() + ttl, found, why)
        del self.lookups[lookup.key]
        for callback in lookup.waiting:
            callback(found, why)

    # -- the wire ------------------------------------------------------------------------------
    def ask(self, lookup: Lookup, name: str, rdtype, on_answer, server: int = 0) -> None:
        """One question to one server; on_answer(response or None, why) once, whatever happens."""
        if server >= len(self.servers):
            on_answer(None, f"no DNS server answered for {name}")
            return
        query = dns.message.make_query(name, rdtype)
        while query.id in self.queries:
            query.id = random.getrandbits(16)
        host, port = self.servers[server]
        sock = self.socket_for(host)
        try:
            sock.sendto(query.to_wire(), (host, port))
        except OSError as e:
            log.warning(f"DNS server {host}:{port}: {e.strerror}")
            self.ask(lookup, name, rdtype, on_answer, server + 1)
            return
        timer = self.loop.call_later(QUERY_TIMEOUT, lambda: self.on_timeout(query.id))
        self.queries[query.id] = (query, (host, port), timer, on_answer,
                                  lambda: self.ask(lookup, name, rdtype, on_answer, server + 1))

    def on_timeout(self, query_id: int) -> None:
        pending = self.queries.pop(query_id, None)
        if pending is not None:
            pending[4]()                                    # the next server

    def socket_for(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.sockets.get(family)
        if sock is None:
            sock = self.sockets[family] = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self.loop.add_reader(sock.fileno(), lambda: self.on_readable(sock))
        return sock

    def on_readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data, source = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue                                    # an ICMP error of an earlier query
            try:
                response = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            pending = self.queries.get(response.id)
            if pending is None or (source[0], source[1]) != pending[1] or not pending[0].is_response(response):
                continue                                    # late, spoofed or someone else's
            del self.queries[response.id]
            pending[2].cancel()
            rcode = response.rcode()
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                pending[3](response, "" if rcode == dns.rcode.NOERROR else
                           f"{pending[0].question[0].name.to_text(omit_final_dot=True)} does not exist")
            else:
                log.log(logging.INFO, f"DNS server {source[0]}:{source[1]} answered {dns.rcode.to_text(rcode)}")
                pending[4]()
