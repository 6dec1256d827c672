"""Logging: OpenSER's ``debug`` levels on Python's logging, to stderr or syslog, and every line
names the process that wrote it (``master``, ``worker 3``, ``tcp main``) and its pid.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
import time

from ..config.values import NOTICE, log_level

logging.addLevelName(NOTICE, "NOTICE")

log = logging.getLogger("pyproxy")


class _RoleFilter(logging.Filter):
    role = "master"

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.pid = os.getpid()
        return True


_role = _RoleFilter()


class SafeFormatter(logging.Formatter):
    """Lines as valid UTF-8: a peer's non-UTF-8 bytes reach log text as lone surrogates
    (surrogateescape), on which the syslog handler's encoding failed, and the line was lost."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        return text


SYSLOG_SOCKET = "/dev/log"


def setup(debug: int, to_stderr: bool, facility: str = "LOG_DAEMON") -> str:
    """Configure the 'pyproxy' logger once, in the master; children inherit it over fork.
    Returns where the lines go, said for the operator. Without a syslog socket (a container,
    a chroot) the lines go to standard error, with a warning, rather than nowhere."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler, unreachable = None, ""
    if not to_stderr:
        # log_facility is one of LOG_AUTH .. LOG_LOCAL7: the settings registry checked it
        names = logging.handlers.SysLogHandler.facility_names
        try:        # the handler itself says nothing when it cannot connect (as openlog(3))
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                probe.connect(SYSLOG_SOCKET)
            handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET, facility=names[facility[4:].lower()])
            destination = f"syslog ({facility}, {SYSLOG_SOCKET})"
        except OSError as e:
            unreachable = f"syslog cannot be reached ({SYSLOG_SOCKET}: {e.strerror or e})"
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("%(asctime)s %(role)s[%(pid)d] %(levelname)s: %(message)s"))
        destination = "standard error"
    else:
        handler.setFormatter(SafeFormatter("pyproxy: %(role)s[%(pid)d] %(levelname)s: %(message)s"))
    handler.addFilter(_role)
    log.addHandler(handler)
    log.setLevel(log_level(debug))
    log.propagate = False
    if unreachable:
        log.warning(f"{unreachable}: logging to standard error instead")
        destination += " (syslog unreachable)"
    return destination


def to_stderr() -> bool:
    """Whether setup() sent the lines to standard error (not to a syslog)."""
    return any(isinstance(handler, logging.StreamHandler) for handler in log.handlers)


def set_role(role: str) -> None:
    _role.role = role


def follow_debug_level(shm) -> bool:
    """Log at the level the shared memory holds (the ``debug`` MI command sets it for every
    process); each process calls this from its periodic tick. True when the level changed."""
    wanted = log_level(shm.debug_level())
    if log.level == wanted:
        return False
    log.setLevel(wanted)
    return True


class RateLimitedLog:
    """At most one line per second per kind; the rest are counted and summarised."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def __call__(self, kind: str, level: int, text: str) -> None:
        if self.allow(kind):
            more = self.suppressed.pop(kind, 0)
            log.log(level, text + (f" (and {more} more like it)" if more else ""))

    def allow(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self.last.get(kind, 0.0) < 1.0:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return False
        self.last[kind] = now
        return True
