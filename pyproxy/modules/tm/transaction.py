"""What a transaction holds: the state of its machine, its timers, and the references the proxy
needs -- the request (until a final response went upstream), the bytes each branch sent (until
its final response came), the last reply (for retransmissions). Nothing is copied that a
message object already holds, and what a finished transaction no longer needs is let go
(``ServerTransaction.settle``): one waiting out wt_timer keeps its key, its last reply and where
replies go.
"""

from __future__ import annotations

from ...config.values import Proto
from ...script.context import ScriptContext
from .machines import INITIAL, Kind, State


class Transaction:
    __slots__ = ("kind", "state", "reliable", "timers", "intervals")

    def __init__(self, kind: Kind, reliable: bool):
        self.kind = kind
        self.state = INITIAL[kind]
        self.reliable = reliable        # TCP/TLS: no retransmissions, no wait (RFC 3261 17)
        self.timers: dict | None = None     # Timer -> its interval, while it runs
        self.intervals: dict | None = None  # retransmission Timer -> its last interval


class ServerTransaction(Transaction):
    """The server transaction of a request and its response context (RFC 3261 16.7): the
    branches it was forked to and what they answered."""

    __slots__ = ("key", "ctx", "last_reply", "reply_dest", "branches", "final_status", "canceled",
                 "serial", "blocked", "method")

    def __init__(self, kind: Kind, key: tuple, ctx, serial: int):
        super().__init__(kind, ctx.rcv.proto is not Proto.UDP)
        self.key = key
        self.ctx = ctx                  # the request's script context (flags, AVPs, armed routes)
        self.method = ctx.msg.method
        self.serial = serial            # for branch ids
        self.last_reply: bytes | None = None
        self.reply_dest = None          # where replies go (RFC 3261 18.2.2), once known
        self.branches: list[ClientTransaction] = []
        self.final_status = 0           # the final status sent upstream, 0 before
        self.canceled = False           # a CANCEL came for it
        self.blocked = False            # a 6xx came: no new branches (RFC 3261 16.7 step 5)

    @property
    def request(self):
        return self.ctx.msg

    def pending(self) -> bool:
        """Whether a branch still waits for its final response."""
        return any(b.final is None for b in self.branches)

    def settle(self) -> None:
        """A final response went upstream and every branch has its own: the request, the
        branches and their replies are not needed any more."""
        if self.final_status and not self.pending():
            # a context of its own from now on: the script may still be running on the old one
            old = self.ctx
            self.ctx = ScriptContext(None, old.rcv, old.runtime)
            self.ctx.flags = old.flags
            if old.tm is not None:      # what the replies still to come need (their onreply_route)
                self.ctx.tm = old.tm.settled()
            for branch in self.branches:        # their responses are not needed either
                branch.final = SETTLED
            self.branches = []
            if self.state is State.ACCEPTED:
                self.last_reply = None      # INVITE retransmissions after a 2xx are absorbed (RFC 6026)


class ClientTransaction(Transaction):
    """One branch: the request sent to one target, and its fate."""

    __slots__ = ("key", "server", "index", "dest", "data", "source", "provisional", "final",
                 "cancel_pending", "canceling", "ack")

    def __init__(self, kind: Kind, key: tuple, server: ServerTransaction | None, index: int, dest,
                 data: bytes, source):
        super().__init__(kind, dest.proto is not Proto.UDP)
        self.key = key                  # (branch, method)
        self.server = server            # None for a CANCEL we send
        self.index = index
        self.dest = dest                # where the script sent it (runtime.send resolves it)
        self.data = data                # the bytes sent (retransmissions, CANCEL, ACK are made of them)
        self.source = source            # the sending socket runtime.via_sent_by() chose
        self.provisional = False        # a provisional response came
        self.final = None               # its final response: a Response, or a LocalReply
        self.cancel_pending = False     # CANCEL once a provisional response comes (RFC 3261 9.1)
        self.canceling = False
        self.ack: bytes | None = None   # the ACK of its non-2xx final response


class LocalReply:
    """A final response the proxy makes itself for a branch (timeout, transport failure)."""

    __slots__ = ("status", "reason", "timeout")

    def __init__(self, status: int, reason: str, timeout: bool = False):
        self.status, self.reason, self.timeout = status, reason, timeout

    def __repr__(self) -> str:
        return f"LocalReply({self.status} {self.reason})"


SETTLED = LocalReply(0, "settled")      # the final response of a branch whose transaction is done
