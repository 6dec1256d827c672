"""The transaction state machines as tables (pyproxy.modules.tm.machines), checked against RFC 3261
section 17 (and RFC 6026's Accepted state, RFC 3261 16.8's Timer C) transition by transition.

Each kind's expected table below is written from the RFC, not copied from the code. Every
(state, event) pair of every kind is stepped: the listed ones must give the listed next state and
actions, every other one -- a stray or late event -- must leave the state as it is with nothing to
do (RFC 3261 17: such messages are "absorbed").
"""

from __future__ import annotations

import pytest

from pyproxy.modules.tm.machines import (
    FIRST_TIMERS,
    INITIAL,
    TABLES,
    Action,
    Event,
    Kind,
    Start,
    State,
    Stop,
    Timer,
    reply_event,
    step,
)

S, E, T, A = State, Event, Timer, Action
IS, NS, IC, NC = Kind.INVITE_SERVER, Kind.SERVER, Kind.INVITE_CLIENT, Kind.CLIENT


def start(timer, backoff=False):
    return ("start", timer.value, backoff)


def stop(timer):
    return ("stop", timer.value)


def norm(action):
    if isinstance(action, Start):
        return start(action.timer, action.backoff)
    if isinstance(action, Stop):
        return stop(action.timer)
    assert isinstance(action, Action), action
    return ("do", action.value)


def do(action):
    return ("do", action.value)


