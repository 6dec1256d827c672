"""Forking and the response context (RFC 3261 16.7): parallel branches, which responses go
upstream and when, CANCEL of the other branches, the best response, 503 -> 500, transport
failures (16.9)."""

from __future__ import annotations

import pytest

from pyproxy.modules.tm.proxy import best_response
from pyproxy.modules.tm.transaction import LocalReply

from .harness import (UAC, UAS, UAS2, FakeProxy, ack_of, cancel_of, invite, methods, reply_to, requests, responses,
                      status)

UAS3 = ("10.0.0.4", 5060)
TARGETS = {0: UAS, 1: UAS2, 2: UAS3}


def forking(n: int = 2, failure_route: str = "") -> FakeProxy:
    """A proxy that forks every INVITE to bob@10.0.0.2 and n-1 more targets in parallel."""
    extra = "".join(f'append_branch("sip:u{i}@{TARGETS[i][0]}");' for i in range(1, n))
    return FakeProxy(f"""
route {{
    if (method=="INVITE") {{ {extra} }}
    {'t_on_failure("1");' if failure_route else ''}
    if (!t_relay()) {{ sl_reply_error(); }}
}}
{f'failure_route[1] {{ {failure_route} }}' if failure_route else ''}
""")


def start(proxy: FakeProxy, n: int = 2, req: str | None = None):
    req = req or invite()
    proxy.receive(req)
    out = proxy.take()
    branches = requests(out)
    assert methods(out) == ["INVITE"] * n + ["100"]
    return req, branches


def answer(proxy, branch, code, **kw):
    src = next(TARGETS[i] for i in TARGETS if TARGETS[i][0] == branch.dest.host)
    proxy.receive(reply_to(branch, code, to_tag=kw.pop("to_tag", f"t{branch.dest.host[-1]}"), **kw), src=src)


# --- parallel forking ---------------------------------------------------------------------------
def test_append_branch_forks_in_parallel():
    """16.6: one copy of the request per target, each with its own Request-URI and a Via of its
    own (a distinct branch, 16.6 step 8); one 100 Trying upstream (16.2)."""
    proxy = forking(3)
    _, branches = start(proxy, 3)
    assert [b.first_line for b in branches] == ["INVITE sip:bob@10.0.0.2 SIP/2.0", "INVITE sip:u1@10.0.0.3 SIP/2.0",
                                               "INVITE sip:u2@10.0.0.4 SIP/2.0"]
    assert [(b.dest.host, b.dest.port) for b in branches] == [("10.0.0.2", None), ("10.0.0.3", None),
                                                           ("10.0.0.4", None)]
    vias = [b.msg.top_via.branch for b in branches]
    assert len(set(vias)) == 3 and all(v.startswith("z9hG4bK") for v in vias)
    assert all(len(b.msg.vias) == 2 for b in branches)
    assert len(proxy.layer.clients) == 3


def test_append_branch_without_argument_copies_the_ruri_and_du():
    """OpenSER's append_branch(): the current Request-URI and $du become a branch."""
    proxy = FakeProxy("""
route {
    $du = "sip:10.0.0.9:5080";
    append_branch();
    rewritehostport("10.0.0.3:5060");
    $du = $null;
    t_relay();
}""")
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    assert b1.first_line == "INVITE sip:bob@10.0.0.3:5060 SIP/2.0" and (b1.dest.host, b1.dest.port) == ("10.0.0.3", 5060)
    assert b2.first_line == "INVITE sip:bob@10.0.0.2 SIP/2.0" and (b2.dest.host, b2.dest.port) == ("10.0.0.9", 5080)


