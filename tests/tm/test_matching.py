"""How messages find their transactions (RFC 3261 17.1.3, 17.2.3; RFC 2543 peers; CANCEL, 9.1 and
16.10), and what becomes of those that find none."""

from __future__ import annotations

import pytest

from pyproxy.config.values import Proto
from pyproxy.modules.tm.keys import client_key, server_key
from pyproxy.sip import parse_message

from .harness import (UAC, UAS, UAS2, FakeProxy, ack_2xx, ack_of, cancel_of, invite, methods, reply_to,
                      requests, responses, status)

RELAY = """
route {
    if (loose_route()) { t_relay(); exit; }
    if (method=="INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); }
}
"""
FORK = """
route {
    if (loose_route()) { t_relay(); exit; }
    if (method=="INVITE") { record_route(); append_branch("sip:carol@10.0.0.3"); }
    if (!t_relay()) { sl_reply_error(); }
}
"""
V2543 = f"SIP/2.0/UDP {UAC[0]}:{UAC[1]}"          # an RFC 2543 peer: no branch at all
V2543_BRANCH = f"SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch=1234abcd"     # a branch without the cookie


def msg(text):
    return parse_message(text.encode() if isinstance(text, str) else text)


# --- keys ---------------------------------------------------------------------------------------
def test_server_key_rfc3261():
    """17.2.3: the branch, the sent-by and the method, ACK counting as INVITE."""
    req = invite(branch="z9hG4bKabc")
    assert server_key(msg(req)) == ("z9hG4bKabc", "10.0.0.1", 5062, "INVITE")
    assert server_key(msg(ack_of(req, msg(reply_to(msg(req), 486))))) == server_key(msg(req))
    assert server_key(msg(cancel_of(req)), "INVITE") == server_key(msg(req))
    assert server_key(msg(cancel_of(req))) != server_key(msg(req))
    # the same branch from another sent-by is another transaction
    other = invite(branch="z9hG4bKabc", via="SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKabc")
    assert server_key(msg(other)) != server_key(msg(req))


@pytest.mark.parametrize("via", [V2543, V2543_BRANCH, f"SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch=z9hG4bK"])
def test_server_key_rfc2543(via):
    """17.2.3: without the magic cookie the Request-URI, From tag, Call-ID, CSeq number and top
    Via identify the transaction; the To tag is not part of it (the ACK of our final response
    has one), the method is (ACK as INVITE)."""
    req = invite(via=via, call_id="c1@x")
    key = server_key(msg(req))
    final = msg(reply_to(msg(req), 486, to_tag="t9"))
    assert server_key(msg(ack_of(req, final))) == key
    assert server_key(msg(cancel_of(req)), "INVITE") == key
    assert server_key(msg(invite(via=via, call_id="c1@x", cseq=2))) != key
    assert server_key(msg(invite(via=via, call_id="c2@x"))) != key
    assert server_key(msg(invite("sip:other@10.0.0.2", via=via, call_id="c1@x"))) != key


def test_client_key_is_branch_and_cseq_method():
    """17.1.3: a response matches the client transaction with its top Via's branch and its CSeq
    method (a CANCEL shares the INVITE's branch)."""
    r = msg(reply_to(msg(invite(branch="z9hG4bKzz")), 200))
    assert client_key(r) == ("z9hG4bKzz", "INVITE")
    r = msg(reply_to(msg(cancel_of(invite(branch="z9hG4bKzz"))), 200))
    assert client_key(r) == ("z9hG4bKzz", "CANCEL")


# --- requests: retransmissions, ACK ----------------------------------------------------------------
@pytest.mark.parametrize("via", [None, V2543, V2543_BRANCH], ids=["rfc3261", "rfc2543", "2543-branch"])
def test_invite_retransmission_is_absorbed_and_the_last_reply_resent(via):
    """17.2.1: an INVITE retransmission in Proceeding gets the last provisional response again
    and is not relayed again; 17.2.3 matching, with and without the magic cookie."""
    proxy = FakeProxy(RELAY)
    req = invite(via=via)
    proxy.receive(req)
    branch, trying = proxy.take()
    proxy.receive(req)
    again, = proxy.take()
    assert again.data == trying.data and (again.dest.host, again.dest.port) == UAC
    proxy.receive(reply_to(branch, 183), src=UAS)
    progress, = proxy.take()
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [progress.data]
    assert len(proxy.layer.servers) == 1 and len(proxy.layer.clients) == 1