# (kind, state, event) -> (next state, actions); actions as a multiset (norm() form), and the
# RFC text each row implements in the id.
EXPECTED = {
    # --- INVITE server: RFC 3261 17.2.1, RFC 6026 7.1 ------------------------------------------
    # "If a request retransmission is received while in the Proceeding state, the most recent
    # provisional response that was received from the TU MUST be passed to the transport layer"
    (IS, S.PROCEEDING, E.REQUEST): (S.PROCEEDING, [do(A.RESEND_REPLY)]),
    # "The TU passes any number of provisional responses to the server transaction"
    (IS, S.PROCEEDING, E.SEND_1XX): (S.PROCEEDING, [do(A.SEND)]),
    # RFC 6026 7.1: a 2xx moves to Accepted and starts Timer L; the 2xx is not retransmitted
    # by the transaction (so it is not kept as the last reply)
    (IS, S.PROCEEDING, E.SEND_2XX): (S.ACCEPTED, [do(A.SEND_ONLY), start(T.L)]),
    # "If ... the TU passes a response with status code from 300 to 699 ..., the response MUST be
    # passed to the transport layer ..., and the state machine MUST enter the Completed state.
    # For unreliable transports, timer G is set ... timer H MUST be set ... for all transports"
    (IS, S.PROCEEDING, E.SEND_FINAL): (S.COMPLETED, [do(A.SEND), start(T.G), start(T.H)]),
    # "Furthermore, while in the Completed state, if a request retransmission is received, the
    # server SHOULD pass the response to the transport for retransmission"
    (IS, S.COMPLETED, E.REQUEST): (S.COMPLETED, [do(A.RESEND_REPLY)]),
    # "If timer G fires, the response is passed to the transport layer once more for
    # retransmission, and timer G is set to fire in MIN(2*T1, T2) seconds"
    (IS, S.COMPLETED, T.G): (S.COMPLETED, [do(A.RESEND_REPLY), start(T.G, True)]),
    # "If an ACK is received while the server transaction is in the Completed state, the server
    # transaction MUST transition to the Confirmed state ... timer I is set"
    (IS, S.COMPLETED, E.ACK): (S.CONFIRMED, [stop(T.G), stop(T.H), start(T.I)]),
    # "If timer H fires while in the Completed state ... the server transaction MUST transition
    # to the Terminated state"
    (IS, S.COMPLETED, T.H): (S.TERMINATED, [stop(T.G), do(A.DELETE)]),
    # RFC 3261 16.7 step 5: a 2xx of another branch still goes upstream after our final response
    (IS, S.COMPLETED, E.SEND_2XX): (S.COMPLETED, [do(A.SEND_ONLY)]),
    (IS, S.CONFIRMED, E.SEND_2XX): (S.CONFIRMED, [do(A.SEND_ONLY)]),
    # "Once timer I fires, the server MUST transition to the Terminated state"
    (IS, S.CONFIRMED, T.I): (S.TERMINATED, [do(A.DELETE)]),
    # RFC 6026 7.1: "Any retransmission of the 2xx response passed from the TU to the transaction
    # while in the Accepted state MUST be passed to the transport layer"
    (IS, S.ACCEPTED, E.SEND_2XX): (S.ACCEPTED, [do(A.SEND_ONLY)]),
    # RFC 6026 7.1: "If Timer L fires while the INVITE server transaction is in the Accepted
    # state, the transaction MUST transition to the Terminated state"
    (IS, S.ACCEPTED, T.L): (S.TERMINATED, [do(A.DELETE)]),

    # --- non-INVITE server: RFC 3261 17.2.2 ----------------------------------------------------
    # "While in the Trying state, if the TU passes a provisional response ..., the server
    # transaction MUST enter the Proceeding state"
    (NS, S.TRYING, E.SEND_1XX): (S.PROCEEDING, [do(A.SEND)]),
    # "If the TU passes a final response (status codes 200-699) to the server while in the
    # Proceeding state [or Trying], the transaction MUST enter the Completed state ... Timer J"
    (NS, S.TRYING, E.SEND_2XX): (S.COMPLETED, [do(A.SEND), start(T.J)]),
    (NS, S.TRYING, E.SEND_FINAL): (S.COMPLETED, [do(A.SEND), start(T.J)]),
    # "If a retransmission of the request is received while in the Proceeding state, the most
    # recently sent provisional response MUST be passed to the transport layer"
    (NS, S.PROCEEDING, E.REQUEST): (S.PROCEEDING, [do(A.RESEND_REPLY)]),
    # "Any further provisional responses that are received from the TU while in the Proceeding
    # state MUST be passed to the transport layer"
    (NS, S.PROCEEDING, E.SEND_1XX): (S.PROCEEDING, [do(A.SEND)]),
    (NS, S.PROCEEDING, E.SEND_2XX): (S.COMPLETED, [do(A.SEND), start(T.J)]),
    (NS, S.PROCEEDING, E.SEND_FINAL): (S.COMPLETED, [do(A.SEND), start(T.J)]),
    # "While in the Completed state, the server transaction MUST pass the final response to the
    # transport layer for retransmission whenever a retransmission of the request is received"
    (NS, S.COMPLETED, E.REQUEST): (S.COMPLETED, [do(A.RESEND_REPLY)]),
    # "The server transaction remains in this state until Timer J fires, at which point it MUST
    # transition to the Terminated state"
    (NS, S.COMPLETED, T.J): (S.TERMINATED, [do(A.DELETE)]),

    # --- INVITE client: RFC 3261 17.1.1.2, RFC 6026 7.2, and the proxy's Timer C (16.8) --------
    # "When timer A fires, the client transaction MUST retransmit the request ... and reset the
    # timer with a value of 2*T1"
    (IC, S.CALLING, T.A): (S.CALLING, [do(A.RESEND_REQUEST), start(T.A, True)]),
    # "If the client transaction is still in the Calling state when timer B fires, the client
    # transaction SHOULD inform the TU that a timeout has occurred" (the proxy core's 408, 16.8)
    (IC, S.CALLING, T.B): (S.TERMINATED, [stop(T.A), do(A.TIMEOUT), do(A.DELETE)]),
    # "If the client transaction receives a provisional response while in the Calling state, it
    # transitions to the Proceeding state ... the client transaction SHOULD NOT retransmit the
    # request any longer"; 16.8: a provisional response starts Timer C
    (IC, S.CALLING, E.RECV_1XX): (S.PROCEEDING, [stop(T.A), stop(T.B), start(T.C), do(A.PASS_UP)]),
    # RFC 6026 7.2: a 2xx moves to Accepted and starts Timer M; the 2xx goes up
    (IC, S.CALLING, E.RECV_2XX): (S.ACCEPTED, [stop(T.A), stop(T.B), start(T.M), do(A.PASS_UP)]),
    # "When in either the Calling or Proceeding states, reception of a response with status code
    # from 300-699 MUST cause the client transaction to transition to Completed. The client
    # transaction MUST pass the received response up to the TU, and the client transaction MUST
    # generate an ACK request ... Timer D"
    (IC, S.CALLING, E.RECV_FINAL): (S.COMPLETED, [stop(T.A), stop(T.B), do(A.SEND_ACK), start(T.D),
                                                 do(A.PASS_UP)]),
    # 17.1.4: a transport error: the TU is told (16.9: as a 503), the transaction ends
    (IC, S.CALLING, E.FAILED): (S.TERMINATED, [stop(T.A), stop(T.B), do(A.PASS_UP), do(A.DELETE)]),
    # 16.8: "if the proxy receives a provisional response, it MUST reset timer C"
    (IC, S.PROCEEDING, E.RECV_1XX): (S.PROCEEDING, [start(T.C), do(A.PASS_UP)]),
    (IC, S.PROCEEDING, E.RECV_2XX): (S.ACCEPTED, [stop(T.C), stop(T.B), start(T.M), do(A.PASS_UP)]),
    (IC, S.PROCEEDING, E.RECV_FINAL): (S.COMPLETED, [stop(T.C), stop(T.B), do(A.SEND_ACK), start(T.D),
                                                    do(A.PASS_UP)]),
    (IC, S.PROCEEDING, E.FAILED): (S.TERMINATED, [stop(T.C), stop(T.B), do(A.PASS_UP), do(A.DELETE)]),
    # 16.8: "If the client transaction has received a provisional response, the proxy MUST
    # generate a CANCEL request matching that transaction"; the proxy core hears a timeout
    # (OpenSER's 408), and Timer B bounds the wait for the final response the CANCEL brings
    (IC, S.PROCEEDING, T.C): (S.PROCEEDING, [do(A.CANCEL), do(A.TIMEOUT), start(T.B)]),
    (IC, S.PROCEEDING, T.B): (S.TERMINATED, [do(A.TIMEOUT), do(A.DELETE)]),
    # "Any retransmissions of the final response that are received while in the Completed state
    # MUST cause the ACK to be re-passed to the transport layer for retransmission, but the
    # newly received response MUST NOT be passed up to the TU"
    (IC, S.COMPLETED, E.RECV_FINAL): (S.COMPLETED, [do(A.SEND_ACK)]),
    # "If timer D fires while the client transaction is in the Completed state, the client
    # transaction MUST move to the Terminated state"
    (IC, S.COMPLETED, T.D): (S.TERMINATED, [do(A.DELETE)]),
    # RFC 6026 7.2: "Any 2xx responses that match this client transaction and that are received
    # while in the Accepted state MUST be passed up to the TU"
    (IC, S.ACCEPTED, E.RECV_2XX): (S.ACCEPTED, [do(A.PASS_UP)]),
    # RFC 6026 7.2: "If Timer M fires while the INVITE client transaction is in the Accepted
    # state, the transaction MUST transition to the Terminated state"
    (IC, S.ACCEPTED, T.M): (S.TERMINATED, [do(A.DELETE)]),

    # --- non-INVITE client: RFC 3261 17.1.2.2 --------------------------------------------------
    # "If timer E fires while still in this state, the timer is reset, but this time with a value
    # of MIN(2*T1, T2)"
    (NC, S.TRYING, T.E): (S.TRYING, [do(A.RESEND_REQUEST), start(T.E, True)]),
    # "If Timer F fires while the client transaction is still in the Trying state, the client
    # transaction SHOULD inform the TU about the timeout, and then it SHOULD enter the
    # Terminated state"
    (NC, S.TRYING, T.F): (S.TERMINATED, [stop(T.E), do(A.TIMEOUT), do(A.DELETE)]),
    # "If a provisional response is received while in the Trying state, the response MUST be
    # passed to the TU, and then the client transaction SHOULD move to the Proceeding state"
    (NC, S.TRYING, E.RECV_1XX): (S.PROCEEDING, [do(A.PASS_UP)]),
    # "If a final response (status codes 200-699) is received while in the Trying state, the
    # response MUST be passed to the TU, and the client transaction MUST transition to the
    # Completed state ... Timer K"
    (NC, S.TRYING, E.RECV_2XX): (S.COMPLETED, [stop(T.E), stop(T.F), start(T.K), do(A.PASS_UP)]),
    (NC, S.TRYING, E.RECV_FINAL): (S.COMPLETED, [stop(T.E), stop(T.F), start(T.K), do(A.PASS_UP)]),
    (NC, S.TRYING, E.FAILED): (S.TERMINATED, [stop(T.E), stop(T.F), do(A.PASS_UP), do(A.DELETE)]),
    # "If Timer E fires while in the Proceeding state, the request MUST be passed to the transport
    # layer for retransmission, and Timer E MUST be reset with a value of T2 seconds" (the layer
    # takes T2 for a backoff in Proceeding: test_timers.py)
    (NC, S.PROCEEDING, T.E): (S.PROCEEDING, [do(A.RESEND_REQUEST), start(T.E, True)]),
    # "If timer F fires while in the Proceeding state, the TU MUST be informed of a timeout, and
    # the client transaction MUST transition to the terminated state"
    (NC, S.PROCEEDING, T.F): (S.TERMINATED, [stop(T.E), do(A.TIMEOUT), do(A.DELETE)]),
    (NC, S.PROCEEDING, E.RECV_1XX): (S.PROCEEDING, [do(A.PASS_UP)]),
    (NC, S.PROCEEDING, E.RECV_2XX): (S.COMPLETED, [stop(T.E), stop(T.F), start(T.K), do(A.PASS_UP)]),
    (NC, S.PROCEEDING, E.RECV_FINAL): (S.COMPLETED, [stop(T.E), stop(T.F), start(T.K), do(A.PASS_UP)]),
    (NC, S.PROCEEDING, E.FAILED): (S.TERMINATED, [stop(T.E), stop(T.F), do(A.PASS_UP), do(A.DELETE)]),
    # "If Timer K fires while in this state, the client transaction MUST transition to the
    # Terminated state" (response retransmissions in Completed are absorbed: not listed)
    (NC, S.COMPLETED, T.K): (S.TERMINATED, [do(A.DELETE)]),
}