def test_2xx_goes_at_once_and_cancels_the_others():
    """16.7 step 5: "If the response is a 2xx response to an INVITE, the proxy MUST forward it
    immediately"; step 10: "MUST cancel all pending client transactions" (the ones that
    answered provisionally are CANCELed now, the silent one when it answers, 9.1)."""
    proxy = forking(3)
    _, (b1, b2, b3) = start(proxy, 3)
    answer(proxy, b2, 180)
    assert methods(proxy.take()) == ["180"]
    answer(proxy, b1, 200)
    out = proxy.take()
    assert methods(responses(out)) == ["200"]
    cancel, = requests(out)
    assert cancel.first_line.startswith("CANCEL ") and cancel.dest == b2.dest
    assert cancel.msg.top_via.branch == b2.msg.top_via.branch
    answer(proxy, b3, 100)                          # the silent one answers: CANCELed now
    cancel3, = proxy.take()
    assert cancel3.first_line.startswith("CANCEL ") and cancel3.msg.top_via.branch == b3.msg.top_via.branch
    answer(proxy, b2, 487)
    answer(proxy, b3, 487)
    assert methods(proxy.take()) == ["ACK", "ACK"]       # 487s ACKed, not forwarded


def test_every_2xx_of_every_branch_is_forwarded():
    """16.7 step 5: every 2xx goes upstream (the UAC may set up several dialogs), its
    retransmissions too."""
    proxy = forking(3)
    _, (b1, b2, b3) = start(proxy, 3)
    answer(proxy, b3, 200)
    answer(proxy, b1, 200)
    answer(proxy, b1, 200)
    answer(proxy, b2, 200)
    out = responses(proxy.take())
    assert [(status(s), s.msg.to.tag) for s in out] == [(200, "t4"), (200, "t2"), (200, "t2"), (200, "t3")]
    assert all((s.dest.host, s.dest.port) == UAC for s in out)


def test_6xx_cancels_the_others_and_is_forwarded_when_they_end():
    """16.7 step 5: "If a 6xx response is received, it is not immediately forwarded, but the
    stateful proxy SHOULD cancel all client pending transactions"; then it is the best
    response (step 6)."""
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    answer(proxy, b1, 180)
    proxy.take()
    answer(proxy, b2, 603)
    out = proxy.take()
    assert sorted(methods(out)) == ["ACK", "CANCEL"]          # no 603 upstream yet
    answer(proxy, b1, 487)
    out = proxy.take()
    assert methods(out) == ["ACK", "603"]


def test_6xx_blocks_new_branches_in_failure_route():
    """16.7 step 5: after a 6xx the proxy "MUST NOT create any new branches in this context":
    t_relay() in failure_route fails and the 6xx goes upstream."""
    proxy = forking(1, 'rewritehostport("10.0.0.3:5060"); if (!t_relay()) { setflag(3); }')
    _, (b1,) = start(proxy, 1)
    answer(proxy, b1, 600)
    out = proxy.take()
    assert methods(out) == ["ACK", "600"]
    assert proxy.logged("6xx")


def test_6xx_is_preferred_over_everything_but_2xx():
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    answer(proxy, b1, 302)
    answer(proxy, b2, 606)
    assert methods(proxy.take()) == ["ACK", "ACK", "606"]


def test_100_is_never_forwarded():
    """16.7 step 5: "any provisional response other than 100 (Trying) MUST be forwarded"."""
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    answer(proxy, b1, 100)
    answer(proxy, b2, 100)
    assert proxy.take() == []
    answer(proxy, b1, 180)
    answer(proxy, b2, 183)
    assert methods(proxy.take()) == ["180", "183"]


def test_provisional_after_a_final_is_not_forwarded():
    """After the final response went upstream a provisional one would break the UAC's
    transaction (17.1.1.2: nothing after Completed/Accepted): it is not forwarded; the branch
    that sent it is CANCELed."""
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    answer(proxy, b1, 200)
    assert methods(proxy.take()) == ["200"]
    answer(proxy, b2, 183)
    out = proxy.take()
    assert methods(out) == ["CANCEL"]