@pytest.mark.parametrize("via", [None, V2543], ids=["rfc3261", "rfc2543"])
def test_ack_of_a_non_2xx_is_absorbed(via):
    """17.2.1/17.2.3: the ACK of our own non-2xx final response ends at the transaction (hop by
    hop); the downstream one was ACKed by the client transaction (17.1.1.3). Timer G stops."""
    proxy = FakeProxy(RELAY)
    req = invite(via=via)
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 404), src=UAS)
    ack_down, notfound = proxy.take()
    assert ack_down.first_line.startswith("ACK ") and status(notfound) == 404
    proxy.receive(ack_of(req, notfound.msg))
    assert proxy.take() == []
    proxy.receive(ack_of(req, notfound.msg))        # and its retransmission (Confirmed)
    assert proxy.take() == []
    assert proxy.advance(4) == []                   # Timer G stopped


@pytest.mark.parametrize("via", [None, V2543], ids=["rfc3261", "rfc2543"])
def test_rfc2543_final_retransmission_resent(via):
    """17.2.1 Completed: an INVITE retransmission gets the final response again."""
    proxy = FakeProxy(RELAY)
    req = invite(via=via)
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS)
    _, busy = proxy.take()
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [busy.data]


def test_ack_downstream_matches_the_branch():
    """17.1.1.3: the ACK of a non-2xx has the INVITE's Request-URI, top Via (branch), From,
    Call-ID, CSeq number (method ACK) and the response's To (with its tag); it goes where the
    INVITE went."""
    proxy = FakeProxy(RELAY)
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486, to_tag="uas-tag"), src=UAS)
    ack, _ = proxy.take()
    a, b = ack.msg, branch.msg
    assert ack.first_line == f"ACK {b.ruri} SIP/2.0"
    assert a.header_values("via") == [b.header_values("via")[0]]
    assert (a.call_id, a.cseq, a.from_.tag, a.to.tag) == (b.call_id, (b.cseq[0], "ACK"), b.from_.tag, "uas-tag")
    assert ack.dest == branch.dest
    assert a.header("record-route") is None


def test_retransmitted_downstream_final_is_acked_again_not_forwarded():
    """17.1.1.2: a retransmission of a final response in Completed is ACKed again and not passed
    up (so not forwarded upstream twice)."""
    proxy = FakeProxy(RELAY)
    proxy.receive(invite())
    branch, _ = proxy.take()
    reply = reply_to(branch, 486)
    proxy.receive(reply, src=UAS)
    ack, busy = proxy.take()
    proxy.receive(reply, src=UAS)
    proxy.receive(reply, src=UAS)
    assert [s.data for s in proxy.take()] == [ack.data, ack.data]


@pytest.mark.parametrize("method", ["OPTIONS", "MESSAGE", "BYE", "REGISTER"])
def test_non_invite_retransmissions(method):
    """17.2.2: a retransmission in Trying is discarded (nothing relayed again, nothing sent); in
    Completed it gets the final response again."""
    proxy = FakeProxy(RELAY)
    req = invite(method=method)
    proxy.receive(req)
    branch, = proxy.take()
    proxy.receive(req)
    assert proxy.take() == []
    proxy.receive(reply_to(branch, 200), src=UAS)
    ok, = proxy.take()
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [ok.data]


def test_non_invite_retransmission_in_proceeding_gets_the_provisional():
    """17.2.2: in Proceeding a retransmission gets the last provisional response."""
    proxy = FakeProxy(RELAY)
    req = invite(method="MESSAGE")
    proxy.receive(req)
    branch, = proxy.take()
    proxy.receive(reply_to(branch, 182), src=UAS)
    queued, = proxy.take()
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [queued.data]


