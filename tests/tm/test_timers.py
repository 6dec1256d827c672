"""tm's timers: OpenSER's parameters onto RFC 3261's timers (timers.TimerValues), and the timers
running over the fake network: retransmissions over UDP only (RFC 3261 17.1.1.2, 17.1.2.2,
17.2.1), fr_timer and fr_inv_timer (Timers B/F and C, 16.8), the wait timers that let a finished
transaction go (D, I, J, K; RFC 6026's L and M), Timer G and Timer H.
"""

from __future__ import annotations

import pytest

from pyproxy.assembly.loader import load_config_text
from pyproxy.config.values import Proto
from pyproxy.modules.tm.machines import State, Timer
from pyproxy.modules.tm.timers import TimerValues

from .harness import UAS, FakeProxy, ack_of, cancel_of, invite, methods, reply_to, requests, responses, status

RELAY = """
route {
    if (loose_route()) { t_relay(); exit; }
    if (method=="INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); }
}
"""


def modparams(**params) -> str:
    return "".join(f'modparam("tm", "{name}", {value})\n' for name, value in params.items())


def values_of(**params) -> TimerValues:
    """TimerValues as the worker makes them: from the compiled config's tm parameters."""
    config = load_config_text('loadmodule "tm"\n' + modparams(**params) + "route { t_relay(); }\n", "t.cfg")
    return TimerValues.from_modparams(config.modparams["tm"])


# --- TimerValues --------------------------------------------------------------------------------
@pytest.mark.parametrize("params,want", [
    ({}, (0.5, 4.0, 30, 120, 5)),
    ({"fr_timer": 3}, (0.5, 4.0, 3, 120, 5)),                  # seconds
    ({"fr_inv_timer": 90}, (0.5, 4.0, 30, 90, 5)),
    ({"wt_timer": 2}, (0.5, 4.0, 30, 120, 2)),
    ({"T1_timer": 250}, (0.25, 4.0, 30, 120, 5)),              # milliseconds
    ({"T2_timer": 2000}, (0.5, 2.0, 30, 120, 5)),
    ({"retr_timer1": 300}, (0.3, 4.0, 30, 120, 5)),            # OpenSER 1.0's names, ms too
    ({"retr_timer2": 1000}, (0.5, 1.0, 30, 120, 5)),
    ({"retr_timer1": 100, "retr_timer2": 800}, (0.1, 0.8, 30, 120, 5)),
])
def test_modparams_units_and_aliases(params, want):
    """fr_timer, fr_inv_timer and wt_timer are in seconds, T1_timer/T2_timer (and their OpenSER
    1.0 names retr_timer1/retr_timer2) in milliseconds; RFC 3261's defaults are T1 = 500 ms and
    T2 = 4 s (section 17.1.1.1, table 4)."""
    v = values_of(**params)
    assert (v.t1, v.t2, v.fr, v.fr_inv, v.wait) == pytest.approx(want)


def test_modparams_from_a_plain_dict():
    v = TimerValues.from_modparams({})
    assert (v.t1, v.t2, v.fr, v.fr_inv, v.wait) == (0.5, 4.0, 30, 120, 5)
    v = TimerValues.from_modparams({"retr_timer1": 0, "T1_timer": 200, "retr_timer2": 0, "T2_timer": 1600})
    assert (v.t1, v.t2) == pytest.approx((0.2, 1.6))       # 0: the old name unset


V = TimerValues(t1=0.5, t2=4.0, fr=30, fr_inv=120, wait=5)


@pytest.mark.parametrize("timer,udp,reliable", [
    (Timer.A, 0.5, None),       # 17.1.1.2: "If an unreliable transport is being used ... timer A"
    (Timer.E, 0.5, None),       # 17.1.2.2: "If an unreliable transport is in use ... timer E"
    (Timer.G, 0.5, None),       # 17.2.1: "For unreliable transports, timer G is set"
    (Timer.B, 30, 30),          # fr_timer, on every transport
    (Timer.F, 30, 30),
    (Timer.C, 120, 120),        # fr_inv_timer (16.8)
    (Timer.H, 32.0, 32.0),      # 64*T1, "for all transports"
    (Timer.D, 5, 0.0),          # "at least 32 seconds for unreliable transports, and ... zero
    (Timer.I, 5, 0.0),          #  seconds for reliable transports" (wt_timer over UDP here)
    (Timer.J, 5, 0.0),
    (Timer.K, 5, 0.0),
    (Timer.L, 5, 5),            # RFC 6026: every transport
    (Timer.M, 5, 5),
])
def test_first_intervals(timer, udp, reliable):
    """Which timers run on which transport, and their first interval (RFC 3261 17, table 4):
    no retransmission timers and zero D/I/J/K over TCP/TLS."""
    assert V.first(timer, reliable=False) == udp
    assert V.first(timer, reliable=True) == reliable


