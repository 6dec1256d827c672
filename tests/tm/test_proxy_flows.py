"""The stateful proxy's basic flows over the fake network (harness.py)."""

from .harness import UAS, FakeProxy, ack_of, cancel_of, invite, reply_to, status

RELAY = """
route {
    if (loose_route()) { t_relay(); exit; }
    if (method=="INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); }
}
"""


def test_invite_is_relayed_with_100_and_replies_go_back():
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    out = proxy.take()
    assert [s.first_line for s in out] == ["INVITE sip:bob@10.0.0.2 SIP/2.0", "SIP/2.0 100 Trying"]
    branch = out[0]
    assert branch.msg.top_via.branch.startswith("z9hG4bKtm")
    assert branch.msg.header("record-route") == "<sip:127.0.0.1:5060;lr;ftag=a1>"
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.receive(reply_to(branch, 200), src=UAS)
    ringing, ok = proxy.take()
    assert (status(ringing), status(ok)) == (180, 200)
    assert ok.msg.top_via.branch == parse_branch(req)       # our Via is gone
    assert (ok.dest.host, ok.dest.port) == ("10.0.0.1", 5062)


def parse_branch(text):
    from pyproxy.sip import parse_message
    return parse_message(text.encode()).top_via.branch


def test_retransmitted_invite_is_absorbed_and_the_last_reply_resent():
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, trying = proxy.take()
    proxy.receive(req)
    again, = proxy.take()
    assert again.data == trying.data
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    proxy.receive(req)
    assert [status(s) for s in proxy.take()] == [180]


def test_non_2xx_is_acked_hop_by_hop_and_the_upstream_ack_absorbed():
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 486), src=UAS)
    ack, busy = proxy.take()
    assert ack.first_line == "ACK sip:bob@10.0.0.2 SIP/2.0" and status(busy) == 486
    assert ack.msg.top_via.branch == branch.msg.top_via.branch
    proxy.receive(ack_of(req, busy.msg))
    assert proxy.take() == []                       # absorbed, not relayed


def test_cancel_before_the_answer():
    proxy = FakeProxy(RELAY)
    req = invite()
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    proxy.receive(cancel_of(req))
    ok, cancel = sorted(proxy.take(), key=lambda s: s.first_line.startswith("CANCEL"))
    assert status(ok) == 200 and ok.msg.cseq[1] == "CANCEL"
    assert cancel.first_line == "CANCEL sip:bob@10.0.0.2 SIP/2.0"
    assert cancel.msg.top_via.branch == branch.msg.top_via.branch
    proxy.receive(reply_to(cancel, 200), src=UAS)
    proxy.receive(reply_to(branch, 487), src=UAS)
    ack, terminated = proxy.take()
    assert ack.first_line.startswith("ACK") and status(terminated) == 487


def test_no_answer_at_all_is_408_after_fr_timer_and_no_cancel():
    proxy = FakeProxy(RELAY, 'modparam("tm", "fr_timer", 3)\n')
    proxy.receive(invite())
    branch, _ = proxy.take()
    out = proxy.advance(2.9)
    assert all(s.first_line.startswith("INVITE") for s in out) and len(out) == 2     # Timer A: 0.5, 1.5
    out = proxy.advance(0.2)
    assert [status(s) for s in out] == [408]


def test_ringing_without_answer_is_canceled_after_fr_inv_timer():
    proxy = FakeProxy(RELAY, 'modparam("tm", "fr_inv_timer", 5)\n')
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    out = proxy.advance(5.1)
    assert sorted(s.first_line.split()[0] for s in out) == ["CANCEL", "SIP/2.0"]
    assert [status(s) for s in out if s.first_line.startswith("SIP")] == [408]


def test_failure_route_forks_serially():
    proxy = FakeProxy("""
route { t_on_failure("1"); t_relay(); }
failure_route[1] {
    if (t_check_status("486")) { rewritehostport("10.0.0.3:5060"); append_hf("X-Second: yes\\r\\n"); t_relay(); }
}
""")
    proxy.receive(invite())
    first, _ = proxy.take()
    proxy.receive(reply_to(first, 486), src=UAS)
    ack, second = proxy.take()
    assert ack.first_line.startswith("ACK")
    assert second.first_line == "INVITE sip:bob@10.0.0.3:5060 SIP/2.0" and second.msg.header("x-second") == "yes"
    assert second.msg.top_via.branch != first.msg.top_via.branch
    proxy.receive(reply_to(second, 200), src=("10.0.0.3", 5060))
    assert [status(s) for s in proxy.take()] == [200]


def test_parallel_branches_200_wins_and_the_busy_one_is_absorbed():
    proxy = FakeProxy("""route { append_branch("sip:carol@10.0.0.3"); t_relay(); }""")
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    assert b2.first_line == "INVITE sip:carol@10.0.0.3 SIP/2.0"
    proxy.receive(reply_to(b2, 486), src=("10.0.0.3", 5060))
    assert [s.first_line.split()[0] for s in proxy.take()] == ["ACK"]
    proxy.receive(reply_to(b1, 200), src=UAS)
    assert [status(s) for s in proxy.take()] == [200]


def test_transport_failure_is_503_upstream_as_500():
    proxy = FakeProxy(RELAY)
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.fail(branch, "connection refused by tls:10.0.0.2:5061")
    answer, = proxy.take()
    assert status(answer) == 500
    assert "503" in answer.msg.reason and "connection refused" in answer.msg.reason