@pytest.mark.parametrize("record_route", [True, False])
def test_ack_of_a_2xx_goes_to_the_script_and_end_to_end(record_route):
    """17.2.3/13.2.2.4: the ACK of a 2xx is a transaction of its own (a new branch): it is not
    absorbed but goes through the script, which relays it statelessly (t_relay of an ACK makes no
    transaction): along the route set by loose_route() when record-routed, else to its
    Request-URI."""
    proxy = FakeProxy(RELAY if record_route else "route { t_relay(); }")
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 200), src=UAS)
    ok, = proxy.take()
    routes = ok.msg.header_values("record-route")[::-1]
    assert bool(routes) is record_route
    proxy.receive(ack_2xx(req, ok.msg, ruri="sip:bob@10.0.0.2:5070", routes=routes))
    ack, = proxy.take()
    assert ack.first_line == "ACK sip:bob@10.0.0.2:5070 SIP/2.0"
    assert (ack.dest.host, ack.dest.port) == ("10.0.0.2", 5070)
    assert ack.msg.header("route") is None              # our Route was consumed
    assert len(ack.msg.vias) == 2
    clients = len(proxy.layer.clients)
    assert clients == 1                                 # no transaction for the ACK


def test_ack_of_a_2xx_from_an_rfc2543_peer_goes_to_the_script():
    """17.2.3: an RFC 2543 peer's ACK of a 2xx may find the INVITE by its identifiers; the INVITE
    server transaction is in Accepted (RFC 6026), and the ACK is passed up, not absorbed."""
    proxy = FakeProxy("route { t_relay(); }")
    req = invite(via=V2543)
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 200), src=UAS)
    ok, = proxy.take()
    proxy.receive(ack_of(req, ok.msg))          # same Via (no branch), same R-URI
    ack, = proxy.take()
    assert ack.first_line.startswith("ACK ") and (ack.dest.host, ack.dest.port) == ("10.0.0.2", None)


def test_invite_retransmission_after_2xx_is_absorbed_silently():
    """RFC 6026 7.1: "Any retransmissions of the INVITE received while in the Accepted state MUST
    NOT be passed to the TU" (the UAS retransmits its 2xx itself)."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 200), src=UAS)
    proxy.take()
    proxy.receive(req)
    assert proxy.take() == []


# --- CANCEL ---------------------------------------------------------------------------------------
def test_cancel_of_a_forked_invite_cancels_every_branch():
    """16.10: a CANCEL matching a response context is answered 200 at once and every pending
    branch is CANCELed; 9.1: each CANCEL has the Request-URI, Call-ID, From, To, CSeq number of
    its branch and one Via, the branch's top Via."""
    proxy = FakeProxy(FORK)
    req = invite()
    proxy.receive(req)
    b1, b2, _ = proxy.take()
    proxy.receive(reply_to(b1, 180), src=UAS)
    proxy.receive(reply_to(b2, 180, to_tag="c1"), src=UAS2)
    proxy.take()
    proxy.receive(cancel_of(req))
    out = proxy.take()
    ok, = responses(out)
    assert status(ok) == 200 and ok.msg.cseq[1] == "CANCEL" and (ok.dest.host, ok.dest.port) == UAC
    cancels = requests(out)
    assert len(cancels) == 2
    for cancel, branch in zip(sorted(cancels, key=lambda s: s.dest.host), (b1, b2)):
        c, b = cancel.msg, branch.msg
        assert cancel.first_line == f"CANCEL {b.ruri} SIP/2.0"
        assert c.header_values("via") == [b.header_values("via")[0]]
        assert (c.call_id, c.cseq, c.header("from"), c.header("to")) == \
            (b.call_id, (b.cseq[0], "CANCEL"), b.header("from"), b.header("to"))
        assert cancel.dest == branch.dest
    # the 487s: ACKed downstream, one 487 upstream
    for branch, src in ((b1, UAS), (b2, UAS2)):
        proxy.receive(reply_to(branch, 487), src=src)
    out = proxy.take()
    assert methods(out) == ["ACK", "ACK", "487"]


