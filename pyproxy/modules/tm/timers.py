"""tm's timer values: OpenSER's parameters, in OpenSER 1.3's units, mapped onto RFC 3261's timers.

=================  ======  =======  ============================================================
parameter          unit    default  RFC 3261 timers it drives
=================  ======  =======  ============================================================
fr_timer           s       30       B (INVITE, until a provisional reply), F (non-INVITE)
fr_inv_timer       s       120      C (INVITE after a provisional reply, section 16.8)
wt_timer           s       5        D, I, J, K over UDP (0 over TCP/TLS, as the RFC says);
                                    L and M (RFC 6026) on every transport
T1_timer           ms      500      T1: A, E and G start at T1 and double; H = 64 x T1
T2_timer           ms      4000     T2: the longest interval of E and G
=================  ======  =======  ============================================================

``retr_timer1`` and ``retr_timer2`` are OpenSER 1.0's names of T1_timer and T2_timer (both in
milliseconds); either spelling works.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from .machines import Timer

RETRANSMISSION = frozenset({Timer.A, Timer.E, Timer.G})     # UDP only (RFC 3261 17.1.1.2, 17.2.1)
RELIABLE_ZERO = frozenset({Timer.D, Timer.I, Timer.J, Timer.K})     # 0 s over TCP/TLS


class TimerValues:
    __slots__ = ("t1", "t2", "fr", "fr_inv", "wait", "firsts")

    def __init__(self, t1: float = 0.5, t2: float = 4.0, fr: float = 30.0, fr_inv: float = 120.0,
                 wait: float = 5.0):
        self.t1, self.t2, self.fr, self.fr_inv, self.wait = t1, t2, fr, fr_inv, wait
        self.firsts = {(timer, reliable): self._first(timer, reliable)
                       for timer in Timer for reliable in (False, True)}

    @classmethod
    def from_modparams(cls, params: dict) -> TimerValues:
        t1 = params.get("retr_timer1") or params.get("T1_timer", 500)     # the old name, when set
        t2 = params.get("retr_timer2") or params.get("T2_timer", 4000)
        return cls(t1 / 1000, t2 / 1000, params.get("fr_timer", 30), params.get("fr_inv_timer", 120),
                   params.get("wt_timer", 5))

    def first(self, timer: Timer, reliable: bool) -> float | None:
        """The first interval of ``timer``; None: the timer does not run on this transport."""
        return self.firsts[timer, reliable]

    def _first(self, timer: Timer, reliable: bool) -> float | None:
        if timer in RETRANSMISSION:
            return None if reliable else self.t1
        if reliable and timer in RELIABLE_ZERO:
            return 0.0
        if timer is Timer.B or timer is Timer.F:
            return self.fr
        if timer is Timer.C:
            return self.fr_inv
        if timer is Timer.H:
            return 64 * self.t1
        return self.wait

    def backoff(self, timer: Timer, last: float) -> float:
        """The next interval of a retransmission timer: doubled; E and G no longer than T2
        (A doubles without bound: Timer B ends it)."""
        doubled = 2 * last
        return doubled if timer is Timer.A else min(doubled, self.t2)


class TimerLists:
    """Every timer of the transactions of one worker, as OpenSER kept them: one list per
    interval, in which timers expire in the order they were started. Starting and stopping one
    is O(1), a stopped timer is gone at once (nothing waits in a heap until its time, holding
    its transaction), and the event loop holds one timer: the next expiry of all of them.

    Entries are keyed by (transaction, Timer); ``expired(transaction, timer)`` is called for
    each one that expires.
    """

    SLACK = 0.005       # timers due within this of each other fire in one wake-up

    def __init__(self, call_later, now, expired):
        self.call_later, self.now, self.expired = call_later, now, expired
        self.lists: dict[float, OrderedDict] = {}
        self.wakeup = None
        self.wakeup_at = math.inf

    def start(self, txn, timer, interval: float) -> None:
        entries = self.lists.get(interval)
        if entries is None:
            entries = self.lists[interval] = OrderedDict()
        when = self.now() + interval
        entries[(txn, timer)] = when
        if when < self.wakeup_at - self.SLACK:
            self._arm(when)

    def stop(self, txn, timer, interval: float) -> None:
        entries = self.lists.get(interval)
        if entries:
            entries.pop((txn, timer), None)

    def __len__(self) -> int:
        return sum(map(len, self.lists.values()))

    def _arm(self, when: float) -> None:
        if self.wakeup is not None:
            self.wakeup.cancel()
        self.wakeup_at = when
        self.wakeup = self.call_later(max(0.0, when - self.now()), self._run)

    def _run(self) -> None:
        self.wakeup, self.wakeup_at = None, math.inf
        deadline = self.now() + self.SLACK
        due = []
        for entries in self.lists.values():
            while entries:
                key = next(iter(entries))
                if entries[key] > deadline:
                    break
                del entries[key]
                due.append(key)
        for txn, timer in due:
            self.expired(txn, timer)
        heads = [entries[next(iter(entries))] for entries in self.lists.values() if entries]
        if heads:
            earliest = min(heads)
            if earliest < self.wakeup_at - self.SLACK:
                self._arm(earliest)