EVENTS = [e for e in Event if e is not Event.TIMER] + list(Timer) + [Event.TIMER]
ALL = [(kind, state, event) for kind in Kind for state in State for event in EVENTS]


def _id(key):
    kind, state, event = key
    return f"{kind.name}-{state.name}-{getattr(event, 'name', event)}"


@pytest.mark.parametrize("key", list(EXPECTED), ids=_id)
def test_every_rfc_transition(key):
    """Each transition RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2 (RFC 6026 7.1/7.2, RFC 3261
    16.8 for Timer C) gives: the next state and the actions, in any order."""
    kind, state, event = key
    next_state, actions = step(kind, state, event)
    want_state, want_actions = EXPECTED[key]
    assert next_state is want_state
    assert sorted(map(norm, actions)) == sorted(want_actions)


STRAY = [key for key in ALL if key not in EXPECTED]


@pytest.mark.parametrize("key", STRAY, ids=_id)
def test_stray_events_are_ignored(key):
    """RFC 3261 17: an event a state does not list (a late response, a retransmitted ACK in
    Confirmed, a request retransmission in Trying: "any further request retransmissions received
    while in the Trying state MUST be discarded", a second final response from the TU in
    Completed: "MUST be discarded", anything in Terminated) changes nothing and does nothing."""
    kind, state, event = key
    assert step(kind, state, event) == (state, ())


