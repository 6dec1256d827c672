"""The transaction state machines of RFC 3261 section 17, with RFC 6026's Accepted state, as tables.

A machine is a table ``(state, event) -> (next state, actions)``: it does no I/O and keeps no
time. The layer (layer.py) feeds it events -- a message, a timer firing, a reply the proxy core
wants sent -- and carries out the actions: send, resend, start or stop a timer, pass a response
up to the proxy core, forget the transaction. An event a state does not list is ignored, which is
what RFC 3261 asks of late or stray messages ("absorbed").

Timers are named by their RFC letter. Which values they take (OpenSER's fr_timer and friends)
and that the retransmission timers run over UDP only is the layer's business (timers.py).
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    __hash__ = object.__hash__      # members are singletons: the table lookups hash by identity

    INVITE_SERVER = "INVITE server"
    SERVER = "non-INVITE server"
    INVITE_CLIENT = "INVITE client"
    CLIENT = "non-INVITE client"


class State(enum.Enum):
    __hash__ = object.__hash__

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"         # RFC 6026: a 2xx went through; absorb what follows it
    TERMINATED = "terminated"


class Event(enum.Enum):
    __hash__ = object.__hash__

    REQUEST = "request"           # server: the request again (a retransmission)
    ACK = "ACK"                   # INVITE server: the ACK of a non-2xx final response
    SEND_1XX = "send 1xx"         # server: the proxy core sends a reply upstream
    SEND_2XX = "send 2xx"
    SEND_FINAL = "send 3xx-6xx"
    RECV_1XX = "1xx"              # client: a response from downstream
    RECV_2XX = "2xx"
    RECV_FINAL = "3xx-6xx"
    FAILED = "transport error"    # client: the request could not be sent (RFC 3261 17.1.4)
    TIMER = "timer"               # with the Timer that fired


class Timer(enum.Enum):
    __hash__ = object.__hash__

    A = "A"     # INVITE client: retransmit (UDP)
    B = "B"     # INVITE client: no response at all (fr_timer)
    C = "C"     # INVITE client, after a provisional: no final response (fr_inv_timer, RFC 3261 16.8)
    D = "D"     # INVITE client: absorb retransmitted final responses
    E = "E"     # non-INVITE client: retransmit (UDP)
    F = "F"     # non-INVITE client: no final response (fr_timer)
    G = "G"     # INVITE server: retransmit the final response (UDP)
    H = "H"     # INVITE server: the ACK never came
    I = "I"     # INVITE server: absorb retransmitted ACKs  # noqa: E741
    J = "J"     # non-INVITE server: absorb retransmitted requests
    K = "K"     # non-INVITE client: absorb retransmitted responses
    L = "L"     # INVITE server after a 2xx (RFC 6026)
    M = "M"     # INVITE client after a 2xx (RFC 6026)


class Action(enum.Enum):
    __hash__ = object.__hash__

    SEND = "send"                 # server: send the reply given with the event, keep it as the last
    SEND_ONLY = "send only"       # server: send it, keep nothing (a 2xx: the UAC retransmits those)
    RESEND_REPLY = "resend reply"
    RESEND_REQUEST = "resend request"
    SEND_ACK = "send ACK"         # INVITE client: ACK a non-2xx final response (hop by hop)
    PASS_UP = "pass up"           # client: the response goes to the proxy core
    CANCEL = "cancel"             # INVITE client: Timer C: CANCEL it (RFC 3261 16.8)
    TIMEOUT = "timeout"           # client: the proxy core hears a local 408
    DELETE = "delete"


class Start:
    """Action: start (or restart) a timer; ``backoff``: at twice its last interval."""
    __slots__ = ("timer", "backoff")

    def __init__(self, timer: Timer, backoff: bool = False):
        self.timer, self.backoff = timer, backoff

    def __repr__(self) -> str:
        return f"Start({self.timer.value}{', backoff' if self.backoff else ''})"


class Stop:
    __slots__ = ("timer",)

    def __init__(self, timer: Timer):
        self.timer = timer

    def __repr__(self) -> str:
        return f"Stop({self.timer.value})"


S, E, T, A = State, Event, Timer, Action

# (state, event or Timer) -> (next state, actions)
INVITE_SERVER = {
    (S.PROCEEDING, E.REQUEST): (S.PROCEEDING, (A.RESEND_REPLY,)),
    (S.PROCEEDING, E.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.PROCEEDING, E.SEND_2XX): (S.ACCEPTED, (A.SEND_ONLY, Start(T.L))),
    (S.PROCEEDING, E.SEND_FINAL): (S.COMPLETED, (A.SEND, Start(T.G), Start(T.H))),
    (S.COMPLETED, E.REQUEST): (S.COMPLETED, (A.RESEND_REPLY,)),
    (S.COMPLETED, T.G): (S.COMPLETED, (A.RESEND_REPLY, Start(T.G, backoff=True))),
    (S.COMPLETED, E.ACK): (S.CONFIRMED, (Stop(T.G), Stop(T.H), Start(T.I))),
    (S.COMPLETED, T.H): (S.TERMINATED, (Stop(T.G), A.DELETE)),
    # a 2xx of another branch after our final response: RFC 3261 16.7 step 5 forwards it anyway
    (S.COMPLETED, E.SEND_2XX): (S.COMPLETED, (A.SEND_ONLY,)),
    (S.CONFIRMED, E.SEND_2XX): (S.CONFIRMED, (A.SEND_ONLY,)),
    (S.CONFIRMED, T.I): (S.TERMINATED, (A.DELETE,)),
    (S.ACCEPTED, E.SEND_2XX): (S.ACCEPTED, (A.SEND_ONLY,)),
    (S.ACCEPTED, T.L): (S.TERMINATED, (A.DELETE,)),
}

SERVER = {
    (S.TRYING, E.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.TRYING, E.SEND_2XX): (S.COMPLETED, (A.SEND, Start(T.J))),
    (S.TRYING, E.SEND_FINAL): (S.COMPLETED, (A.SEND, Start(T.J))),
    (S.PROCEEDING, E.REQUEST): (S.PROCEEDING, (A.RESEND_REPLY,)),
    (S.PROCEEDING, E.SEND_1XX): (S.PROCEEDING, (A.SEND,)),
    (S.PROCEEDING, E.SEND_2XX): (S.COMPLETED, (A.SEND, Start(T.J))),
    (S.PROCEEDING, E.SEND_FINAL): (S.COMPLETED, (A.SEND, Start(T.J))),
    (S.COMPLETED, E.REQUEST): (S.COMPLETED, (A.RESEND_REPLY,)),
    (S.COMPLETED, T.J): (S.TERMINATED, (A.DELETE,)),
}

INVITE_CLIENT = {
    (S.CALLING, T.A): (S.CALLING, (A.RESEND_REQUEST, Start(T.A, backoff=True))),
    (S.CALLING, T.B): (S.TERMINATED, (Stop(T.A), A.TIMEOUT, A.DELETE)),
    (S.CALLING, E.RECV_1XX): (S.PROCEEDING, (Stop(T.A), Stop(T.B), Start(T.C), A.PASS_UP)),
    (S.CALLING, E.RECV_2XX): (S.ACCEPTED, (Stop(T.A), Stop(T.B), Start(T.M), A.PASS_UP)),
    (S.CALLING, E.RECV_FINAL): (S.COMPLETED, (Stop(T.A), Stop(T.B), A.SEND_ACK, Start(T.D), A.PASS_UP)),
    (S.CALLING, E.FAILED): (S.TERMINATED, (Stop(T.A), Stop(T.B), A.PASS_UP, A.DELETE)),
    # RFC 3261 16.8: each provisional response restarts Timer C
    (S.PROCEEDING, E.RECV_1XX): (S.PROCEEDING, (Start(T.C), A.PASS_UP)),
    (S.PROCEEDING, E.RECV_2XX): (S.ACCEPTED, (Stop(T.C), Stop(T.B), Start(T.M), A.PASS_UP)),
    (S.PROCEEDING, E.RECV_FINAL): (S.COMPLETED, (Stop(T.C), Stop(T.B), A.SEND_ACK, Start(T.D), A.PASS_UP)),
    (S.PROCEEDING, E.FAILED): (S.TERMINATED, (Stop(T.C), Stop(T.B), A.PASS_UP, A.DELETE)),
    # 16.8: Timer C fired after a provisional: CANCEL the branch and tell the proxy core 408;
    # Timer B then bounds the wait for the final response the CANCEL brings
    (S.PROCEEDING, T.C): (S.PROCEEDING, (A.CANCEL, A.TIMEOUT, Start(T.B))),
    (S.PROCEEDING, T.B): (S.TERMINATED, (A.TIMEOUT, A.DELETE)),
    (S.COMPLETED, E.RECV_FINAL): (S.COMPLETED, (A.SEND_ACK,)),
    (S.COMPLETED, T.D): (S.TERMINATED, (A.DELETE,)),
    (S.ACCEPTED, E.RECV_2XX): (S.ACCEPTED, (A.PASS_UP,)),
    (S.ACCEPTED, T.M): (S.TERMINATED, (A.DELETE,)),
}

CLIENT = {
    (S.TRYING, T.E): (S.TRYING, (A.RESEND_REQUEST, Start(T.E, backoff=True))),
    (S.TRYING, T.F): (S.TERMINATED, (Stop(T.E), A.TIMEOUT, A.DELETE)),
    (S.TRYING, E.RECV_1XX): (S.PROCEEDING, (A.PASS_UP,)),
    (S.TRYING, E.RECV_2XX): (S.COMPLETED, (Stop(T.E), Stop(T.F), Start(T.K), A.PASS_UP)),
    (S.TRYING, E.RECV_FINAL): (S.COMPLETED, (Stop(T.E), Stop(T.F), Start(T.K), A.PASS_UP)),
    (S.TRYING, E.FAILED): (S.TERMINATED, (Stop(T.E), Stop(T.F), A.PASS_UP, A.DELETE)),
    # 17.1.2.2: in Proceeding, Timer E fires at T2
    (S.PROCEEDING, T.E): (S.PROCEEDING, (A.RESEND_REQUEST, Start(T.E, backoff=True))),
    (S.PROCEEDING, T.F): (S.TERMINATED, (Stop(T.E), A.TIMEOUT, A.DELETE)),
    (S.PROCEEDING, E.RECV_1XX): (S.PROCEEDING, (A.PASS_UP,)),
    (S.PROCEEDING, E.RECV_2XX): (S.COMPLETED, (Stop(T.E), Stop(T.F), Start(T.K), A.PASS_UP)),
    (S.PROCEEDING, E.RECV_FINAL): (S.COMPLETED, (Stop(T.E), Stop(T.F), Start(T.K), A.PASS_UP)),
    (S.PROCEEDING, E.FAILED): (S.TERMINATED, (Stop(T.E), Stop(T.F), A.PASS_UP, A.DELETE)),
    (S.COMPLETED, T.K): (S.TERMINATED, (A.DELETE,)),
}

TABLES = {Kind.INVITE_SERVER: INVITE_SERVER, Kind.SERVER: SERVER,
          Kind.INVITE_CLIENT: INVITE_CLIENT, Kind.CLIENT: CLIENT}
INITIAL = {Kind.INVITE_SERVER: S.PROCEEDING, Kind.SERVER: S.TRYING,
           Kind.INVITE_CLIENT: S.CALLING, Kind.CLIENT: S.TRYING}
# the timers each kind starts when it is created
FIRST_TIMERS = {Kind.INVITE_SERVER: (), Kind.SERVER: (),
                Kind.INVITE_CLIENT: (T.A, T.B), Kind.CLIENT: (T.E, T.F)}


def step(kind: Kind, state: State, event) -> tuple[State, tuple]:
    """The next state and the actions for ``event`` (an Event or a Timer); an event the state
    does not take leaves it as it is, with nothing to do."""
    return TABLES[kind].get((state, event), (state, ()))


def reply_event(status: int, sending: bool) -> Event:
    """The event of a response by its status: one the server sends, or the client receives."""
    if status < 200:
        return E.SEND_1XX if sending else E.RECV_1XX
    if status < 300:
        return E.SEND_2XX if sending else E.RECV_2XX
    return E.SEND_FINAL if sending else E.RECV_FINAL