# --- the best response --------------------------------------------------------------------------
CHOICES = [
    ([486, 404], 486),                  # same class: the first received
    ([404, 486], 404),
    ([503, 404], 404),                  # the lowest class
    ([486, 302], 302),
    ([500, 603], 603),                  # a 6xx always
    ([404, 401], 401),                  # 4xx: 401, 407, 415, 420, 484 first
    ([480, 407], 407),
    ([486, 415, 404], 415),
    ([404, 420], 420),
    ([486, 484], 484),
    ([484, 401], 401),                  # in the order 401, 407, 415, 420, 484
    ([407, 401], 401),
    ([500, 502], 500),
    ([302, 301], 302),
]


@pytest.mark.parametrize("codes,best", CHOICES, ids=lambda v: str(v))
def test_best_response(codes, best):
    """16.7 step 6: "the proxy MUST choose the response with the lowest response class ... a 6xx
    if one was received"; "proxies SHOULD give preference to 401, 407, 415, 420, and 484 if the
    4xx class is chosen"."""
    proxy = forking(len(codes))
    _, branches = start(proxy, len(codes))
    for branch, code in zip(branches, codes):
        answer(proxy, branch, code)
    out = proxy.take()
    assert methods(out) == ["ACK"] * len(codes) + [str(best)]
    sent = out[-1].msg
    assert sent.to.tag == f"t{branches[codes.index(best)].dest.host[-1]}"     # that branch's, as it came
    assert len(sent.vias) == 1


@pytest.mark.parametrize("local,received,best", [
    (408, 480, 480), (408, 404, 404), (503, 500, 500), (503, 502, 502),
])
def test_received_response_preferred_over_a_local_one(local, received, best):
    """A response a next hop really sent says more than one we made (a timeout's 408, a transport
    failure's 503): among the same class the received one goes."""
    finals = [LocalReply(local, "made here"), _Fake(received)]
    assert best_response(finals).status == best


def test_best_response_unit_order():
    """best_response() on its own: first of the lowest class when nothing else decides."""
    assert best_response([_Fake(486), _Fake(404)]).status == 486
    assert best_response([LocalReply(408, "x"), LocalReply(408, "y")]).reason == "x"
    assert best_response([_Fake(302), LocalReply(408, "x")]).status == 302
    assert best_response([_Fake(500), _Fake(600), _Fake(603)]).status == 600


class _Fake:
    def __init__(self, status):
        self.status = status


def test_timeout_of_one_branch_and_a_received_4xx():
    """A branch that timed out (408 made here) and one that answered 480: the 480 goes."""
    proxy = FakeProxy("""route { append_branch("sip:u1@10.0.0.3"); t_relay(); }""",
                      'modparam("tm", "fr_timer", 5)\n')
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    proxy.receive(reply_to(b2, 480), src=UAS2)
    assert methods(proxy.take()) == ["ACK"]
    out = responses(proxy.advance(5.01))
    assert [status(s) for s in out] == [480]


@pytest.mark.parametrize("codes,header", [
    ([(401, 'Digest realm="a"'), (401, 'Digest realm="b"')], "WWW-Authenticate"),
    ([(407, 'Digest realm="a"'), (407, 'Digest realm="b"')], "Proxy-Authenticate"),
])
def test_challenges_are_merged(codes, header):
    """16.7 step 7: "the proxy MUST collect any WWW-Authenticate and Proxy-Authenticate header
    field values from all other 401 (Unauthorized) and 407 (Proxy Authentication Required)
    responses received so far in this response context and add them to this response"."""
    proxy = forking(2)
    _, branches = start(proxy)
    for branch, (code, value) in zip(branches, codes):
        answer(proxy, branch, code, extra=((header, value),))
    out = proxy.take()
    best = out[-1].msg
    assert best.status == codes[0][0]
    assert sorted(best.header_values(header)) == ['Digest realm="a"', 'Digest realm="b"']