@pytest.mark.parametrize("kind,state,event", [
    (IS, S.CONFIRMED, E.ACK),             # 17.2.1: "any additional ACK messages ... absorbed"
    (IS, S.CONFIRMED, E.REQUEST),
    (IS, S.CONFIRMED, T.G),               # 17.2.1: "Timer G is ignored in this state"
    (IS, S.ACCEPTED, E.REQUEST),          # RFC 6026 7.1: INVITE retransmissions absorbed
    (IS, S.COMPLETED, E.SEND_FINAL),
    (IS, S.COMPLETED, E.SEND_1XX),
    (IS, S.ACCEPTED, E.SEND_FINAL),
    (NS, S.TRYING, E.REQUEST),            # 17.2.2: "MUST be discarded"
    (NS, S.COMPLETED, E.SEND_FINAL),      # 17.2.2: "MUST be discarded"
    (NS, S.COMPLETED, E.SEND_1XX),
    (IC, S.COMPLETED, E.RECV_1XX),
    (IC, S.COMPLETED, T.A),
    (IC, S.PROCEEDING, T.A),              # no retransmission after a provisional response
    (IC, S.CALLING, T.C),
    (IC, S.ACCEPTED, E.RECV_FINAL),
    (IC, S.ACCEPTED, E.RECV_1XX),
    (NC, S.COMPLETED, E.RECV_FINAL),      # 17.1.2.2: response retransmissions absorbed
    (NC, S.COMPLETED, E.RECV_2XX),
    (NC, S.COMPLETED, T.E),
    (NC, S.COMPLETED, T.F),
], ids=lambda v: getattr(v, "name", str(v)))
def test_named_absorptions(kind, state, event):
    """The absorptions the RFC names, spelled out (they are also in the exhaustive STRAY set)."""
    assert (kind, state, event) not in EXPECTED
    assert step(kind, state, event) == (state, ())


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_terminated_takes_nothing(kind):
    """RFC 3261 17: a Terminated transaction is gone: no event moves it or acts."""
    for event in EVENTS:
        assert step(kind, S.TERMINATED, event) == (S.TERMINATED, ())


