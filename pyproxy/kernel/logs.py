"""Logging: OpenSER's ``debug`` levels on Python's logging, to stderr or syslog, and every line
names the process that wrote it (``master``, ``worker 3``, ``tcp main``) and its pid.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
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


def setup(debug: int, to_stderr: bool, facility: str = "LOG_DAEMON") -> None:
    """Configure the 'pyproxy' logger once, in the master; children inherit it over fork."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
    if to_stderr:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(role)s[%(pid)d] %(levelname)s: %(message)s"
    else:
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        # log_facility is one of LOG_AUTH .. LOG_LOCAL7: the settings registry checked it
        names = logging.handlers.SysLogHandler.facility_names
        handler = logging.handlers.SysLogHandler(address=address, facility=names[facility[4:].lower()])
        fmt = "pyproxy: %(role)s[%(pid)d] %(levelname)s: %(message)s"
    handler.setFormatter(SafeFormatter(fmt))
    handler.addFilter(_role)
    log.addHandler(handler)
    log.setLevel(log_level(debug))
    log.propagate = False


def set_role(role: str) -> None:
    _role.role = role


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