def test_401_and_407_challenges_both_go_in_the_401():
    proxy = forking(3)
    _, (b1, b2, b3) = start(proxy, 3)
    answer(proxy, b1, 407, extra=(("Proxy-Authenticate", 'Digest realm="p"'),))
    answer(proxy, b2, 404)
    answer(proxy, b3, 401, extra=(("WWW-Authenticate", 'Digest realm="w"'),))
    out = proxy.take()
    best = out[-1].msg
    assert best.status == 401
    assert best.header_values("WWW-Authenticate") == ['Digest realm="w"']
    assert best.header_values("Proxy-Authenticate") == ['Digest realm="p"']


def test_challenge_not_merged_from_other_codes():
    """Only 401 and 407 responses contribute (a 404 carrying a stray WWW-Authenticate does not)."""
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    answer(proxy, b1, 401, extra=(("WWW-Authenticate", 'Digest realm="a"'),))
    answer(proxy, b2, 404, extra=(("WWW-Authenticate", 'Digest realm="zz"'),))
    best = proxy.take()[-1].msg
    assert best.header_values("WWW-Authenticate") == ['Digest realm="a"']


# --- 503, transport failures ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2])
def test_only_503s_become_500(n):
    """16.7 step 6: "If the only response that was received is a 503, the proxy SHOULD generate a
    500 response and forward that upstream" (a 503 would make the UAC think this proxy is
    overloaded); the next hop's 503 is named in the reason phrase."""
    proxy = forking(n)
    _, branches = start(proxy, n)
    for b in branches:
        answer(proxy, b, 503, reason="Overloaded")
    out = proxy.take()
    assert methods(out) == ["ACK"] * n + ["500"]
    reason = out[-1].msg.reason
    assert "503" in reason and "Overloaded" in reason
    assert out[-1].msg.to.tag            # a final reply made here has a To tag (8.2.6.2)


def test_503_with_another_response_lets_that_one_go():
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    answer(proxy, b1, 503)
    answer(proxy, b2, 486)
    assert methods(proxy.take()) == ["ACK", "ACK", "486"]


def test_transport_failure_of_one_branch_among_two():
    """16.9: "If the transport layer notifies a proxy of an error when it tries to forward a
    request, the proxy MUST behave as if the forwarded request received a 503"; the other branch
    goes on and its answer decides."""
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    proxy.fail(b1, "connection refused")
    assert proxy.take() == []
    answer(proxy, b2, 180)
    assert methods(proxy.take()) == ["180"]
    answer(proxy, b2, 486)
    assert methods(proxy.take()) == ["ACK", "486"]


def test_transport_failure_of_one_branch_and_200_of_the_other():
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    proxy.fail(b2, "no route to host")
    answer(proxy, b1, 200)
    assert methods(proxy.take()) == ["200"]


def test_transport_failure_of_both_is_500():
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    proxy.fail(b1, "refused")
    proxy.fail(b2, "unreachable")
    out = proxy.take()
    assert methods(out) == ["500"]
    assert "503" in out[0].msg.reason


def test_failed_branch_stops_its_retransmissions():
    """17.1.4: a transport error ends the client transaction: no more Timer A for it."""
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    proxy.fail(b1, "refused")
    out = proxy.advance(1.6)
    assert [s.dest.host for s in out] == ["10.0.0.3", "10.0.0.3"]


def test_synchronous_send_failure_of_one_branch():
    """A branch the transport refuses at once (runtime.send() false) is not a branch: the other
    one goes on alone and its answer goes upstream."""
    proxy = forking(2)
    proxy.runtime.refuse.add(("10.0.0.3", None))
    proxy.receive(invite())
    out = proxy.take()
    assert methods(out) == ["INVITE", "100"] and out[0].dest.host == "10.0.0.2"
    assert len(proxy.layer.clients) == 1
    answer(proxy, out[0], 486)
    assert methods(proxy.take()) == ["ACK", "486"]


