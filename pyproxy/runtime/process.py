"""What every process the master forks does first: take its name, and leave signals to the master.

Ctrl-C in a terminal reaches the whole process group; the master alone decides what INT, HUP and
the USR signals mean, and it stops its children with TERM.
"""

from __future__ import annotations

import signal
from typing import Callable

from setproctitle import setproctitle

from .logs import set_role


def become(role: str, on_term: Callable[[], None]) -> None:
    set_role(role)
    setproctitle(f"pyproxy: {role}")
    signal.signal(signal.SIGTERM, lambda *_: on_term())
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
