"""What every process the master forks does first: take its name, and leave signals to the master.

Ctrl-C in a terminal reaches the whole process group; the master alone decides what INT, HUP and
the USR signals mean, and it stops its children with TERM.
"""

from __future__ import annotations

import contextlib
import grp
import pwd
import signal
import time
from typing import Callable

from setproctitle import setproctitle

from .logs import follow_debug_level, set_role


def become(role: str, on_term: Callable[[], None]) -> None:
    set_role(role)
    setproctitle(f"pyproxy: {role}")
    signal.signal(signal.SIGTERM, lambda *_: on_term())
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def beat_interval(timeout: int) -> float:
    """How often a process beats: a few times per ``heartbeat_timeout``, at most once a second."""
    return min(1.0, timeout / 4) if timeout else 1.0


def keep_beating(loop, shm, slot: int, timeout: int, on_level: Callable[[], None] | None = None) -> None:
    """A child's housekeeping, from a timer of its loop every beat_interval(): its heartbeat in
    shared memory (the master replaces a worker whose beat grows older than ``timeout``), and the
    log level the ``debug`` MI command set there (``on_level`` runs when it changed)."""
    interval = beat_interval(timeout)

    def beat():
        shm.beat(slot, time.monotonic())
        if follow_debug_level(shm) and on_level:
            on_level()
        loop.call_later(interval, beat)

    beat()


def run_as(user: str | None, group: str | None) -> tuple[int, int] | None:
    """The uid and gid that ``user``/``group`` (-u/-g: names or numbers) name; None for neither.
    -1 keeps the current one. KeyError names what does not exist."""
    if not (user or group):
        return None
    uid = gid = -1
    if user and user.isdigit():     # a number need not have a passwd entry (as OpenSER took it)
        uid = int(user)
        with contextlib.suppress(KeyError):
            gid = pwd.getpwuid(uid).pw_gid
    elif user:
        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def unknown_user_or_group(settings) -> str | None:
    """What -u/-g (user=, group=) name that does not exist, said for the operator."""
    for what, value, lookup in (("user", settings.user, pwd.getpwnam), ("group", settings.group, grp.getgrnam)):
        if value and not value.isdigit():
            try:
                lookup(value)
            except KeyError:
                return f"no such {what}: {value}"
    return None