def test_cancel_without_invite_is_481():
    """16.10: "If a response context is not found, the element does not have any knowledge of
    the request to apply the CANCEL to" -- 481, nothing sent downstream."""
    proxy = FakeProxy(RELAY)
    proxy.receive(cancel_of(invite()))
    out = proxy.take()
    assert methods(out) == ["481"] and out[0].msg.cseq[1] == "CANCEL"


def test_cancel_retransmission_gets_the_200_again():
    """17.2.2: the CANCEL is a non-INVITE transaction: a retransmission gets its 200 again and
    CANCELs nothing twice."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    proxy.receive(cancel_of(req))
    out = proxy.take()
    ok, = responses(out)
    proxy.receive(cancel_of(req))
    assert [s.data for s in proxy.take()] == [ok.data]


def test_cancel_before_any_provisional_waits_for_one():
    """9.1: "If no provisional response has been received, the CANCEL request MUST NOT be sent;
    rather, the client MUST wait for the arrival of a provisional response before sending the
    request." The 200 goes upstream at once (16.10); the CANCEL when the 100 comes."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(cancel_of(req))
    assert methods(proxy.take()) == ["200"]
    proxy.advance(0.4)
    assert proxy.take() == []
    proxy.receive(reply_to(branch, 100), src=UAS)
    cancel, = proxy.take()
    assert cancel.first_line.startswith("CANCEL ") and cancel.msg.top_via.branch == branch.msg.top_via.branch
    proxy.receive(reply_to(cancel, 200), src=UAS)
    proxy.receive(reply_to(branch, 487), src=UAS)
    assert methods(proxy.take()) == ["ACK", "487"]


def test_cancel_before_any_provisional_stops_no_retransmission_until_then():
    """9.1 with 17.1.1.2: until a provisional response the INVITE is still retransmitted (and
    not CANCELed)."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(cancel_of(req))
    proxy.take()
    assert methods(proxy.advance(1.6)) == ["INVITE", "INVITE"]


def test_rfc2543_cancel_matches_its_invite():
    """17.2.3 for CANCEL: an RFC 2543 CANCEL matches the INVITE with the same identifiers."""
    proxy = FakeProxy(RELAY)
    req = invite(via=V2543)
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    proxy.receive(cancel_of(req))
    assert sorted(methods(proxy.take())) == ["200", "CANCEL"]


def test_the_200_of_our_cancel_is_absorbed():
    """17.1.3: a response matches by branch and CSeq method: the 200 of the CANCEL we sent
    belongs to the CANCEL's client transaction and is not forwarded upstream (the UAC got its
    200 from us, 16.10)."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(cancel_of(req))
    cancel, = requests(proxy.take())
    proxy.receive(reply_to(cancel, 200), src=UAS)
    assert proxy.take() == []
    proxy.receive(reply_to(cancel, 200), src=UAS)       # retransmitted: absorbed too
    assert proxy.take() == []


