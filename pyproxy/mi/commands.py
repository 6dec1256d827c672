"""Management commands. Each takes the MI context and a list of string arguments and returns
something JSON can carry; ``MIError`` is a failure the caller sees as an error reply.

Commands that need the workers (``tls_list``, ``tls_reload``) ask every worker and gather what
they answer; the others read or write shared state (process list, shared-memory statistics and log
level) or signal the master (``shutdown``, ``reload``), after their answer has left.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import time

import psutil

from .. import __version__
from ..config.values import log_level
from ..db import DatabaseError
from ..kernel.logs import follow_debug_level
from ..kernel.shm import GAUGES, Stat
from ..modules import usrloc
from ..sip import SIPError, parse_uri


class MIError(Exception):
    pass


COMMANDS: dict = {}


def command(name: str, doc: str):
    def register(fn):
        COMMANDS[name] = (fn, doc)
        return fn
    return register


@command("version", "pyproxy, Python and OpenSSL versions")
def version(mi, args):
    from OpenSSL import SSL
    return {"pyproxy": __version__, "python": sys.version.split()[0],
            "openssl": SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}


@command("uptime", "when pyproxy started and for how long it has run")
def uptime(mi, args):
    now = time.time()
    return {"now": _iso(now), "up_since": _iso(mi.started), "uptime": round(now - mi.started)}


@command("ps", "every pyproxy process: pid, role, resident memory")
def ps(mi, args):
    return [{"pid": pid, "role": role, "rss_kib": rss // 1024} for pid, role, rss in processes(mi.master_pid)]


def processes(master_pid: int) -> list[tuple[int, str, int]]:
    """(pid, role, resident bytes) of the master and its children; one gone meanwhile (a worker
    being respawned) is left out."""
    try:
        master = psutil.Process(master_pid)
        procs = [master] + master.children()
    except psutil.Error:
        return []
    out = []
    for proc in procs:
        try:
            out.append((proc.pid, " ".join(proc.cmdline()).strip().removeprefix("pyproxy: "),
                        proc.memory_info().rss))
        except psutil.Error:
            continue
    return out


@command("which", "the commands this interface knows")
def which(mi, args):
    return sorted(COMMANDS)


@command("get_statistics", "message counters of every process (shared memory)")
def get_statistics(mi, args):
    return mi.statistics()


@command("reset_statistics", "zero every process's counters (gauges such as tm_inuse stay)")
def reset_statistics(mi, args):
    """Zero the counters of every process in shared memory, except the gauges (`GAUGES`: tm_inuse,
    the server transactions alive). Each process adds to its own counters without a lock, so a
    count made in the very instant of the reset may survive it."""
    processes = mi.statistics()
    for slot in range(len(processes)):
        counters = mi.shm.stats_of(slot)
        for stat in Stat:
            if stat not in GAUGES:
                counters.set(stat, 0)
    return {"reset": len(processes), "kept": sorted(g.name.lower() for g in GAUGES)}


@command("debug", "the log level (OpenSER's scale: -3 alert .. 4 and above debug): debug [LEVEL] sets it "
                  "in every process")
def debug(mi, args):
    if len(args) > 1:
        raise MIError("usage: debug [LEVEL]")
    if args:
        try:
            level = int(args[0])
        except ValueError:
            level = None
        if level is None or not -3 <= level <= 9:
            raise MIError(f"debug: expected a level from -3 to 9, found {args[0]!r}")
        mi.shm.set_debug_level(level)   # the other processes follow within a second
        follow_debug_level(mi.shm)
    level = mi.shm.debug_level()
    return {"debug": level, "logs": _level_name(level)}


@command("shutdown", "stop pyproxy (SIGTERM to the master), after answering")
def shutdown(mi, args):
    mi.loop.call_later(0.2, lambda: os.kill(mi.master_pid, signal.SIGTERM))
    return "shutdown requested"


@command("reload", "re-read the configuration (SIGHUP to the master), after checking it and answering")
def reload(mi, args):
    refusal = mi.reload_refusal()
    if refusal:
        raise MIError(f"reload refused: {refusal}")
    mi.loop.call_later(0.2, lambda: os.kill(mi.master_pid, signal.SIGHUP))
    return "reload requested"


@command("tls_list", "every TLS connection: owner, addresses, domain, SNI, version, cipher, peer; "
                     "tls_list PEER: those of one peer (IP, IP:PORT, or part of its subject or SNI)")
def tls_list(mi, args):
    if mi.tls_disabled:
        raise MIError("TLS is disabled")
    if len(args) > 1:
        raise MIError("usage: tls_list [PEER]")
    answers = mi.ask_workers("tls_list")
    failed = [a["error"] for a in answers if isinstance(a, dict)]
    if failed:
        raise MIError("; ".join(failed))
    connections = [conn for answer in answers for conn in answer]
    if args:
        wanted = _peer_filter(args[0])
        connections = [c for c in connections if wanted(c)]
    return connections


def _peer_filter(text: str):
    """A test of tls_list entries: IP, [IPv6]:PORT or IPv4:PORT match the peer's address; anything
    else is looked for (ignoring case) in the peer's certificate subject and in the SNI name."""
    host, port = text, None
    if text.startswith("[") and "]" in text:                # [IPv6] or [IPv6]:PORT
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:                              # IPv4:PORT (or name:port)
        host, _, port = text.partition(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        needle = text.lower()
        return lambda c: any(needle in (c.get(k) or "").lower() for k in ("peer_subject", "sni"))
    if port is not None and not port.isdigit():
        raise MIError(f"tls_list: {text!r} is not IP, IP:PORT or [IPv6]:PORT")

    def matches(c) -> bool:
        peer_ip, _, peer_port = c["peer"].rpartition(":")
        return ipaddress.ip_address(peer_ip.strip("[]")) == ip and (port is None or int(peer_port) == int(port))
    return matches


@command("tls_reload", "re-read every TLS domain's files; connections stay, new handshakes use them")
def tls_reload(mi, args):
    if mi.tls_disabled:
        raise MIError("TLS is disabled")
    error = mi.check_tls()           # a reload that cannot work changes nothing
    if error:
        raise MIError(f"reload refused, the old files stay in force: {error}")
    answers = mi.ask_workers("tls_reload")
    failed = [a.get("error") for a in answers if not a.get("ok")]
    if failed:
        raise MIError("reload failed in some workers: " + "; ".join(failed))
    os.kill(mi.master_pid, mi.reload_signal)      # respawned workers get the new files too
    return {"reloaded": len(answers)}


# -- the location service (usrloc) ----------------------------------------------------------
def _location(mi):
    if "usrloc" not in mi.config.modules:
        raise MIError("module usrloc is not loaded")
    return usrloc.management_view(mi.config)


def _aor(mi, text: str) -> tuple[str, str]:
    """USER, USER@DOMAIN or a SIP URI (sip:alice@example.org, as phones and logs write it)."""
    use_domain = mi.config.modparams["usrloc"]["use_domain"]
    if text.lower().startswith(("sip:", "sips:", "<sip:", "<sips:")):
        try:
            uri = parse_uri(text.strip("<>"))
        except SIPError as e:
            raise MIError(f"'{text}' is not an address of record: {e}") from None
        if not uri.user:
            raise MIError(f"'{text}' is not an address of record: it names no user")
        return usrloc.aor_of(uri, use_domain)
    user, _, domain = text.partition("@")
    if not user:
        raise MIError(f"'{text}' is not an address of record (USER, USER@DOMAIN or sip:USER@DOMAIN)")
    return (user, domain.lower()) if use_domain else (user, "")


def _not_found(text: str) -> MIError:
    """An address of record without a contact (Kamailio's 404): scripts can tell."""
    return MIError(f"{text}: AOR not found (no contact registered)")


def _binding(b, now: float) -> dict:
    return {"contact": b.contact, "expires": max(0, int(b.expires - now)), "q": b.q, "callid": b.callid,
            "cseq": b.cseq, "received": b.received, "socket": b.socket, "path": b.path,
            "user_agent": b.user_agent}


def _aor_text(aor: tuple[str, str]) -> str:
    return f"{aor[0]}@{aor[1]}" if aor[1] else aor[0]


def _database_errors(fn):
    """A command on the location service: its database failing is the command failing."""
    def run(mi, args):
        try:
            return fn(mi, args)
        except DatabaseError as e:
            raise MIError(str(e)) from None
    return run


@command("ul_dump", "every registered address of record and its contacts")
@_database_errors
def ul_dump(mi, args):
    now = time.time()
    return {_aor_text(aor): [_binding(b, now) for b in items] for aor, items in _location(mi).all(now).items()}


@command("ul_show_contact", "the contacts of one address of record: ul_show_contact AOR")
@_database_errors
def ul_show_contact(mi, args):
    if len(args) != 1:
        raise MIError("usage: ul_show_contact AOR")
    now = time.time()
    bindings = _location(mi).lookup(_aor(mi, args[0]), now)
    if not bindings:
        raise _not_found(args[0])
    return [_binding(b, now) for b in bindings]


@command("ul_rm", "remove every contact of an address of record: ul_rm AOR")
@_database_errors
def ul_rm(mi, args):
    if len(args) != 1:
        raise MIError("usage: ul_rm AOR")
    removed = _location(mi).remove(_aor(mi, args[0]), time.time())
    if not removed:
        raise _not_found(args[0])
    return {"removed": removed}


def run(mi, name: str, args: list[str]):
    entry = COMMANDS.get(name)
    if entry is None:
        raise MIError(f"unknown command '{name}' (try: which)")
    return entry[0](mi, args)


def _level_name(level: int) -> str:
    return logging.getLevelName(log_level(level)).lower()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))