def test_the_tables_hold_exactly_the_rfc_transitions():
    """No transition the RFC does not list (the tables and EXPECTED have the same keys)."""
    have = {(kind, state, event) for kind, table in TABLES.items() for (state, event) in table}
    assert have == set(EXPECTED)


@pytest.mark.parametrize("key", list(EXPECTED), ids=_id)
def test_delete_is_last_and_only_when_terminated(key):
    """A transaction is forgotten (DELETE) exactly when it moves to Terminated, and nothing is
    done to it after that."""
    kind, state, event = key
    next_state, actions = step(kind, state, event)
    deletes = [a for a in actions if a is A.DELETE]
    assert (next_state is S.TERMINATED) == bool(deletes)
    if deletes:
        assert actions[-1] is A.DELETE and len(deletes) == 1


@pytest.mark.parametrize("key", list(EXPECTED), ids=_id)
def test_backoff_only_restarts_the_timer_that_fired(key):
    """Only a retransmission timer's own firing doubles it (17.1.1.2, 17.1.2.2, 17.2.1); every
    other Start is a first interval."""
    kind, state, event = key
    for action in step(kind, state, event)[1]:
        if isinstance(action, Start) and action.backoff:
            assert action.timer is event and event in (T.A, T.E, T.G)


def test_initial_states_and_first_timers():
    """17.1.1.2: an INVITE client starts in Calling with Timers A and B; 17.1.2.2: a non-INVITE
    client in Trying with E and F; 17.2.1: an INVITE server in Proceeding; 17.2.2: a non-INVITE
    server in Trying."""
    assert INITIAL == {IS: S.PROCEEDING, NS: S.TRYING, IC: S.CALLING, NC: S.TRYING}
    assert FIRST_TIMERS == {IS: (), NS: (), IC: (T.A, T.B), NC: (T.E, T.F)}


@pytest.mark.parametrize("status,sending,event", [
    (100, True, E.SEND_1XX), (180, True, E.SEND_1XX), (199, True, E.SEND_1XX),
    (200, True, E.SEND_2XX), (202, True, E.SEND_2XX), (299, True, E.SEND_2XX),
    (300, True, E.SEND_FINAL), (487, True, E.SEND_FINAL), (699, True, E.SEND_FINAL),
    (100, False, E.RECV_1XX), (183, False, E.RECV_1XX), (200, False, E.RECV_2XX),
    (299, False, E.RECV_2XX), (302, False, E.RECV_FINAL), (503, False, E.RECV_FINAL),
    (603, False, E.RECV_FINAL),
])
def test_reply_event(status, sending, event):
    """17.1.1.2/17.2.1: 1xx, 2xx and 300-699 are three different events."""
    assert reply_event(status, sending) is event


def test_a_full_invite_server_walk():
    """17.2.1 figure 7 walked through: Proceeding -1xx-> Proceeding -486-> Completed -G-> resend
    -ACK-> Confirmed -I-> Terminated."""
    state = INITIAL[IS]
    walk = [(E.SEND_1XX, S.PROCEEDING), (E.REQUEST, S.PROCEEDING), (E.SEND_FINAL, S.COMPLETED),
            (T.G, S.COMPLETED), (E.REQUEST, S.COMPLETED), (E.ACK, S.CONFIRMED), (E.ACK, S.CONFIRMED),
            (T.I, S.TERMINATED), (E.ACK, S.TERMINATED)]
    for event, want in walk:
        state, _ = step(IS, state, event)
        assert state is want, event


def test_every_pair_is_covered():
    """The exhaustive sweep covers every (kind, state, event) exactly once."""
    assert len(ALL) == len(set(ALL)) == len(EXPECTED) + len(STRAY)
    assert len(ALL) == len(Kind) * len(State) * len(EVENTS)
    assert set(EXPECTED) <= set(ALL)