@pytest.mark.parametrize("timer,intervals", [
    (Timer.A, [0.5, 1, 2, 4, 8, 16, 32, 64]),      # 17.1.1.2: doubles, Timer B ends it
    (Timer.E, [0.5, 1, 2, 4, 4, 4, 4]),            # 17.1.2.2: MIN(2*T1, T2) ...
    (Timer.G, [0.5, 1, 2, 4, 4, 4]),               # 17.2.1: MIN(2*T1, T2) ...
])
def test_backoff_caps(timer, intervals):
    """A doubles without a cap; E and G double up to T2."""
    got, last = [V.first(timer, False)], V.first(timer, False)
    for _ in intervals[1:]:
        last = V.backoff(timer, last)
        got.append(last)
    assert got == intervals


def test_backoff_cap_follows_t2():
    v = values_of(T1_timer=100, T2_timer=350)
    assert [v.backoff(Timer.E, x) for x in (0.1, 0.2, 0.35)] == pytest.approx([0.2, 0.35, 0.35])
    assert [v.backoff(Timer.G, x) for x in (0.1, 0.2, 0.35)] == pytest.approx([0.2, 0.35, 0.35])
    assert v.backoff(Timer.A, 0.35) == pytest.approx(0.7)


# --- retransmissions over the fake network --------------------------------------------------------
def times(out):
    return [round(s.at, 3) for s in out]


@pytest.mark.parametrize("params,resent,timeout", [
    ({}, [0.5, 1.5, 3.5, 7.5, 15.5], 30),
    ({"T1_timer": 250, "fr_timer": 20}, [0.25, 0.75, 1.75, 3.75, 7.75, 15.75], 20),
    ({"retr_timer1": 1000}, [1, 3, 7, 15], 30),
    ({"fr_timer": 5}, [0.5, 1.5, 3.5], 5),
], ids=["default", "T1=250", "retr_timer1", "fr=5"])
def test_invite_is_resent_by_timer_a_until_timer_b(params, resent, timeout):
    """17.1.1.2: over UDP the INVITE is retransmitted at T1, 2*T1, 4*T1 ... after the last one
    (Timer A, no cap); fr_timer (Timer B) ends it with a 408 upstream (16.8: "as if the
    transaction received a 408") and no CANCEL (there was no provisional response)."""
    proxy = FakeProxy(RELAY, modparams(**params))
    req = invite()
    proxy.receive(req)
    branch, trying = proxy.take()
    out = proxy.advance(timeout - 0.01)
    assert all(s.data == branch.data for s in out)          # the same bytes, the same branch
    assert times(out) == resent
    out = proxy.advance(0.02)
    assert methods(out) == ["408"] and out[0].msg.cseq[1] == "INVITE"
    assert (out[0].dest.host, out[0].dest.port) == ("10.0.0.1", 5062)
    later = proxy.advance(100)
    assert requests(later) == []                             # no CANCEL, nothing more downstream
    assert {s.data for s in later} <= {out[0].data}          # only Timer G's 408 again, upstream


@pytest.mark.parametrize("params,resent", [
    ({}, [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5]),
    ({"T2_timer": 2000, "fr_timer": 12}, [0.5, 1.5, 3.5, 5.5, 7.5, 9.5, 11.5]),
    ({"retr_timer2": 1000, "fr_timer": 6}, [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]),
], ids=["T2=4s", "T2_timer=2s", "retr_timer2=1s"])
def test_non_invite_is_resent_by_timer_e_capped_at_t2(params, resent):
    """17.1.2.2: a non-INVITE request is retransmitted at T1, 2*T1, ... up to T2 and then every
    T2 (Timer E) until Timer F (fr_timer) answers 408 upstream."""
    proxy = FakeProxy(RELAY, modparams(**params))
    proxy.receive(invite(method="OPTIONS"))
    branch, = proxy.take()                  # no 100 Trying for a non-INVITE
    fr = params.get("fr_timer", 30)
    out = proxy.advance(fr - 0.01)
    assert times(out) == resent and all(s.data == branch.data for s in out)
    assert methods(proxy.advance(0.02)) == ["408"]