def test_response_context_releases_the_request():
    """ServerTransaction.settle(): once the final response went upstream and every branch has its
    own, the request and the branches are let go (the last reply stays for retransmissions)."""
    proxy = forking(2)
    req, (b1, b2) = start(proxy)
    server, = proxy.layer.servers.values()
    answer(proxy, b1, 200)
    proxy.take()
    assert server.final_status == 200 and server.request is not None and len(server.branches) == 2
    answer(proxy, b2, 183)
    answer(proxy, b2, 487)
    proxy.take()
    assert server.request is None and server.branches == [] and server.ctx.avps == {}


def test_settle_after_a_non_2xx_keeps_the_last_reply():
    proxy = forking(1)
    req, (b1,) = start(proxy, 1)
    server, = proxy.layer.servers.values()
    answer(proxy, b1, 486)
    _, busy = proxy.take()
    assert server.request is None and server.branches == []
    assert server.last_reply == busy.data
    client, = proxy.layer.clients.values()
    assert client.data is None               # the branch's bytes are let go too
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [busy.data]
    proxy.receive(ack_of(req, busy.msg))
    assert proxy.take() == []


def test_transport_failure_after_the_transaction_ended_goes_nowhere():
    """A transport failure reported for a branch whose transaction is gone: the 503 made for it
    is not forwarded statelessly to the UAC (which has its answer already)."""
    proxy = forking(1)
    _, (b1,) = start(proxy, 1)
    answer(proxy, b1, 200)
    proxy.take()
    proxy.advance(60)
    assert proxy.idle()
    proxy.fail(b1, "connection reset")
    assert proxy.take() == []


def test_transport_failure_of_a_stateless_forward_is_477_upstream():
    """A request forwarded statelessly (forward()) that cannot leave: OpenSER's 477 goes back
    along the Vias, tm does not take it."""
    proxy = FakeProxy("route { forward(); }")
    proxy.receive(invite(method="OPTIONS"))
    sent, = proxy.take()
    proxy.fail(sent, "connection refused")
    out, = proxy.take()
    assert status(out) == 477 and (out.dest.host, out.dest.port) == UAC


def test_2xx_of_a_canceled_branch_after_the_server_transaction_ended():
    """16.7 step 5: every 2xx is forwarded, however late: branch 1's 200 went upstream and the
    server transaction let go after wt_timer (RFC 6026 Timer L); branch 2, CANCELed but still
    alive (its CANCEL got lost), answers 200 after that: the UAC must get it (to ACK and BYE
    that second dialog), as it would if the branch were gone too (stateless forwarding)."""
    proxy = forking(2)
    _, (b1, b2) = start(proxy)
    answer(proxy, b2, 180)
    answer(proxy, b1, 200)
    assert sorted(methods(proxy.take())) == ["180", "200", "CANCEL"]
    proxy.advance(10)
    assert not proxy.layer.servers
    assert any(c.key[0] == b2.msg.top_via.branch for c in proxy.layer.clients.values())
    answer(proxy, b2, 200, to_tag="late")
    late = responses(proxy.take())
    assert [(status(s), s.msg.to.tag) for s in late] == [(200, "late")]
    assert (late[0].dest.host, late[0].dest.port) == UAC


def test_transport_failure_of_our_cancel_or_ack_goes_nowhere():
    """The CANCEL and the ACK we send are ours: a transport failure of either tells the UAC
    nothing (an ACK has no response at all, 17.1.1.3; the CANCEL was answered by us, 16.10)."""
    proxy = FakeProxy("""route { t_relay(); }""")
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(cancel_of(req))
    cancel, = requests(proxy.take())
    proxy.fail(cancel, "connection refused")
    assert proxy.take() == []
    proxy.receive(reply_to(branch, 487), src=UAS)
    ack, terminated = proxy.take()
    proxy.fail(ack, "connection refused")
    assert proxy.take() == []
