"""tm's statistics (runtime/shm.py Stat.TM_*: OpenSER's tm counters) and what a finished
transaction lets go (ServerTransaction.settle)."""

from __future__ import annotations

import pytest

from pyproxy.kernel.shm import Stat

from .harness import UAS, UAS2, FakeProxy, ack_of, cancel_of, invite, methods, reply_to, requests

RELAY = """
route {
    if (method=="INVITE") { record_route(); }
    if (!t_relay()) { sl_reply_error(); }
}
"""
FORK = """route { append_branch("sip:carol@10.0.0.3"); t_relay(); }"""
TM = [s for s in Stat if s.name.startswith("TM_")]


def counters(proxy) -> dict:
    return {s.name[3:].lower(): proxy.runtime.stats[s] for s in TM if proxy.runtime.stats[s]}


def flow_200(proxy):
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(reply_to(branch, 200), src=UAS)


def flow_486(proxy):
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS)
    _, busy = proxy.take()
    proxy.receive(req)                          # a retransmission: no new transaction
    proxy.receive(ack_of(req, busy.msg))


def flow_timeout(proxy):
    proxy.receive(invite())
    proxy.advance(30.01)


def flow_503(proxy):
    proxy.receive(invite(method="OPTIONS"))
    branch, = proxy.take()
    proxy.receive(reply_to(branch, 503), src=UAS)


def flow_302(proxy):
    proxy.receive(invite(method="OPTIONS"))
    branch, = proxy.take()
    proxy.receive(reply_to(branch, 302), src=UAS)


def flow_603(proxy):
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 603), src=UAS)


def flow_transport_failure(proxy):
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.fail(branch)


def flow_refused(proxy):
    proxy.runtime.refuse.add(("10.0.0.2", None))
    proxy.receive(invite())


def flow_forked_two_2xx(proxy):
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    proxy.receive(reply_to(b1, 200), src=UAS)
    proxy.receive(reply_to(b2, 200, to_tag="x"), src=UAS2)


@pytest.mark.parametrize("route,flow,want", [
    (RELAY, flow_200, dict(transactions=1, inuse=1, branches=1, replies_in=2, relayed_replies=2, **{"2xx": 1})),
    (RELAY, flow_486, dict(transactions=1, inuse=1, branches=1, replies_in=1, relayed_replies=1, **{"4xx": 1})),
    (RELAY, flow_timeout, dict(transactions=1, inuse=1, branches=1, local_replies=1, **{"4xx": 1})),
    (RELAY, flow_503, dict(transactions=1, inuse=1, branches=1, replies_in=1, local_replies=1, **{"5xx": 1})),
    (RELAY, flow_302, dict(transactions=1, inuse=1, branches=1, replies_in=1, relayed_replies=1, **{"3xx": 1})),
    (RELAY, flow_603, dict(transactions=1, inuse=1, branches=1, replies_in=1, relayed_replies=1, **{"6xx": 1})),
    (RELAY, flow_transport_failure, dict(transactions=1, inuse=1, branches=1, replies_in=1, local_replies=1,
                                         **{"5xx": 1})),
    (RELAY, flow_refused, dict(transactions=1, branches=1)),
    (FORK, flow_forked_two_2xx, dict(transactions=1, inuse=1, branches=2, replies_in=2, relayed_replies=2,
                                     **{"2xx": 1})),
    ('route { t_reply("404", "No"); }', lambda p: p.receive(invite()),
     dict(transactions=1, inuse=1, local_replies=1, **{"4xx": 1})),
], ids=["200", "486", "timeout", "503", "302", "603", "transport-failure", "refused", "fork-2xx", "t_reply"])
def test_tm_counters(route, flow, want):
    """transactions: server transactions made (a retransmission makes none); inuse: alive now;
    branches: client transactions; replies_in: replies that found their branch; relayed_replies:
    replies forwarded upstream; local_replies: final replies made here; 2xx..6xx: the class of
    the final response each transaction sent (once per transaction)."""
    proxy = FakeProxy(route)
    flow(proxy)
    assert counters(proxy) == want


def test_inuse_falls_to_zero_when_transactions_end():
    proxy = FakeProxy(RELAY)
    flow_200(proxy)
    proxy.receive(invite(method="OPTIONS"))
    assert proxy.runtime.stats[Stat.TM_INUSE] == 2
    proxy.advance(60)
    assert proxy.runtime.stats[Stat.TM_INUSE] == 0
    assert proxy.runtime.stats[Stat.TM_TRANSACTIONS] == 2


def test_cancel_counts():
    """A CANCEL is a transaction of its own (17.2.2) and the CANCEL we send a branch of its own."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(cancel_of(req))
    cancel, = requests(proxy.take())
    proxy.receive(reply_to(cancel, 200), src=UAS)
    proxy.receive(reply_to(branch, 487), src=UAS)
    c = counters(proxy)
    assert c["transactions"] == 2 and c["branches"] == 2
    assert c["replies_in"] == 3                  # 180, the CANCEL's 200, 487
    assert c["relayed_replies"] == 2             # 180, 487 (not the CANCEL's 200)
    assert c["4xx"] == 1 and c["local_replies"] == 1      # the 487 upstream; the 200 to the CANCEL


# --- what a finished transaction keeps ---------------------------------------------------------------
def test_settle_keeps_only_what_retransmissions_need():
    """Once the final response went upstream and every branch has its own, the request, its AVPs
    and the branches are let go; the key, the last reply and where it goes stay (17.2.1:
    retransmissions of the INVITE still get the final response)."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    server, = proxy.layer.servers.values()
    client, = proxy.layer.clients.values()
    assert server.request is not None and client.data is not None
    proxy.receive(reply_to(branch, 486), src=UAS)
    _, busy = proxy.take()
    assert server.request is None and server.branches == [] and server.ctx.avps == {}
    assert client.data is None and client.ack is not None
    assert server.last_reply == busy.data and server.reply_dest is not None
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [busy.data]


def test_settle_waits_for_every_branch():
    """A 2xx went upstream but another branch is still pending (it is being CANCELed): the
    branches stay until it ends (its 487 must still be ACKed)."""
    proxy = FakeProxy(FORK)
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    proxy.receive(reply_to(b2, 180), src=UAS2)
    proxy.receive(reply_to(b1, 200), src=UAS)
    proxy.take()
    server, = proxy.layer.servers.values()
    assert server.final_status == 200 and len(server.branches) == 2
    proxy.receive(reply_to(b2, 487), src=UAS2)
    assert methods(proxy.take()) == ["ACK"]
    assert server.branches == [] and server.request is None


def test_settle_after_a_local_reply():
    proxy = FakeProxy('route { t_reply("404", "No"); }')
    proxy.receive(invite())
    server, = proxy.layer.servers.values()
    assert server.request is None and server.last_reply is not None


def test_after_a_2xx_nothing_is_kept_for_retransmission():
    """RFC 6026 7.1: a 2xx is not retransmitted by the transaction: once settled in Accepted it
    keeps no reply to resend."""
    proxy = FakeProxy(RELAY)
    flow_200(proxy)
    server, = proxy.layer.servers.values()
    assert server.request is None and server.last_reply is None