def test_timer_e_is_t2_in_proceeding():
    """17.1.2.2: "If Timer E fires while in the Proceeding state, the request MUST be passed to
    the transport layer for retransmission, and Timer E MUST be reset with a value of T2
    seconds." A 100 at 0.2 s: resent at 0.5 (Timer E as set in Trying), then every 4 s."""
    proxy = FakeProxy(RELAY, modparams(fr_timer=20))
    proxy.receive(invite(method="OPTIONS"))
    branch, = proxy.take()
    proxy.advance(0.2)
    proxy.receive(reply_to(branch, 100), src=UAS)
    assert proxy.take() == []               # 100 is never forwarded (16.7 step 5)
    out = proxy.advance(19.7)
    assert times(out) == [0.5, 4.5, 8.5, 12.5, 16.5]
    assert methods(proxy.advance(0.2)) == ["408"]


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "MESSAGE"])
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_no_retransmission_over_a_reliable_transport(method, transport):
    """17.1.1.2 / 17.1.2.2: Timers A and E run over unreliable transports only; a branch that
    leaves over TCP or TLS (;transport=tcp in the Request-URI) is never resent, and still times
    out by fr_timer."""
    proxy = FakeProxy(RELAY, modparams(fr_timer=10))
    proxy.receive(invite(f"sip:bob@10.0.0.2;transport={transport}", method=method))
    branch = requests(proxy.take())[0]
    assert branch.dest.proto.value == transport
    out = proxy.advance(9.99)
    assert out == []
    assert methods(proxy.advance(0.02)) == ["408"]


# --- fr_timer, fr_inv_timer -------------------------------------------------------------------------
def test_each_provisional_restarts_timer_c():
    """16.8: "if the proxy receives a provisional response, it MUST reset timer C": a 183 at 4 s
    moves the CANCEL from 5 s to 9 s."""
    proxy = FakeProxy(RELAY, modparams(fr_inv_timer=5))
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    assert methods(proxy.advance(4)) == ["180"]
    proxy.receive(reply_to(branch, 183), src=UAS)
    assert methods(proxy.take()) == ["183"]
    assert proxy.advance(4.9) == []
    out = proxy.advance(0.2)
    assert sorted(methods(out)) == ["408", "CANCEL"]


def test_fr_inv_timer_cancel_then_late_487_is_acked_not_forwarded():
    """16.8: Timer C fires after a provisional: the branch is CANCELed (the CANCEL has the
    INVITE's branch, 9.1) and 408 goes upstream; the 487 the CANCEL brings is ACKed downstream
    (17.1.1.3) and absorbed, as is the 200 of the CANCEL."""
    proxy = FakeProxy(RELAY, modparams(fr_inv_timer=5))
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    out = proxy.advance(5.01)
    cancel, = requests(out)
    assert cancel.first_line == "CANCEL sip:bob@10.0.0.2 SIP/2.0"
    assert cancel.msg.top_via.branch == branch.msg.top_via.branch
    assert [status(s) for s in responses(out)] == [408]
    proxy.receive(reply_to(cancel, 200), src=UAS)
    proxy.receive(reply_to(branch, 487), src=UAS)
    assert methods(proxy.take()) == ["ACK"]


@pytest.mark.parametrize("provisional", [False, True])
def test_canceled_then_timed_out_is_487_not_408(provisional):
    """16.8 and 16.10: a branch of a canceled transaction that never answers ends as 487 (Request
    Terminated), not 408: the UAC asked for the CANCEL. Without a provisional response no CANCEL
    goes downstream at all (9.1) and Timer B ends the branch; with one, Timer C does."""
    proxy = FakeProxy(RELAY, modparams(fr_timer=10, fr_inv_timer=20))
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    if provisional:
        proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    proxy.receive(cancel_of(req))
    out = proxy.take()
    assert [status(s) for s in responses(out)] == [200]
    assert methods(requests(out)) == (["CANCEL"] if provisional else [])
    deadline = 20 if provisional else 10
    out = proxy.advance(deadline + 0.01)
    finals = [status(s) for s in responses(out)]
    assert finals == [487]
    assert all(m in ("CANCEL", "INVITE") for m in methods(requests(out)))
    if not provisional:
        assert "CANCEL" not in methods(out)     # 9.1: never CANCEL a branch that did not answer


