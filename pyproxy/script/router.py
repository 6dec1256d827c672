"""What happens to a message once it parsed and validated: the script runs on it, with the hooks
of the modules that keep per-call state (tm) around it, and a reply nobody took is forwarded
statelessly by its Vias. The worker calls it; so do the tests that drive the script and tm over
a fake network.
"""

from __future__ import annotations

from ..config.ast import RouteKind
from .forward import forward_reply
from .exports import MessageHooks


class MessageRouter:
    def __init__(self, script, hooks: list[MessageHooks] = ()):
        self.script = script
        self.request_hooks = tuple(h.request for h in hooks)
        self.after_hooks = tuple(h.after_request for h in hooks)
        self.reply_hooks = tuple(h.reply for h in hooks)
        self.script_changed()

    def script_changed(self) -> None:
        """The script's routes were replaced (a reload): look up the blocks every message runs."""
        self.onreply = self.script.has(RouteKind.ONREPLY, "0")
        self.main = self.script.routes.get((RouteKind.REQUEST, "0"))

    @classmethod
    def for_process(cls, config, index: int, runtime) -> MessageRouter:
        """After fork: each module's child_init, and the hooks they give."""
        hooks = [m.child_init(index, runtime, config) for m in config.modules.values() if m.child_init]
        return cls(config.script, [h for h in hooks if h is not None])

    def request(self, ctx) -> None:
        for hook in self.request_hooks:
            if hook(ctx):
                return              # a retransmission its transaction answered
        try:
            if self.main is not None:
                self.script.call(self.main, ctx)
        finally:
            for hook in self.after_hooks:
                hook(ctx)

    def reply(self, ctx) -> None:
        # a reply made here (a request that could not be sent) skips the script, as in OpenSER
        if self.onreply and ctx.rcv.src_port:
            self.script.run(RouteKind.ONREPLY, "0", ctx)
        for hook in self.reply_hooks:
            if hook(ctx):
                return
        if not ctx.dropped:
            forward_reply(ctx)
