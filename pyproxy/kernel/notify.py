"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram per state change
to the Unix socket named by ``$NOTIFY_SOCKET`` ("@name" is an abstract socket).

Outside systemd the variable is unset and every call does nothing. The master alone speaks: the
unit says ``NotifyAccess=main``.
"""

from __future__ import annotations

import os
import socket
import time

from .logs import log


class Notifier:
    def __init__(self, environ=os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address if address.startswith(("/", "\0")) else ""
        self.sock: socket.socket | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        # systemd asks for a ping at least every WATCHDOG_USEC; sd_watchdog_enabled(3) says half
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) and mine else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
        except OSError as e:        # systemd gone or restarting: the service goes on
            log.warning(f"NOTIFY_SOCKET {self.address.lstrip(chr(0))}: {e.strerror or e}")

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC: systemd 253+ wants it with RELOADING=1 (to tell reloads apart)
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={now}", "STATUS=reloading the configuration")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")