def test_a_reply_with_our_branch_but_another_method_does_not_match():
    """17.1.3: "the method parameter in the CSeq header field matches the method of the request
    that created the transaction": a 200 for "CANCEL" with an INVITE branch, when we sent no
    CANCEL, belongs to no transaction: forwarded statelessly, the INVITE is left alone."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    fake = reply_to(branch, 200).replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    proxy.receive(fake, src=UAS)
    out = proxy.take()
    assert [(s.msg.status, s.msg.cseq[1]) for s in out] == [(200, "CANCEL")]
    server, = proxy.layer.servers.values()
    assert not server.final_status


# --- responses without a transaction ------------------------------------------------------------
def test_reply_without_a_transaction_is_forwarded_by_its_via():
    """A response no client transaction takes (a stateless branch, or one long gone) is forwarded
    statelessly along its Vias, ours removed (RFC 3261 18.2.2/16.11, as OpenSER)."""
    proxy = FakeProxy(RELAY)
    req = invite(method="OPTIONS").replace(
        "Via: ", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKstateless1\r\nVia: ", 1)
    proxy.receive(reply_to(msg(req), 200), src=UAS)
    out, = proxy.take()
    assert status(out) == 200 and (out.dest.host, out.dest.port) == UAC
    assert len(out.msg.vias) == 1


def test_reply_whose_top_via_is_not_ours_is_dropped():
    proxy = FakeProxy(RELAY)
    req = invite(method="OPTIONS").replace(
        "Via: ", "Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKnotours\r\nVia: ", 1)
    proxy.receive(reply_to(msg(req), 200), src=UAS)
    assert proxy.take() == []


def test_2xx_flood_each_forwarded_once():
    """RFC 6026 7.2 / RFC 3261 13.3.1.4: the UAS retransmits its 2xx until the ACK; in Accepted
    every 2xx is passed up and forwarded (the UAC needs them), one out for one in, and the
    transaction still ends by Timer M/L."""
    proxy = FakeProxy(RELAY)
    proxy.receive(invite())
    branch, _ = proxy.take()
    ok = reply_to(branch, 200)
    for _ in range(25):
        proxy.receive(ok, src=UAS)
    out = proxy.take()
    assert len(out) == 25 and len({s.data for s in out}) == 1 and status(out[0]) == 200
    assert all((s.dest.host, s.dest.port) == UAC for s in out)
    proxy.advance(6)
    assert proxy.idle()


def test_late_2xx_after_the_transaction_is_gone_is_still_forwarded():
    """16.7: "If none [no client transaction] is found, the element MUST process the response
    ... as a stateless proxy": a 2xx retransmission arriving after Timer M let the branch go
    still reaches the UAC (RFC 6026 7.2 counts on it)."""
    proxy = FakeProxy(RELAY)
    proxy.receive(invite())
    branch, _ = proxy.take()
    ok = reply_to(branch, 200)
    proxy.receive(ok, src=UAS)
    first, = proxy.take()
    proxy.advance(60)
    assert proxy.idle()
    proxy.receive(ok, src=UAS)
    late, = proxy.take()
    assert status(late) == 200 and (late.dest.host, late.dest.port) == UAC
    assert late.msg.top_via.branch == first.msg.top_via.branch


def test_late_2xx_of_another_branch_after_a_final_is_forwarded():
    """16.7 step 5: every 2xx of every branch goes upstream, even after the transaction sent its
    final response (the UAC may get two dialogs)."""
    proxy = FakeProxy(FORK)
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    proxy.receive(reply_to(b1, 200), src=UAS)
    proxy.take()
    proxy.receive(reply_to(b2, 200, to_tag="second"), src=UAS2)
    late, = proxy.take()
    assert status(late) == 200 and late.msg.to.tag == "second"


def test_requests_over_tcp_match_too():
    """Matching does not depend on the transport: an INVITE retransmitted over TCP (a client
    transaction that resent it) is still absorbed."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req, proto=Proto.TCP)
    _, trying = proxy.take()
    proxy.receive(req, proto=Proto.TCP)
    assert [s.data for s in proxy.take()] == [trying.data]


