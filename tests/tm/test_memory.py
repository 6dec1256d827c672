"""What finished transactions leave behind: nothing for the cycle collector.

A worker's collector runs rarely (runtime/worker.py, tune_collector): a transaction that formed a
reference cycle would wait for it, so every object a finished call made must be freed by its
reference count alone.
"""

import gc

from .harness import UAS, FakeProxy, ack_of, invite, reply_to, responses
from .test_proxy_flows import RELAY


def test_finished_transactions_leave_no_reference_cycles():
    proxy = FakeProxy(RELAY)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for final in (200, 486, 408):
            req = invite(branch=f"z9hG4bKmem{final}")
            proxy.receive(req)
            branch, _trying = proxy.take()
            proxy.receive(reply_to(branch, 180), src=UAS)
            if final == 408:
                out = proxy.advance(121)                # Timer C (120 s): CANCEL, then 408 upstream
            else:
                proxy.receive(reply_to(branch, final), src=UAS)
                out = proxy.take()
            if final >= 300:
                proxy.receive(ack_of(req, responses(out)[-1].msg))
            bye = invite(method="BYE", branch=f"z9hG4bKbye{final}")
            proxy.receive(bye)
            bye_branch, = proxy.take()
            proxy.receive(reply_to(bye_branch, 200), src=UAS)
            proxy.take()
        proxy.advance(200)                              # every transaction waits out its timers
        assert proxy.idle()
        gc.collect()
        left = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("pyproxy")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
