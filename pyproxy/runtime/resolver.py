"""Where a SIP target goes: RFC 3263's address and port, found without blocking the worker.

An address needs nothing. A name is looked up in /etc/hosts, then in DNS (through resolv.conf's
search list): with a port, its A (else AAAA) records; without one, the SRV records of its
transport (``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``) in RFC 2782 order (the lowest priority
first, weighted at random within it) and their targets' addresses, else the name's own addresses
on the transport's default port. As OpenSER with ``dns_try_naptr=no``, the transport comes from
the URI, not from NAPTR records.

Answers are cached for their TTL (failures for ``NEGATIVE_TTL``) as the ordered list of every
target's addresses, and concurrent lookups of one target share one query. A target a connection
could not reach is skipped for ``NEGATIVE_TTL`` (``failed()``; ``next_target()`` gives a request
the next one it has not tried: RFC 3263 4.3). The worker's event loop carries the queries:
``target()`` answers from what is known, ``resolve()`` calls back when DNS has answered or every
server has been tried. dnspython encodes and decodes the messages; the sockets and timers are
the worker's.
"""

from __future__ import annotations

import functools
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
from ..kernel.logs import log

NEGATIVE_TTL = 30.0         # seconds a failed lookup is remembered
MIN_TTL, MAX_TTL = 5.0, 3600.0
QUERY_TIMEOUT = 1.5         # seconds per server before the next one is asked
MAX_SRV = 8                 # SRV records of one name looked at
UNKNOWN = object()          # target(): not known yet, resolve() it
_SRV_PREFIX = {Proto.UDP: "_sip._udp.", Proto.TCP: "_sip._tcp.", Proto.TLS: "_sips._tcp."}

Target = tuple[str, int]    # (address, port)
Callback = Callable[[Target | None, str], None]     # (target or None, why it failed)


@functools.lru_cache(maxsize=4096)     # every message sent on a stream asks (ipaddress: ~2 us)
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


def resolv_conf() -> dns.resolver.Resolver | None:
    try:
        return dns.resolver.Resolver(configure=True)
    except (dns.exception.DNSException, OSError):
        return None


def nameservers(configured: list[tuple[str, int | None]], system=None) -> list[tuple[str, int]]:
    """The dns_server entries, else the servers of /etc/resolv.conf; addresses in the form the
    kernel reports answers from (``[0:0::1]`` is ``::1``)."""
    if not configured and system is not None:
        configured = [(str(s), None) for s in system.nameservers]
    found = []
    for host, port in configured:
        address = literal(host)
        if address is not None:
            found.append((address, port or 53))
    return found or [("127.0.0.1", 53)]


def _name(host: str) -> str:
    return host.lower().rstrip(".")


def candidates(name: str, search: list[str], ndots: int) -> list[str]:
    """The names to try for ``name``, as the system resolver does with resolv.conf's search list:
    a name with ``ndots`` dots or more as written first, a shorter one after the search domains."""
    if not search:
        return [name]
    searched = [f"{name}.{domain}" for domain in search]
    return [name, *searched] if name.count(".") >= ndots else [*searched, name]


class Lookup:
    """One RFC 3263 resolution in flight, the names still to try, and who waits for it."""

    __slots__ = ("key", "waiting", "ttl", "names")

    def __init__(self, key: tuple, names: list[str]) -> None:
        self.key = key
        self.waiting: list[Callback] = []
        self.ttl = MAX_TTL
        self.names = names


class Query:
    """One question to one server, on a socket of its own (a fresh source port: a forged answer
    must guess it as well as the 16-bit id)."""

    __slots__ = ("message", "server", "sock", "timer", "on_answer", "next_server")

    def __init__(self, message, server, sock, on_answer, next_server) -> None:
        self.message, self.server, self.sock = message, server, sock
        self.on_answer, self.next_server = on_answer, next_server
        self.timer = None


