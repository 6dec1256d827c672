"""The transaction layer of one worker: the tables of its transactions, the machines driven by
messages and timers, and the actions carried out through the script's ``Runtime`` (send, timers).

Call affinity brings every message of a call to one worker, so the tables are plain dicts of
this process. The worker calls three hooks: ``on_request`` before the script (a retransmission
or the ACK of a non-2xx response is absorbed here), ``after_request`` when the script is done
(a transaction the script left without an answer is answered), ``on_reply`` after the main
onreply_route (a reply of one of our branches goes to its transaction, the others are forwarded
statelessly by the worker).
"""

from __future__ import annotations

import os

from ...script.forward import STATEFUL_BRANCH
from ...kernel.shm import Stat
from ...sip import SIPError
from .keys import client_key, server_key
from .machines import FIRST_TIMERS, Action, Event, Kind, Start, State, Stop, Timer, reply_event, step
from .proxy import ProxyCore, TmState
from .requests import ack_for
from .timers import TimerLists, TimerValues
from .transaction import ClientTransaction, ServerTransaction, Transaction


class NoStats:
    def add(self, stat, n: int = 1) -> None:
        pass

    def set(self, stat, value: int) -> None:
        pass


class TransactionLayer:
    def __init__(self, runtime, script, timers: TimerValues, server_headers: tuple = ()):
        self.runtime = runtime
        self.script = script
        self.timers = timers
        self.stats = getattr(runtime, "stats", None) or NoStats()
        self.servers: dict[tuple, ServerTransaction] = {}
        self.clients: dict[tuple, ClientTransaction] = {}
        self.serial = 0
        self.running = TimerLists(runtime.call_later, runtime.now, self._expired)
        # our branch ids: STATEFUL_BRANCH (which a stateless branch never starts with), this
        # process's tag, then the transaction's serial and the branch's index (branch_id())
        self.prefix = f"{STATEFUL_BRANCH}{os.getpid() & 0xFFFFF:x}{os.urandom(2).hex()}."
        self.core = ProxyCore(self, server_headers)

    # -- the worker's hooks ---------------------------------------------------------------------
    def on_request(self, ctx) -> bool:
        """Absorb a request its transaction already has: a retransmission (the last reply goes
        again) or the ACK of a non-2xx final response. False: the script takes it."""
        msg = ctx.msg
        try:
            key = server_key(msg)
        except SIPError:
            return False
        server = self.servers.get(key)
        if server is None:
            if msg.method != "ACK":     # kept for t_relay()/t_newtran(), which would compute it again
                ctx.tm = TmState(self.core, key=key)
            return False
        if msg.method == "ACK":
            # RFC 3261 17.2.3: the ACK of a 2xx has a branch of its own; an RFC 2543 peer's may
            # still find the INVITE: it is a new request all the same, for the script
            if server.state is not State.COMPLETED and server.state is not State.CONFIRMED:
                return False
            self.fire(server, Event.ACK)
            return True
        self.fire(server, Event.REQUEST)
        return True

    def after_request(self, ctx) -> None:
        """A transaction the script created (t_newtran) and left without a branch or a final
        reply is answered 500, so that nothing waits for it; one it dropped is forgotten."""
        state = ctx.tm
        server = state.server if state is not None else None
        if server is None or server.branches or server.final_status or server.state is State.TERMINATED:
            return
        if ctx.dropped:
            self.delete(server)
            return
        self.core.reply_local(server, 500, "Server Internal Error (the script ended without a reply)")

    def on_reply(self, ctx) -> bool:
        """A reply of one of our branches goes to its transaction; False for any other (it is
        forwarded statelessly by its Vias, as OpenSER did)."""
        reply = ctx.msg
        try:
            key = client_key(reply)
        except SIPError:
            return False
        client = self.clients.get(key) if key is not None else None
        # made by this process when the request could not be sent: a transport error (17.1.4)
        local = ctx.rcv.src_port == 0
        if client is None:
            # one for a branch whose transaction has ended goes nowhere (its caller has its answer)
            return local and key is not None and key[0].startswith(STATEFUL_BRANCH)
        self.stats.add(Stat.TM_REPLIES_IN)
        event = Event.FAILED if local else reply_event(reply.status, sending=False)
        self.fire(client, event, reply=reply, rctx=ctx)
        return True

    # -- transactions ---------------------------------------------------------------------------
    def new_server(self, ctx, key: tuple) -> ServerTransaction:
        self.serial += 1
        kind = Kind.INVITE_SERVER if ctx.msg.method == "INVITE" else Kind.SERVER
        server = ServerTransaction(kind, key, ctx, self.serial)
        self.servers[key] = server
        self.stats.add(Stat.TM_TRANSACTIONS)
        self.stats.set(Stat.TM_INUSE, len(self.servers))
        return server

    def new_client(self, server: ServerTransaction | None, index: int, branch: str, method: str, dest,
                   data: bytes, source) -> ClientTransaction:
        kind = Kind.INVITE_CLIENT if method == "INVITE" else Kind.CLIENT
        client = ClientTransaction(kind, (branch, method), server, index, dest, data, source)
        self.clients[client.key] = client
        self.stats.add(Stat.TM_BRANCHES)
        for timer in FIRST_TIMERS[kind]:
            self.start(client, timer)
        return client

    def branch_id(self, server: ServerTransaction, index: int) -> str:
        return f"{self.prefix}{server.serial:x}.{index}"

    def delete(self, txn: Transaction) -> None:
        txn.state = State.TERMINATED
        if txn.timers:
            for timer, interval in txn.timers.items():
                self.running.stop(txn, timer, interval)
            txn.timers = None
        if isinstance(txn, ServerTransaction):
            if self.servers.get(txn.key) is txn:
                del self.servers[txn.key]
            self.stats.set(Stat.TM_INUSE, len(self.servers))
        elif self.clients.get(txn.key) is txn:
            del self.clients[txn.key]

    # -- driving the machines -------------------------------------------------------------------
    def fire(self, txn: Transaction, event, data: bytes | None = None, reply=None, rctx=None) -> None:
        """Feed ``event`` to the machine of ``txn`` and carry out what it says."""
        txn.state, actions = step(txn.kind, txn.state, event)
        for action in actions:
            if action.__class__ is Start:
                self.start(txn, action.timer, action.backoff)
            elif action.__class__ is Stop:
                self.stop(txn, action.timer)
            elif action is Action.SEND or action is Action.SEND_ONLY:
                if action is Action.SEND:
                    txn.last_reply = data
                self.core.send_upstream(txn, data)
            elif action is Action.RESEND_REPLY:
                if txn.last_reply is not None:
                    self.core.send_upstream(txn, txn.last_reply)
            elif action is Action.RESEND_REQUEST:
                self.core.send_downstream(txn, txn.data)
            elif action is Action.SEND_ACK:
                if txn.ack is None and txn.data is not None:
                    txn.ack = ack_for(txn.data, reply)
                if txn.ack is not None:
                    self.core.send_downstream(txn, txn.ack)
            elif action is Action.PASS_UP:
                self.core.response(txn, reply, rctx, failed=event is Event.FAILED)
            elif action is Action.CANCEL:
                self.core.cancel_branch(txn)
            elif action is Action.TIMEOUT:
                self.core.timeout(txn)
            elif action is Action.DELETE:
                self.delete(txn)

    def start(self, txn: Transaction, timer: Timer, backoff: bool = False) -> None:
        if backoff:
            last = (txn.intervals or {}).get(timer, self.timers.t1)
            interval = self.timers.t2 if timer is Timer.E and txn.state is State.PROCEEDING \
                else self.timers.backoff(timer, last)
        else:
            interval = self.timers.first(timer, txn.reliable)
            if interval is None:
                return
        if timer is Timer.A or timer is Timer.E or timer is Timer.G:
            if txn.intervals is None:
                txn.intervals = {}
            txn.intervals[timer] = interval
        timers = txn.timers
        if timers is None:
            timers = txn.timers = {}
        elif timer in timers:
            self.running.stop(txn, timer, timers[timer])
        timers[timer] = interval
        self.running.start(txn, timer, interval)

    def _expired(self, txn: Transaction, timer: Timer) -> None:
        if txn.timers is not None:
            txn.timers.pop(timer, None)
        self.fire(txn, timer)

    def stop(self, txn: Transaction, timer: Timer) -> None:
        if txn.timers:
            interval = txn.timers.pop(timer, None)
            if interval is not None:
                self.running.stop(txn, timer, interval)


def make_layer(index: int, runtime, config) -> TransactionLayer:
    params = config.modparams.get("tm", {})
    from ..sl import server_headers
    return TransactionLayer(runtime, config.script, TimerValues.from_modparams(params),
                            server_headers(config.settings))
