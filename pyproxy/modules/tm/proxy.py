"""The stateful proxy core (RFC 3261 section 16) over the transaction layer: forking a request to
its branches, the response context (which response goes upstream, when), CANCEL, timeouts,
and the script's failure, reply and branch routes.

Rules, with their RFC sentences in the code: provisional responses but 100 go upstream at once;
every 2xx goes upstream at once and cancels the other branches; a 6xx cancels them and forbids
new ones; the other final responses wait until every branch has one, then failure_route may
add branches (serial forking) or reply, else the best one goes (16.7 step 6). A branch that
cannot be sent ends as if it had answered 503 (16.9); one that times out, 408 (16.8), or 487
once the call was canceled. A lone 503 goes upstream as 500 (16.7 step 6).
"""

from __future__ import annotations

import logging

from ...config.ast import RouteKind
from ...script.forward import (SEND_FAILED, failure_status, forward_request, next_hop, outgoing,
                        reply_destination_for_request, stamp_received)
from ...kernel.shm import Stat
from ...sip import SIPError, make_response
from ..sl import stateless_to_tag
from .keys import server_key
from .machines import Kind, State, reply_event
from .requests import cancel_for
from .transaction import ClientTransaction, LocalReply, ServerTransaction

FORWARDED_2XX = LocalReply(200, "forwarded")     # a branch's 2xx, gone upstream (not kept)

NO_100 = 0x01           # t_relay flags (OpenSER): do not send 100 Trying
RESUBMISSION = (401, 407, 415, 420, 484)    # 16.7 step 6: 4xx worth preferring
FINAL_CLASS_STAT = {2: Stat.TM_2XX, 3: Stat.TM_3XX, 4: Stat.TM_4XX, 5: Stat.TM_5XX, 6: Stat.TM_6XX}


class TmState:
    """tm's part of one message's script context: the routes the script armed, its transaction,
    and what $T_reply_code and $T_branch_idx read."""

    __slots__ = ("core", "server", "key", "on_failure", "on_reply", "on_branch", "branch_idx", "reply_code",
                 "in_failure", "timed_out")

    def __init__(self, core: ProxyCore, server: ServerTransaction | None = None, key: tuple | None = None):
        self.core = core
        self.server = server
        self.key = key              # the request's server transaction key, once computed
        self.on_failure = self.on_reply = self.on_branch = None     # route names
        self.branch_idx: int | None = None
        self.reply_code: int | None = None
        self.in_failure = False
        self.timed_out = False

    def settled(self) -> TmState:
        """A copy for a settled transaction's context: its armed onreply_route, and no reference
        back to the transaction, so that nothing cyclic is left for the collector to find."""
        state = TmState(self.core, key=self.key)
        state.on_reply = self.on_reply
        return state

    def reply(self, ctx, status: int, reason: str, headers=()) -> int | None:
        """sl's replies to a request that has a transaction go through it (a stateless one would
        leave the transaction waiting and its retransmissions unanswered); None: it has none."""
        server = self.server
        if server is None or server.state is State.TERMINATED:
            return None
        if server.final_status and status >= 200:
            ctx.runtime.log(logging.WARNING, f"not replying {status}: the transaction was answered "
                                             f"{server.final_status} already")
            return -1
        return 1 if self.core.reply_local(server, status, reason, headers) else -1


def tm_state(ctx, core) -> TmState:
    state = ctx.tm
    if state is None:
        state = ctx.tm = TmState(core)
    return state