def test_cancel_before_provisional_sends_one_cancel_for_several_provisionals():
    """9.1: the pending CANCEL goes once, on the first provisional response; a 180 after it is
    still forwarded (no final response went upstream yet)."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(cancel_of(req))
    proxy.take()
    proxy.receive(reply_to(branch, 100), src=UAS)
    proxy.receive(reply_to(branch, 180), src=UAS)
    out = proxy.take()
    assert methods(out) == ["CANCEL", "180"]


def test_2xx_after_cancel_is_forwarded():
    """9.2/16.7 step 5: a UAS that answered 200 before the CANCEL reached it: the 2xx still goes
    upstream (the UAC then ACKs and BYEs), and no 487 is made up."""
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(cancel_of(req))
    cancel, = requests(proxy.take())
    proxy.receive(reply_to(branch, 200), src=UAS)
    proxy.receive(reply_to(cancel, 200), src=UAS)
    out = proxy.take()
    assert methods(out) == ["200"] and out[0].msg.cseq[1] == "INVITE"
    proxy.advance(60)
    assert proxy.idle()


# --- where responses go (RFC 3261 18.2.2, RFC 3581) ------------------------------------------------
@pytest.mark.parametrize("via,src,proto,dest", [
    # rport: to the source address and port, every response, retransmissions too
    ("SIP/2.0/UDP 192.168.1.5:5062;rport;branch=z9hG4bKnat1", ("10.0.0.1", 40000), Proto.UDP,
     (Proto.UDP, "10.0.0.1", 40000)),
    # no rport: to the source address (received=), the Via's port
    ("SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKnat2", ("10.0.0.1", 40000), Proto.UDP,
     (Proto.UDP, "10.0.0.1", 5062)),
    # a reliable transport: back on the connection it came on
    (None, ("10.0.0.1", 40001), Proto.TCP, (Proto.TCP, "10.0.0.1", 40001)),
], ids=["rport", "received", "tcp"])
def test_responses_go_where_18_2_2_says(via, src, proto, dest):
    """The 100 Trying, the forwarded responses and Timer G's retransmissions of the final one
    all go to the same place: 18.2.2 (received=), RFC 3581 (rport), the connection (TCP)."""
    proxy = FakeProxy(RELAY)
    proxy.receive(invite(via=via), src=src, proto=proto)
    branch, trying = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(reply_to(branch, 486), src=UAS)
    out = [trying] + responses(proxy.take()) + proxy.advance(2)
    assert [status(s) for s in out][:3] == [100, 180, 486]
    assert {(s.dest.proto, s.dest.host, s.dest.port) for s in out} == {dest}


def test_cancel_and_ack_carry_the_branch_route_set():
    """9.1: "If the request being cancelled contains a Route header field, the CANCEL request
    MUST include that Route header field's values"; 17.1.1.3: so must the ACK of a non-2xx.
    Both go where the branch went (the first Route, not the Request-URI)."""
    proxy = FakeProxy(RELAY)
    req = invite(extra="Route: <sip:10.0.0.7;lr>\r\n")
    proxy.receive(req)
    branch, _ = proxy.take()
    assert (branch.dest.host, branch.dest.port) == ("10.0.0.7", None)
    assert branch.msg.header_values("route") == ["<sip:10.0.0.7;lr>"]
    proxy.receive(reply_to(branch, 180), src=("10.0.0.7", 5060))
    proxy.receive(cancel_of(req))
    cancel, = requests(proxy.take())
    assert cancel.msg.header_values("route") == ["<sip:10.0.0.7;lr>"] and cancel.dest == branch.dest
    proxy.receive(reply_to(branch, 487), src=("10.0.0.7", 5060))
    ack, _ = proxy.take()
    assert ack.msg.header_values("route") == ["<sip:10.0.0.7;lr>"] and ack.dest == branch.dest


def test_a_spiral_is_two_transactions():
    """16.3 step 4 / 16.6: a request that comes back to the proxy (a spiral: sent to ourselves
    with another Request-URI) is a new transaction -- our own Via branch is its key -- and the
    responses find their way back through both."""
    proxy = FakeProxy("""
route {
    if (uri=~"^sip:alice@127") { rewriteuri("sip:bob@127.0.0.1:5060"); t_relay(); exit; }
    if (uri=~"^sip:bob@127") { rewritehostport("10.0.0.2:5060"); t_relay(); exit; }
    sl_send_reply("404", "Not Here");
}
""")
    req = invite("sip:alice@127.0.0.1")
    proxy.receive(req)
    first, trying = proxy.take()
    assert (first.dest.host, first.dest.port) == ("127.0.0.1", 5060) and status(trying) == 100
    proxy.receive(first.data, src=("127.0.0.1", 5060))
    second, trying2 = proxy.take()
    assert second.first_line == "INVITE sip:bob@10.0.0.2:5060 SIP/2.0" and len(second.msg.vias) == 3
    assert (trying2.dest.host, trying2.dest.port) == ("127.0.0.1", 5060)
    assert len(proxy.layer.servers) == 2 and len(proxy.layer.clients) == 2
    proxy.receive(reply_to(second, 180), src=UAS)
    up1, = proxy.take()
    assert (up1.dest.host, up1.dest.port) == ("127.0.0.1", 5060) and len(up1.msg.vias) == 2
    proxy.receive(up1.data, src=("127.0.0.1", 5060))
    up2, = proxy.take()
    assert status(up2) == 180 and (up2.dest.host, up2.dest.port) == UAC and len(up2.msg.vias) == 1