# --- Timer G, Timer H ---------------------------------------------------------------------------
def test_timer_g_resends_the_final_response_until_the_ack():
    """17.2.1: over UDP a 3xx-6xx final response is retransmitted at T1, 2*T1, ... capped at T2
    (Timer G) until the ACK comes; then no more (Confirmed)."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS)
    ack, busy = proxy.take()
    out = proxy.advance(12)
    assert times(out) == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(s.data == busy.data and (s.dest.host, s.dest.port) == ("10.0.0.1", 5062) for s in out)
    proxy.receive(ack_of(req, busy.msg))
    assert proxy.take() == []
    server, = proxy.layer.servers.values()
    assert server.state is State.CONFIRMED
    assert proxy.advance(30) == []


def test_timer_h_ends_a_transaction_whose_ack_never_came():
    """17.2.1: Timer H (64*T1, 32 s) ends the Completed state when the ACK never comes; Timer G's
    retransmissions (capped at T2) stop with it."""
    proxy = FakeProxy(RELAY)
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS)
    proxy.take()
    out = proxy.advance(31.99)
    assert times(out) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert len(proxy.layer.servers) == 1
    assert proxy.advance(0.02) == []
    assert not proxy.layer.servers
    assert proxy.advance(100) == []
    assert proxy.idle()


def test_timer_h_with_a_short_t1():
    """Timer H is 64*T1 on every transport: with T1 = 100 ms, 6.4 s."""
    proxy = FakeProxy(RELAY, modparams(T1_timer=100))
    proxy.receive(invite(), proto=Proto.TCP)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS)
    proxy.take()
    assert proxy.advance(6.39) == []        # no Timer G over TCP
    assert len(proxy.layer.servers) == 1
    proxy.advance(0.02)
    assert not proxy.layer.servers


def test_no_timer_g_over_tcp():
    """17.2.1: "For unreliable transports, timer G is set": a request that came over TCP gets its
    final response once."""
    proxy = FakeProxy(RELAY)
    proxy.receive(invite(), proto=Proto.TCP)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS)
    assert methods(proxy.take()) == ["ACK", "486"]
    assert proxy.advance(31) == []


# --- wait timers: transactions are let go ---------------------------------------------------------
def invite_200(proxy):
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(reply_to(branch, 200), src=UAS)
    assert methods(proxy.take()) == ["180", "200"]


def invite_486_acked(proxy, proto=Proto.UDP):
    req = invite()
    proxy.receive(req, proto=proto)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS)
    ack, busy = proxy.take()
    proxy.receive(ack_of(req, busy.msg), proto=proto)


def options_200(proxy):
    proxy.receive(invite(method="OPTIONS"))
    branch, = proxy.take()
    proxy.receive(reply_to(branch, 200), src=UAS)
    assert methods(proxy.take()) == ["200"]


def invite_canceled(proxy):
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(cancel_of(req))
    cancel, = [s for s in proxy.take() if s.first_line.startswith("CANCEL")]
    proxy.receive(reply_to(cancel, 200), src=UAS)
    proxy.receive(reply_to(branch, 487), src=UAS)
    ack, terminated = proxy.take()
    proxy.receive(ack_of(req, terminated.msg))


@pytest.mark.parametrize("flow", [invite_200, invite_486_acked, options_200, invite_canceled])
@pytest.mark.parametrize("wait", [5, 2])
def test_wait_timers_let_finished_transactions_go(flow, wait):
    """RFC 3261 17 (D, I, J, K: wt_timer over UDP) and RFC 6026 (L, M): once a transaction is
    done it absorbs stragglers for wt_timer seconds, then is deleted: both tables empty and no
    timer left running."""
    proxy = FakeProxy(RELAY, modparams(wt_timer=wait))
    flow(proxy)
    assert proxy.layer.servers and proxy.layer.clients
    proxy.advance(wait - 0.01)
    assert proxy.layer.servers and proxy.layer.clients
    assert proxy.advance(0.02) == []
    assert proxy.idle(), (proxy.layer.servers, proxy.layer.clients, proxy.clock.pending())


def test_reliable_wait_timers_are_zero():
    """17.1.1.2, 17.2.2 ...: Timers D, I, J and K are zero over reliable transports: an INVITE
    and its 486 and ACK over TCP, both ways, leave nothing behind."""
    proxy = FakeProxy(RELAY)
    req = invite("sip:bob@10.0.0.2;transport=tcp")
    proxy.receive(req, proto=Proto.TCP)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS, proto=Proto.TCP)
    ack, busy = proxy.take()
    proxy.receive(ack_of(req, busy.msg), proto=Proto.TCP)
    proxy.advance(0)
    assert proxy.idle()


def test_reliable_non_invite_leaves_nothing():
    proxy = FakeProxy(RELAY)
    proxy.receive(invite("sip:bob@10.0.0.2;transport=tcp", method="OPTIONS"), proto=Proto.TCP)
    branch, = proxy.take()
    proxy.receive(reply_to(branch, 200), src=UAS, proto=Proto.TCP)
    assert methods(proxy.take()) == ["200"]
    proxy.advance(0)
    assert proxy.idle()


def test_timeout_leaves_nothing_behind():
    """After a 408 by fr_timer and the wait that follows, nothing is left."""
    proxy = FakeProxy(RELAY, modparams(fr_timer=3))
    req = invite()
    proxy.receive(req)
    proxy.take()
    out = proxy.advance(3.01)
    timeout, = responses(out)
    proxy.receive(ack_of(req, timeout.msg))
    proxy.advance(10)
    assert proxy.idle()


def test_canceled_timeout_eventually_leaves_nothing():
    """A canceled branch that never answers (nor its CANCEL): 487 upstream, then everything ends
    by its timers: the CANCEL's own client transaction (Timer F), the INVITE branch (Timer B
    after Timer C), the server (Timer H without the ACK)."""
    proxy = FakeProxy(RELAY, modparams(fr_timer=4, fr_inv_timer=6))
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(cancel_of(req))
    proxy.take()
    out = proxy.advance(200)
    assert [status(s) for s in responses(out) if status(s) != 487] == []
    assert 487 in [status(s) for s in responses(out)]
    assert proxy.idle()


def test_2xx_after_timer_c_still_goes_upstream():
    """16.7 step 5: a 2xx "MUST" be forwarded, even after Timer C answered 408 upstream (the UAS
    answered before our CANCEL reached it)."""
    proxy = FakeProxy(RELAY, modparams(fr_inv_timer=5))
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    out = proxy.advance(5.01)
    assert sorted(methods(out)) == ["408", "CANCEL"]
    proxy.receive(reply_to(branch, 200), src=UAS)
    assert methods(proxy.take()) == ["200"]


# --- TimerLists: the worker's timers, one list per interval -----------------------------------------
from pyproxy.modules.tm.timers import TimerLists  # noqa: E402

from .harness import Clock  # noqa: E402


class Lists:
    """TimerLists on the fake clock, recording (time, txn, timer) of each expiry."""

    def __init__(self):
        self.clock = Clock()
        self.fired = []
        self.on_expiry = None
        self.lists = TimerLists(self.clock.call_later, lambda: self.clock.now, self.expired)

    def expired(self, txn, timer):
        self.fired.append((round(self.clock.now, 4), txn, timer))
        if self.on_expiry:
            self.on_expiry(txn, timer)


def test_timer_lists_fire_in_time_order_across_intervals():
    t = Lists()
    t.lists.start("x", Timer.B, 30.0)
    t.lists.start("y", Timer.A, 0.5)
    t.lists.start("z", Timer.D, 5.0)
    t.clock.advance(1)
    t.lists.start("w", Timer.A, 0.5)
    t.clock.advance(100)
    assert t.fired == [(0.5, "y", Timer.A), (1.5, "w", Timer.A), (5.0, "z", Timer.D), (30.0, "x", Timer.B)]
    assert len(t.lists) == 0 and t.clock.pending() == 0


def test_timer_lists_same_interval_in_start_order():
    t = Lists()
    for i in range(5):
        t.lists.start(i, Timer.J, 5.0)
        t.clock.advance(0.1)
    t.clock.advance(10)
    assert [(w, n) for w, n, _ in t.fired] == [(5.0, 0), (5.1, 1), (5.2, 2), (5.3, 3), (5.4, 4)]


def test_timer_lists_hold_one_event_loop_timer():
    """The event loop holds one timer: the next expiry of all of them."""
    t = Lists()
    for i in range(200):
        t.lists.start(i, Timer.K, 5.0 + (i % 7))
        t.lists.start(i, Timer.E, 0.5)
        assert t.clock.pending() <= 1
    assert len(t.lists) == 400
    t.clock.advance(20)
    assert len(t.fired) == 400 and t.clock.pending() == 0


def test_timer_lists_stop_and_restart():
    t = Lists()
    t.lists.start("x", Timer.F, 4.0)
    t.lists.start("y", Timer.F, 4.0)
    t.lists.stop("x", Timer.F, 4.0)
    t.lists.stop("nobody", Timer.F, 4.0)        # stopping what is not running is harmless
    t.lists.stop("y", Timer.F, 9.0)             # another interval: not that one
    assert len(t.lists) == 1
    t.clock.advance(2)
    t.lists.stop("y", Timer.F, 4.0)
    t.lists.start("y", Timer.F, 4.0)            # restarted: fires 4 s from now, once
    t.clock.advance(10)
    assert t.fired == [(6.0, "y", Timer.F)]
    assert t.clock.pending() == 0


def test_timer_lists_started_from_an_expiry():
    """A retransmission timer restarts itself from its expiry (Timer A's backoff), with a new
    interval: each fires at its time; a zero interval fires in the same advance."""
    t = Lists()
    intervals = iter([1.0, 2.0, 4.0, 0.0])

    def again(txn, timer):
        nxt = next(intervals, None)
        if nxt is not None:
            t.lists.start(txn, timer, nxt)
    t.on_expiry = again
    t.lists.start("x", Timer.A, 0.5)
    t.clock.advance(100)
    assert [w for w, _, _ in t.fired] == [0.5, 1.5, 3.5, 7.5, 7.5]


def test_timer_lists_slack_groups_close_expiries():
    """Timers due within SLACK of each other fire in one wake-up; others do not wait for one."""
    t = Lists()
    t.lists.start("a", Timer.D, 1.0)
    t.lists.start("b", Timer.D, 1.0 + TimerLists.SLACK / 2)     # another list (interval)
    t.lists.start("c", Timer.D, 1.5)
    t.clock.advance(2)
    assert [(w, n) for w, n, _ in t.fired] == [(1.0, "a"), (1.0, "b"), (1.5, "c")]


def test_many_finished_transactions_hold_one_event_loop_timer():
    """A worker with many transactions in their wait state holds one event-loop timer (the
    lists hold the rest), and all are let go in the end."""
    proxy = FakeProxy(RELAY)
    for _ in range(50):
        proxy.receive(invite(method="OPTIONS"))
        branch, = proxy.take()
        proxy.receive(reply_to(branch, 200), src=UAS)
        proxy.take()
    assert len(proxy.layer.servers) == 50 and len(proxy.layer.clients) == 50
    assert proxy.clock.pending() == 1
    proxy.advance(6)
    assert proxy.idle()


def test_2xx_after_timer_c_and_the_end_of_the_server_transaction():
    """16.7 step 5 again: Timer C answered 408 upstream, the UAC ACKed it and the server
    transaction ended (Timer I); the branch waits for the final response its CANCEL brings
    (Timer B) -- and the UAS picks up instead. The 200 must still reach the UAC."""
    proxy = FakeProxy(RELAY, modparams(fr_inv_timer=5))
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    timeout, = responses(proxy.advance(5.01))
    proxy.receive(ack_of(req, timeout.msg))
    proxy.advance(6)
    assert not proxy.layer.servers and proxy.layer.clients
    proxy.receive(reply_to(branch, 200), src=UAS)
    out = proxy.take()
    assert methods(out) == ["200"] and (out[0].dest.host, out[0].dest.port) == ("10.0.0.1", 5062)