class ProxyCore:
    def __init__(self, layer, server_headers: tuple = ()):
        self.layer = layer
        self.runtime = layer.runtime
        self.stats = layer.stats
        self.server_headers = server_headers

    # -- from the script ------------------------------------------------------------------------
    def server_for(self, ctx) -> ServerTransaction | None:
        """The request's server transaction, made now if it has none (t_newtran)."""
        state = tm_state(ctx, self)
        if state.server is None:
            key = state.key or server_key(ctx.msg)
            if key in self.layer.servers:       # two transactions for one request: refuse
                raise SIPError("the request has a transaction already")
            state.server = self.layer.new_server(ctx, key)
        return state.server

    def relay(self, ctx, dest=None, flags: int = 0) -> int:
        """t_relay(): fork the request to its Request-URI (or $du, or ``dest``) and every branch
        append_branch() added. 1 when at least one branch left, -1 when none could."""
        msg = ctx.msg
        if msg.method == "ACK":         # the ACK of a 2xx: end to end, not a transaction
            if not self.in_dialog(msg):
                # the ACK of a non-2xx reply that no transaction here took: stray, dropped
                self.runtime.log(logging.DEBUG, "t_relay(): an ACK without a To tag matches nothing: dropped")
                return 1
            try:
                return forward_request(ctx, dest and dest.resolve(msg))
            except SIPError:
                ctx.last_error = (400, "Bad Request-URI")
                return -1
        if msg.method == "CANCEL":
            return self.relay_cancel(ctx)
        state = tm_state(ctx, self)
        created = state.server is None
        try:
            server = self.server_for(ctx)
        except SIPError as e:
            self.runtime.log(logging.WARNING, f"t_relay(): {e}")
            ctx.last_error = (400, "Bad Request")
            return -1
        refusal = self.cannot_add_branches(server, state)
        if refusal:
            self.runtime.log(logging.WARNING, f"t_relay(): {refusal}")
            ctx.last_error = (500, "Server Internal Error")
            return -1
        targets = [(msg.ruri, ctx.dst_uri)] + (ctx.branches or [])
        ctx.branches = None
        if not self.fork(server, state, targets, dest):
            if created:             # nothing went out: the script answers it (sl_reply_error)
                self.layer.delete(server)
                state.server = None
            return -1
        if server.kind is Kind.INVITE_SERVER and server.last_reply is None and not flags & NO_100:
            self.reply_local(server, 100, "Trying")     # at once, as OpenSER: the UAC stops retransmitting
        return 1

    @staticmethod
    def in_dialog(msg) -> bool:
        try:
            return msg.to.tag is not None
        except SIPError:
            return False

    @staticmethod
    def cannot_add_branches(server: ServerTransaction, state: TmState) -> str | None:
        if server.blocked:
            return "a 6xx response came: no new branches (RFC 3261 16.7)"
        if server.final_status:
            return f"the transaction was answered {server.final_status} already"
        if server.canceled:
            return "the transaction was canceled (RFC 3261 16.10: no new branches)"
        if server.branches and not state.in_failure:
            return "the request was relayed already (a second t_relay() in the same route?)"
        return None

    def relay_cancel(self, ctx) -> int:
        """A CANCEL (RFC 3261 16.10): 200 and every pending branch canceled when its INVITE has
        a transaction here, else 481. Returns 1: the CANCEL was answered."""
        msg = ctx.msg
        try:
            invite = self.layer.servers.get(server_key(msg, "INVITE"))
            server = self.server_for(ctx)
        except SIPError as e:
            self.runtime.log(logging.INFO, f"t_relay(): cannot match the CANCEL: {e}")
            ctx.last_error = (400, "Bad Request")
            return -1
        if invite is None or invite.kind is not Kind.INVITE_SERVER:
            # "If a response context is not found, the element does not have any knowledge of
            # the request to apply the CANCEL to" (16.10): no transaction of ours to cancel
            self.reply_local(server, 481, "Call/Transaction Does Not Exist")
            return 1
        # "If a response context is found, the element MUST immediately return a 200 (OK)
        # response to the CANCEL request" and "MUST cancel all pending client transactions"
        self.reply_local(server, 200, "canceling")
        invite.canceled = True
        for branch in invite.branches:
            self.cancel_branch(branch)
        return 1

    def fork(self, server: ServerTransaction, state: TmState, targets: list, dest=None) -> int:
        """Send the request to each target ((uri, dst_uri)); how many branches left."""
        ctx, runtime = server.ctx, self.runtime
        msg = ctx.msg
        dst_uri, record_route = ctx.dst_uri, ctx.record_route
        sent = 0
        for uri, du in targets:
            index = len(server.branches)
            # a branch that changes the request (another URI, a branch_route) works on a copy
            mark = msg.checkpoint() if uri != msg.ruri or state.on_branch is not None else None
            try:
                if uri != msg.ruri:
                    msg.set_ruri(uri)
                ctx.dst_uri = du
                if state.on_branch is not None and not self.run_branch_route(ctx, state, index):
                    continue
                target = dest.resolve(msg) if dest is not None else next_hop(ctx)
                branch = self.layer.branch_id(server, index)
                data, source = outgoing(ctx, target, branch)
            except SIPError as e:
                ctx.last_error = failure_status(e)
                runtime.log(logging.WARNING, f"t_relay(): cannot send {msg.method} to {uri}: {e}")
                continue
            finally:           # what the branch (and its branch_route) changed stays with it
                if mark is not None:
                    msg.rollback(mark)
                ctx.dst_uri, ctx.record_route = dst_uri, record_route
            client = self.layer.new_client(server, index, branch, server.method, target, data, source)
            server.branches.append(client)
            if not runtime.send(ctx, target, data, source):
                ctx.last_error = SEND_FAILED
                server.branches.pop()
                self.layer.delete(client)
                continue
            sent += 1
        return sent

    def reply_local(self, server: ServerTransaction, status: int, reason: str, headers=()) -> bool:
        """A reply made here (t_reply, 100 Trying, a timeout's 408...) sent on the transaction."""
        request = server.request
        if request is None:
            return False
        try:
            stamp_received(request, server.ctx.rcv)
            to_tag = stateless_to_tag(request) if status > 100 and request.to.tag is None else None
            data = make_response(request, status, reason, to_tag=to_tag,
                                 headers=(*headers, *self.server_headers))
        except SIPError as e:
            self.runtime.log(logging.INFO, f"cannot reply {status} to {request.method}: {e}")
            return False
        if status >= 200:
            self.stats.add(Stat.TM_LOCAL_REPLIES)
        self.layer.fire(server, reply_event(status, sending=True), data=data)
        if status >= 200:
            self.finalized(server, status)
        return True

    # -- sending --------------------------------------------------------------------------------
    def send_upstream(self, server: ServerTransaction, data: bytes) -> None:
        ctx = server.ctx
        if server.reply_dest is None:       # RFC 3261 18.2.2 (and force_rport()), once
            server.reply_dest = reply_destination_for_request(ctx.msg, ctx.rcv, self.runtime.reply_to_via)
        self.runtime.send(ctx, server.reply_dest, data)

    def send_downstream(self, client: ClientTransaction, data: bytes | None) -> None:
        if data is not None:
            self.runtime.send(client.server.ctx, client.dest, data, client.source)

    def forward_upstream(self, server: ServerTransaction, reply) -> None:
        """A response of a branch goes upstream without our Via (16.7 steps 7-9)."""
        try:
            reply.remove_top_via()
            data = reply.serialize()
        except SIPError as e:
            self.runtime.log(logging.INFO, f"cannot forward a {reply.status} reply: {e}")
            return
        self.stats.add(Stat.TM_RELAYED_REPLIES)
        if server.state is State.TERMINATED:
            # a 2xx of a branch that outlived its server transaction: forwarded all the same
            # (16.7 step 5), where the transaction sent its replies
            self.send_upstream(server, data)
            return
        self.layer.fire(server, reply_event(reply.status, sending=True), data=data)

    def finalized(self, server: ServerTransaction, status: int) -> None:
        if not server.final_status:
            server.final_status = status
            self.stats.add(FINAL_CLASS_STAT.get(status // 100, Stat.TM_6XX))
        # 16.7 step 10: after a final response "all pending client transactions ... MUST be cancelled"
        for branch in server.branches:
            self.cancel_branch(branch)
        server.settle()

    # -- responses from the branches ------------------------------------------------------------
    def response(self, client: ClientTransaction, reply, rctx, failed: bool = False) -> None:
        """A branch's response, passed up by its transaction."""
        server = client.server
        if client.key[1] == "CANCEL" or server is None:
            return                      # the answer to our own CANCEL stays here
        status = reply.status
        if failed:                      # 16.9: "as if the forwarded request received a 503"
            self.runtime.log(logging.INFO, f"branch {client.index} of {server.method} failed: {reply.status} "
                                           f"{reply.reason}")
            self.branch_done(client, LocalReply(status, reply.reason))
            return
        state = server.ctx.tm
        dropped = state is not None and state.on_reply is not None and rctx is not None and \
            self.run_reply_route(server, state.on_reply, client, rctx)
        if status < 200:
            client.provisional = True
            if client.cancel_pending:   # 9.1: a branch is CANCELed once it answered
                self.cancel_branch(client)
            # 16.7 step 5: "any provisional response other than 100 (Trying) MUST be forwarded"
            if status > 100 and not dropped and not server.final_status:
                self.forward_upstream(server, reply)
            return
        client.data = None              # no retransmission, CANCEL or ACK will be built of it now
        if status < 300:
            # "... 2xx response to an INVITE, the proxy MUST forward it immediately" -- every one
            client.final = FORWARDED_2XX
            self.forward_upstream(server, reply)
            if server.final_status:
                server.settle()
            else:
                self.finalized(server, status)
            return
        if client.final is not None:
            return                      # the branch ended already (Timer C): absorbed
        self.branch_done(client, reply)

    def timeout(self, client: ClientTransaction) -> None:
        """No final response in time (fr_timer, fr_inv_timer): 408, or 487 once canceled."""
        server = client.server
        if client.key[1] == "CANCEL" or server is None or client.final is not None:
            return
        status, reason = (487, "Request Terminated") if server.canceled else (408, "Request Timeout")
        self.runtime.log(logging.INFO, f"branch {client.index} of {server.method} to {client.dest.host} "
                                       f"timed out{' (canceled)' if server.canceled else ''}")
        self.branch_done(client, LocalReply(status, reason, timeout=True))

    def cancel_branch(self, client: ClientTransaction) -> None:
        """CANCEL a pending INVITE branch; one that has not answered yet is CANCELed when it does
        (RFC 3261 9.1: "the client MUST wait for the arrival of a provisional response")."""
        if client.kind is not Kind.INVITE_CLIENT or client.final is not None or client.canceling \
                or client.data is None or client.state not in (State.CALLING, State.PROCEEDING):
            return
        if not client.provisional:
            client.cancel_pending = True
            return
        client.canceling = True
        data = cancel_for(client.data)
        cancel = self.layer.new_client(client.server, client.index, client.key[0], "CANCEL", client.dest,
                                       data, client.source)
        self.send_downstream(cancel, data)

    def branch_done(self, client: ClientTransaction, final) -> None:
        client.final = final
        if client.state is State.TERMINATED:
            client.data = None          # else (Timer C) the final response the CANCEL brings is ACKed
        server = client.server
        if final.status >= 600:
            # 16.7 step 5: a 6xx: "the stateful proxy SHOULD cancel all client pending
            # transactions", and "MUST NOT create branches" any more
            server.blocked = True
            for branch in server.branches:
                self.cancel_branch(branch)
        if server.final_status or server.pending():
            server.settle()
            return
        self.choose(server)

    def choose(self, server: ServerTransaction) -> None:
        """Every branch has its final response and none was a 2xx: failure_route, if armed,
        may fork again or reply; else the best response goes upstream."""
        best = best_response([b.final for b in server.branches])
        state = server.ctx.tm
        if state is not None and state.on_failure is not None and server.request is not None:
            route, state.on_failure = state.on_failure, None
            if self.run_failure_route(server, state, route, best):
                return
        if not server.final_status:
            self.send_best(server, best)

    def send_best(self, server: ServerTransaction, best) -> None:
        if best.status == 503:
            # 16.7 step 6: "If the only response that was received is a 503, the proxy SHOULD
            # generate a 500 response and forward that upstream"
            self.reply_local(server, 500, f"Server Internal Error (next hop: 503 {best.reason})"[:200])
        elif isinstance(best, LocalReply):
            self.reply_local(server, best.status, best.reason)
        else:
            if best.status in (401, 407):
                merge_challenges(best, server.branches)
            self.forward_upstream(server, best)
            self.finalized(server, best.status)

    # -- the script's routes --------------------------------------------------------------------
    def run_failure_route(self, server: ServerTransaction, state: TmState, route: str, best) -> bool:
        """True when failure_route forked again or replied."""
        ctx = server.ctx
        state.reply_code = best.status
        state.timed_out = isinstance(best, LocalReply) and best.timeout      # the branch that failed
        state.in_failure = True
        ctx.route_type, ctx.dst_uri, ctx.branches, ctx.dropped = RouteKind.FAILURE, None, None, False
        before = len(server.branches)
        try:
            self.layer.script.run(RouteKind.FAILURE, route, ctx)
        except Exception:
            self.runtime.log(logging.ERROR, f"failure_route[{route}] failed; the best reply goes upstream")
        finally:
            state.in_failure = False
            ctx.route_type = None
        return bool(server.final_status) or (len(server.branches) > before and server.pending())

    def run_reply_route(self, server: ServerTransaction, route: str, client: ClientTransaction, rctx) -> bool:
        """onreply_route[N] armed by t_on_reply(); True when it dropped the reply."""
        ctx = server.ctx
        state = TmState(self, server)
        state.branch_idx, state.reply_code = client.index, rctx.msg.status
        rctx.tm, rctx.flags, rctx.avps, rctx.route_type = state, ctx.flags, ctx.avps, RouteKind.ONREPLY
        try:
            self.layer.script.run(RouteKind.ONREPLY, route, rctx)
        except Exception:
            self.runtime.log(logging.ERROR, f"onreply_route[{route}] failed; the reply is processed as is")
        ctx.flags = rctx.flags
        return rctx.dropped

    def run_branch_route(self, ctx, state: TmState, index: int) -> bool:
        """branch_route[N] armed by t_on_branch(), on one branch; False when it dropped it."""
        state.branch_idx, ctx.dropped, saved = index, False, ctx.route_type
        ctx.route_type = RouteKind.BRANCH
        try:
            self.layer.script.run(RouteKind.BRANCH, state.on_branch, ctx)
        except Exception:
            self.runtime.log(logging.ERROR, f"branch_route[{state.on_branch}] failed; branch {index} dropped")
            ctx.dropped = True
        finally:
            ctx.route_type, state.branch_idx = saved, None
        dropped, ctx.dropped = ctx.dropped, False
        return not dropped


def best_response(finals: list):
    """16.7 step 6: a 6xx if there is one, else one of the lowest class: in 4xx, one that helps
    the UAC resubmit (401, 407, 415, 420, 484) first; a response received before one made here."""
    six = [f for f in finals if f.status >= 600]
    if six:
        return six[0]
    lowest = min(f.status // 100 for f in finals)
    candidates = [f for f in finals if f.status // 100 == lowest]
    if lowest == 4:
        for code in RESUBMISSION:
            for f in candidates:
                if f.status == code:
                    return f
    received = [f for f in candidates if not isinstance(f, LocalReply)]
    return (received or candidates)[0]


def merge_challenges(best, branches) -> None:
    """16.7 step 7: "the proxy MUST collect any WWW-Authenticate and Proxy-Authenticate header
    field values from all other 401 (Unauthorized) and 407 ... responses" into the one it sends."""
    for branch in branches:
        other = branch.final
        if other is best or isinstance(other, LocalReply) or other is None or other.status not in (401, 407):
            continue
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            for value in other.header_values(name):     # not comma lists: whole values
                best.add_header(name, value)