class Resolver:
    def __init__(self, loop=None, servers: list[tuple[str, int | None]] = (), hosts: dict[str, str] | None = None):
        self.loop = loop
        system = resolv_conf()
        self.servers = nameservers(list(servers), system)
        self.search = [str(d).rstrip(".") for d in system.search] if system is not None else []
        self.ndots = (system.ndots or 1) if system is not None else 1
        self.hosts = read_hosts() if hosts is None else hosts
        self.cache: dict[tuple, tuple[float, tuple[Target, ...] | None, str]] = {}  # key -> (expiry, targets, why)
        self.failing: dict[tuple[Proto, Target], float] = {}   # -> until when it is skipped
        self.lookups: dict[tuple, Lookup] = {}

    # -- what is known now (the hot path) --------------------------------------------------------
    def target(self, proto: Proto, host: str, port: int | None):
        """(address, port), None (known not to resolve), or UNKNOWN (call resolve())."""
        address = literal(host) or self.hosts.get(_name(host))
        if address is not None:
            return address, port or proto.default_port
        hit = self.cache.get((proto, _name(host), port))
        if hit is not None and hit[0] > time.monotonic():
            return self.usable(proto, hit[1])
        return UNKNOWN

    def usable(self, proto: Proto, targets: tuple[Target, ...] | None) -> Target | None:
        """The first target not known to be failing; all failing, the first again."""
        if not targets:
            return None
        now = time.monotonic()
        for target in targets:
            if self.failing.get((proto, target), 0.0) <= now:
                return target
        return targets[0]

    def failed(self, proto: Proto, target: Target) -> None:
        """``target`` did not take a connection: skipped for a while (RFC 3263 4.3)."""
        if len(self.failing) > 10000:
            self.failing.clear()
        self.failing[(proto, target)] = time.monotonic() + NEGATIVE_TTL

    def next_target(self, proto: Proto, host: str, port: int | None, tried: tuple) -> Target | None:
        """The first target of ``host`` neither tried by this request nor failing, if any."""
        hit = self.cache.get((proto, _name(host), port))
        now = time.monotonic()
        return next((t for t in (hit[1] or ()) if t not in tried and self.failing.get((proto, t), 0.0) <= now),
                    None) if hit else None

    def why(self, proto: Proto, host: str, port: int | None) -> str:
        hit = self.cache.get((proto, _name(host), port))
        return hit[2] if hit else ""

    # -- asking DNS ----------------------------------------------------------------------------
    def resolve(self, proto: Proto, host: str, port: int | None, callback: Callback) -> None:
        """Calls ``callback(target, why)`` once the name is resolved or known not to be."""
        known = self.target(proto, host, port)
        if known is not UNKNOWN:
            callback(known, self.why(proto, host, port))
            return
        key = (proto, _name(host), port)
        lookup = self.lookups.get(key)
        if lookup is not None:
            lookup.waiting.append(callback)
            return
        lookup = self.lookups[key] = Lookup(key, candidates(_name(host), self.search, self.ndots))
        lookup.waiting.append(callback)
        self.start(lookup)

    def start(self, lookup: Lookup) -> None:
        """RFC 3263 for the next name to try."""
        proto, _, port = lookup.key
        name = lookup.names.pop(0)
        if port is not None:
            self.by_address(lookup, name, port)
        else:
            self.ask(_SRV_PREFIX[proto] + name, dns.rdatatype.SRV,
                     lambda answer, why: self.on_srv(lookup, name, answer, why))

    def by_address(self, lookup: Lookup, name: str, port: int) -> None:
        """The name's own addresses on ``port``; a name that does not exist: the next candidate."""
        def on_addresses(addresses, ttl, why, missing):
            if addresses:
                lookup.ttl = min(lookup.ttl, ttl)
                self.finish(lookup, [(a, port) for a in addresses], "")
            elif missing and lookup.names:
                self.start(lookup)      # the next of the search list
            else:
                self.finish(lookup, [], why)
        self.addresses_of(name, on_addresses)

    def on_srv(self, lookup: Lookup, name: str, answer, why: str) -> None:
        if answer is None:          # no server answered, or they failed: not "no such service"
            self.finish(lookup, [], why)
            return
        records = [(rd.priority, rd.weight, rd.port, _name(rd.target.to_text()))
                   for rrset in answer.answer if rrset.rdtype == dns.rdatatype.SRV for rd in rrset]
        records = [r for r in records if r[3]]                      # "." : no such service here
        if not records:     # RFC 3263 4.2: no SRV, the name's own address on the default port
            self.by_address(lookup, name, lookup.key[0].default_port)
            return
        lookup.ttl = min(lookup.ttl, *(rrset.ttl for rrset in answer.answer))
        glue: dict[str, list[str]] = {}
        for rrset in answer.additional:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                glue.setdefault(_name(rrset.name.to_text()), []).extend(rd.address for rd in rrset)
        ordered = order_srv(records)[:MAX_SRV]
        found: list[list[Target]] = [[] for _ in ordered]     # per record, in RFC 2782 order
        waiting: set[int] = set()

        def done(index: int, addresses, ttl, unsure: bool) -> None:
            """Record ``index``'s addresses; when every record's are known, the waiters get the
            first (the rest are there to fail over to, so they are waited for: a few ms, or one
            query timeout when a backup's DNS is silent, once per TTL)."""
            found[index] = [(a, ordered[index][2]) for a in addresses]
            waiting.discard(index)
            # a backup DNS could not tell about: ask again soon rather than go without it a whole TTL
            lookup.ttl = min(lookup.ttl, min(ttl, NEGATIVE_TTL) if unsure else ttl)
            if not waiting:
                targets = [t for per_record in found for t in per_record]
                self.finish(lookup, targets, "" if targets else f"no SRV target of {name} has an address")

        for index, (_, _, _, target) in enumerate(ordered):
            known = glue.get(target) or [a for a in (literal(target) or self.hosts.get(target),) if a]
            if known:
                found[index] = [(a, ordered[index][2]) for a in known]
            else:
                waiting.add(index)
        if not waiting:
            done(0, [a for a, _ in found[0]], lookup.ttl, False)
            return
        for index in sorted(waiting):
            self.addresses_of(ordered[index][3], lambda addresses, ttl, why, missing, i=index:
                              done(i, addresses, ttl, bool(why) and not missing))

    def addresses_of(self, name: str, callback) -> None:
        """A records, else AAAA: ``callback(addresses, ttl, why, missing)``, ``missing`` when DNS
        said the name has none (not when it could not be asked)."""
        def on_answer(answer, why, rdtype):
            addresses = [] if answer is None else [
                (rd.address, rrset.ttl) for rrset in answer.answer if rrset.rdtype == rdtype for rd in rrset]
            if addresses:
                callback([a for a, _ in addresses], min(t for _, t in addresses), "", False)
            elif rdtype == dns.rdatatype.A and answer is not None and not why:
                self.ask(name, dns.rdatatype.AAAA,
                         lambda a, w: on_answer(a, w, dns.rdatatype.AAAA))  # NOERROR, no A: IPv6 only?
            else:
                callback([], MAX_TTL, why or f"{name} has no address", answer is not None)
        self.ask(name, dns.rdatatype.A, lambda a, w: on_answer(a, w, dns.rdatatype.A))

    def finish(self, lookup: Lookup, targets: list[Target], why: str) -> None:
        ttl = max(MIN_TTL, min(MAX_TTL, lookup.ttl)) if targets else NEGATIVE_TTL
        if len(self.cache) > 10000:
            self.cache.clear()
        self.cache[lookup.key] = (time.monotonic() + ttl, tuple(targets) or None, why)
        del self.lookups[lookup.key]
        found = self.usable(lookup.key[0], tuple(targets))
        for callback in lookup.waiting:
            try:
                callback(found, why)
            except Exception:       # one waiter's failure must not lose the others' messages
                log.exception(f"sending to {lookup.key[1]} after DNS answered failed")

    # -- the wire ------------------------------------------------------------------------------
    def ask(self, name: str, rdtype, on_answer, server: int = 0) -> None:
        """One question to one server; ``on_answer(response or None, why)`` exactly once, whatever
        happens: a response (NOERROR or NXDOMAIN), else None when every server failed."""
        if server >= len(self.servers):
            on_answer(None, f"no DNS server answered for {name}")
            return
        host, port = self.servers[server]
        try:
            # EDNS: SRV sets larger than 512 bytes arrive whole
            message = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        except dns.exception.DNSException as e:      # a label over 63 bytes, a name over 255...
            on_answer(None, f"{name}: not a DNS name ({e})")
            return
        except OSError as e:
            on_answer(None, f"cannot ask DNS: {e.strerror}")
            return
        query = Query(message, (host, port), sock, on_answer,
                      lambda: self.ask(name, rdtype, on_answer, server + 1))
        try:
            sock.setblocking(False)
            sock.sendto(message.to_wire(), (host, port))
        except OSError as e:
            log.warning(f"DNS server {host}:{port}: {e.strerror}")
            self.done(query).next_server()
            return
        self.loop.add_reader(sock.fileno(), lambda: self.on_readable(query))
        query.timer = self.loop.call_later(QUERY_TIMEOUT, lambda: self.done(query).next_server())

    def done(self, query: Query) -> Query:
        if query.timer is not None:
            query.timer.cancel()
        if query.sock.fileno() >= 0:
            self.loop.remove(query.sock.fileno())
            query.sock.close()
        return query

    def on_readable(self, query: Query) -> None:
        while True:
            try:
                data, source = query.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:         # ICMP port unreachable: nobody serves DNS there
                self.done(query).next_server()
                return
            if (source[0], source[1]) != query.server:
                continue
            try:
                response = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            if not query.message.is_response(response):
                continue                                    # late or forged
            self.done(query)
            rcode = response.rcode()
            if rcode == dns.rcode.NOERROR:
                query.on_answer(response, "")
            elif rcode == dns.rcode.NXDOMAIN:
                query.on_answer(response, f"{query.message.question[0].name.to_text(omit_final_dot=True)} "
                                          f"does not exist")
            else:
                log.log(logging.INFO, f"DNS server {source[0]}:{source[1]} answered {dns.rcode.to_text(rcode)}")
                query.next_server()
            return
