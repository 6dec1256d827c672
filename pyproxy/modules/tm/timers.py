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

from .machines import Timer

RETRANSMISSION = frozenset({Timer.A, Timer.E, Timer.G})     # UDP only (RFC 3261 17.1.1.2, 17.2.1)
RELIABLE_ZERO = frozenset({Timer.D, Timer.I, Timer.J, Timer.K})     # 0 s over TCP/TLS


class TimerValues:
    __slots__ = ("t1", "t2", "fr", "fr_inv", "wait")

    def __init__(self, t1: float = 0.5, t2: float = 4.0, fr: float = 30.0, fr_inv: float = 120.0,
                 wait: float = 5.0):
        self.t1, self.t2, self.fr, self.fr_inv, self.wait = t1, t2, fr, fr_inv, wait

    @classmethod
    def from_modparams(cls, params: dict) -> TimerValues:
        t1 = params.get("retr_timer1") or params.get("T1_timer", 500)     # the old name, when set
        t2 = params.get("retr_timer2") or params.get("T2_timer", 4000)
        return cls(t1 / 1000, t2 / 1000, params.get("fr_timer", 30), params.get("fr_inv_timer", 120),
                   params.get("wt_timer", 5))

    def first(self, timer: Timer, reliable: bool) -> float | None:
        """The first interval of ``timer``; None: the timer does not run on this transport."""
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
