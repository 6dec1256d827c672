"""A small event loop over epoll: readers, writers and timers, nothing else.

Each worker runs one. It is leaner than asyncio for what a SIP worker does (read a datagram,
route it, write it) and lets UDP sockets shared by all workers be registered with
EPOLLEXCLUSIVE, so one datagram wakes one worker. After each batch of events one poll returned,
the ``after_batch`` callbacks run: a worker sends there what the batch wrote to each connection
and handed to each other worker, once.
"""

from __future__ import annotations

import heapq
import itertools
import select
import time
from typing import Callable

from .logs import log

EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, list] = {}      # fd -> [read_cb, write_cb, exclusive]
        self.timers: list = []
        self._seq = itertools.count()
        self.running = False
        self._last_crash = 0.0
        # run after each batch of events that one poll returned; ``dispatching`` is True while a
        # batch is being handled (writes and hand-offs made then wait for these callbacks)
        self.after_batch: list[Callable[[], None]] = []
        self.dispatching = False

    # -- file descriptors -----------------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None], exclusive: bool = False) -> None:
        entry = self.handlers.get(fd)
        if entry is None:
            self.handlers[fd] = [callback, None, exclusive]
            self.epoll.register(fd, select.EPOLLIN | (EXCLUSIVE if exclusive else 0))
        else:
            entry[0] = callback
            self._modify(fd, entry)

    def set_writer(self, fd: int, callback: Callable[[], None] | None) -> None:
        """Watch ``fd`` for writability (callback) or stop watching it (None)."""
        entry = self.handlers.get(fd)
        if entry is None:
            if callback is None:
                return
            self.handlers[fd] = entry = [None, callback, False]
            self.epoll.register(fd, select.EPOLLOUT)
            return
        if entry[1] is callback:
            return
        entry[1] = callback
        self._modify(fd, entry)

    def _modify(self, fd: int, entry: list) -> None:
        mask = (select.EPOLLIN if entry[0] else 0) | (select.EPOLLOUT if entry[1] else 0)
        self.epoll.modify(fd, mask)

    def remove(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    # -- timers ---------------------------------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self.timers, (timer.when, next(self._seq), timer))
        return timer

    def _run_timers(self) -> float:
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, timer = heapq.heappop(timers)
            if not timer.cancelled:
                try:
                    timer.callback()
                except Exception:
                    self._crashed()
        return max(0.0, timers[0][0] - now) if timers else 1.0

    def _crashed(self) -> None:
        """In an except block: a bug in one handler costs what that handler was doing, never the
        process and the calls and connections it holds (logged at most once a second)."""
        now = time.monotonic()
        if now - self._last_crash >= 1.0:
            self._last_crash = now
            log.exception("internal error in an event handler; going on")

    # -- running --------------------------------------------------------------------------------
    def run(self) -> None:
        self.running = True
        poll, handlers = self.epoll.poll, self.handlers
        while self.running:
            timeout = self._run_timers()
            try:
                events = poll(min(timeout, 1.0))
            except InterruptedError:
                continue
            self.dispatching = True
            for fd, mask in events:
                entry = handlers.get(fd)
                if entry is None:
                    continue
                try:
                    if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and entry[0]:
                        entry[0]()
                        entry = handlers.get(fd)
                        if entry is None:
                            continue
                    if mask & (select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR) and entry[1]:
                        entry[1]()
                except Exception:
                    self._crashed()
            self.dispatching = False
            for callback in self.after_batch:
                try:
                    callback()
                except Exception:
                    self._crashed()

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        self.epoll.close()


def accept_client(loop: EventLoop, listener, on_readable: Callable[[], None], what: str):
    """A client of a non-blocking listener, or None: none is waiting, or the process is out of
    descriptors (EMFILE), and then the listener rests a second rather than spin on it."""
    try:
        sock, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:
        log.warning(f"{what}: cannot accept a client: {e.strerror}")
        loop.add_reader(listener.fileno(), None)
        loop.call_later(1.0, lambda: loop.add_reader(listener.fileno(), on_readable))
        return None
    return sock
