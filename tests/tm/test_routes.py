"""The script and tm: failure_route (serial forking, RFC 3261 16.7 step 6 / 16.6), onreply_route,
branch_route, t_newtran, t_reply, sl replies on a transaction, t_relay's destinations and its
failures, and the script variables $T_reply_code and $T_branch_idx."""

from __future__ import annotations

import pytest

from pyproxy.config.values import Proto
from pyproxy.sip import parse_message

from .harness import (HEAD, HEAD_XLOG, UAC, UAS, UAS2, FakeProxy, ack_2xx, ack_of, cancel_of, invite, methods,
                      reply_to, requests, responses, status)


def proxy_of(route: str, modparams: str = "") -> FakeProxy:
    return FakeProxy(route, modparams, head=HEAD_XLOG)


def logs(proxy, prefix):
    return [text[len(prefix):] for _, text in proxy.runtime.logs if text.startswith(prefix)]


# --- failure_route ----------------------------------------------------------------------------------
SERIAL = """
route { t_on_failure("1"); t_relay(); }
failure_route[1] {
    xlog("L_INFO", "F: code=$T_reply_code\\n");
    if (t_branch_timeout()) { xlog("L_INFO", "F: timeout\\n"); }
    if (t_was_cancelled()) { xlog("L_INFO", "F: cancelled\\n"); exit; }
    if (t_check_status("4[0-9][0-9]")) {
        rewritehostport("10.0.0.3:5060");
        append_hf("X-Second: yes\\r\\n");
        t_relay();
    }
}
"""


@pytest.mark.parametrize("code", [404, 480, 486])
def test_failure_route_forks_serially_on_4xx(code):
    """16.6/16.7 step 6: when every branch has a final response and none was 2xx, failure_route
    may forward the request again (serial forking): $T_reply_code is the status that ended the
    branch, t_check_status() matches it; the new branch has a Via branch of its own and the
    edits made in failure_route."""
    proxy = proxy_of(SERIAL)
    proxy.receive(invite())
    first, _ = proxy.take()
    proxy.receive(reply_to(first, code), src=UAS)
    ack, second = proxy.take()
    assert ack.first_line.startswith("ACK") and ack.dest == first.dest
    assert second.first_line == "INVITE sip:bob@10.0.0.3:5060 SIP/2.0" and second.msg.header("x-second") == "yes"
    assert second.msg.top_via.branch != first.msg.top_via.branch
    assert first.msg.header("x-second") is None
    assert logs(proxy, "F: ") == [f"code={code}"]
    proxy.receive(reply_to(second, 200), src=UAS2)
    assert methods(proxy.take()) == ["200"]


def test_failure_route_not_matching_lets_the_best_go():
    """failure_route that does nothing: the best response goes upstream (16.7 step 6); a lone
    503 as 500."""
    proxy = proxy_of(SERIAL)
    proxy.receive(invite())
    first, _ = proxy.take()
    proxy.receive(reply_to(first, 503), src=UAS)
    out = proxy.take()
    assert methods(out) == ["ACK", "500"]
    assert logs(proxy, "F: ") == ["code=503"]


def test_failure_route_after_a_timeout():
    """16.8: a branch that never answered ends as a 408 made here: $T_reply_code is 408 and
    t_branch_timeout() is true."""
    proxy = proxy_of(SERIAL, 'modparam("tm", "fr_timer", 2)\n')
    proxy.receive(invite())
    proxy.take()
    out = proxy.advance(2.01)
    second, = [s for s in out if s.first_line.startswith("INVITE sip:bob@10.0.0.3")]
    assert logs(proxy, "F: ") == ["code=408", "timeout"]
    proxy.receive(reply_to(second, 486), src=UAS2)
    # the second failure: failure_route is not armed again, the best of (408 made here, 486) goes
    out = proxy.take()
    assert methods(out) == ["ACK", "486"]


def test_failure_route_after_cancel():
    """16.10: after a CANCEL the branches end 487: t_was_cancelled() is true, the script does not
    fork again and the 487 goes upstream."""
    proxy = proxy_of(SERIAL)
    req = invite()
    proxy.receive(req)
    first, _ = proxy.take()
    proxy.receive(reply_to(first, 180), src=UAS)
    proxy.receive(cancel_of(req))
    cancel, = requests(proxy.take())
    proxy.receive(reply_to(cancel, 200), src=UAS)
    proxy.receive(reply_to(first, 487), src=UAS)
    assert methods(proxy.take()) == ["ACK", "487"]
    assert logs(proxy, "F: ") == ["code=487", "cancelled"]


def test_t_relay_in_failure_route_of_a_canceled_transaction_makes_no_new_branch():
    """16.10: once a CANCEL matched the response context (answered 200, every pending branch
    CANCELed), the request is not forwarded to new targets -- a new branch would ring a phone for
    a call its caller gave up; OpenSER's t_forward_nonack() refused it too ("do not forward
    requests which were already cancelled"). t_relay() fails in failure_route and the 487 goes
    upstream."""
    proxy = proxy_of("""
route { t_on_failure("1"); t_relay(); }
failure_route[1] { rewritehostport("10.0.0.3:5060"); t_relay(); }
""")
    req = invite()
    proxy.receive(req)
    first, _ = proxy.take()
    proxy.receive(reply_to(first, 180), src=UAS)
    proxy.receive(cancel_of(req))
    proxy.take()
    proxy.receive(reply_to(first, 487), src=UAS)
    out = proxy.take()
    assert [s.first_line.split()[0] for s in requests(out)] == ["ACK"]
    assert methods(responses(out)) == ["487"]


def test_serial_forking_through_three_targets():
    """failure_route runs once per arming: it re-arms itself with t_on_failure() to go on
    (OpenSER's rule); script flags persist across the transaction."""
    proxy = proxy_of("""
route { t_on_failure("1"); t_relay(); }
failure_route[1] {
    if (isflagset(1)) { rewritehostport("10.0.0.4:5060"); t_relay(); exit; }
    setflag(1);
    t_on_failure("1");
    rewritehostport("10.0.0.3:5060");
    t_relay();
}
""")
    proxy.receive(invite())
    b1, _ = proxy.take()
    proxy.receive(reply_to(b1, 486), src=UAS)
    _, b2 = proxy.take()
    assert b2.dest.host == "10.0.0.3"
    proxy.receive(reply_to(b2, 480), src=UAS2)
    _, b3 = proxy.take()
    assert b3.dest.host == "10.0.0.4"
    assert len({b.msg.top_via.branch for b in (b1, b2, b3)}) == 3
    proxy.receive(reply_to(b3, 200), src=("10.0.0.4", 5060))
    assert methods(proxy.take()) == ["200"]


def test_failure_route_t_reply():
    """failure_route may answer the request itself instead of the branches' best response."""
    proxy = proxy_of("""
route { t_on_failure("1"); t_relay(); }
failure_route[1] { t_reply("404", "Nobody Here"); }
""")
    req = invite()
    proxy.receive(req)
    first, _ = proxy.take()
    proxy.receive(reply_to(first, 486), src=UAS)
    ack, answer = proxy.take()
    assert answer.first_line == "SIP/2.0 404 Nobody Here" and answer.msg.to.tag
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [answer.data]       # the retransmission gets it again
    proxy.receive(ack_of(req, answer.msg))
    assert proxy.take() == []


def test_failure_route_doing_nothing():
    proxy = proxy_of("""
route { append_branch("sip:carol@10.0.0.3"); t_on_failure("1"); t_relay(); }
failure_route[1] { xlog("L_INFO", "F: $T_reply_code\\n"); }
""")
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    proxy.receive(reply_to(b1, 404), src=UAS)
    proxy.receive(reply_to(b2, 486), src=UAS2)
    assert methods(proxy.take()) == ["ACK", "ACK", "404"]
    assert logs(proxy, "F: ") == ["404"]          # the best one's code


def test_failure_route_is_not_run_after_a_2xx():
    proxy = proxy_of("""
route { append_branch("sip:carol@10.0.0.3"); t_on_failure("1"); t_relay(); }
failure_route[1] { xlog("L_INFO", "F: ran\\n"); }
""")
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    proxy.receive(reply_to(b1, 200), src=UAS)
    proxy.receive(reply_to(b2, 486), src=UAS2)
    assert methods(proxy.take()) == ["200", "ACK"]
    assert logs(proxy, "F: ") == []


# --- onreply_route ----------------------------------------------------------------------------------
def test_onreply_route_sees_every_reply_with_its_branch():
    """t_on_reply(): onreply_route[N] runs on each reply of the transaction's branches, with
    $T_reply_code and $T_branch_idx (and $rs)."""
    proxy = proxy_of("""
route { append_branch("sip:carol@10.0.0.3"); t_on_reply("1"); t_relay(); }
onreply_route[1] { xlog("L_INFO", "R: $T_reply_code idx=$T_branch_idx rs=$rs\\n"); }
""")
    proxy.receive(invite())
    b1, b2, _ = proxy.take()
    proxy.receive(reply_to(b2, 180), src=UAS2)
    proxy.receive(reply_to(b1, 486), src=UAS)
    proxy.receive(reply_to(b2, 200), src=UAS2)
    assert logs(proxy, "R: ") == ["180 idx=1 rs=180", "486 idx=0 rs=486", "200 idx=1 rs=200"]
    assert methods(proxy.take()) == ["180", "ACK", "200"]


def test_onreply_route_drops_a_provisional():
    """drop in onreply_route stops a provisional reply from going upstream."""
    proxy = proxy_of("""
route { t_on_reply("1"); t_relay(); }
onreply_route[1] { if (status=="183") { drop; } }
""")
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 183), src=UAS)
    assert proxy.take() == []
    proxy.receive(reply_to(branch, 180), src=UAS)
    assert methods(proxy.take()) == ["180"]
    proxy.receive(reply_to(branch, 200), src=UAS)
    assert methods(proxy.take()) == ["200"]


def test_onreply_route_cannot_drop_a_2xx():
    """16.7 step 5: a 2xx "MUST" be forwarded: a drop in onreply_route does not stop it."""
    proxy = proxy_of("""
route { t_on_reply("1"); t_relay(); }
onreply_route[1] { drop; }
""")
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 200), src=UAS)
    assert methods(proxy.take()) == ["200"]


def test_onreply_route_edits_reach_the_forwarded_reply():
    proxy = proxy_of("""
route { t_on_reply("1"); t_relay(); }
onreply_route[1] { append_hf("X-Seen: $T_branch_idx\\r\\n"); }
""")
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    ringing, = proxy.take()
    assert ringing.msg.header("x-seen") is not None


def test_onreply_route_sees_the_request_flags_and_the_main_onreply_route_runs_too():
    proxy = proxy_of("""
route { setflag(3); t_on_reply("1"); t_relay(); }
onreply_route { xlog("L_INFO", "R0: $rs\\n"); }
onreply_route[1] { if (isflagset(3)) { xlog("L_INFO", "R1: flag\\n"); } }
""")
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    assert logs(proxy, "R0: ") == ["180"] and logs(proxy, "R1: ") == ["flag"]


def test_branch_idx_is_null_in_the_request_route():
    proxy = proxy_of("""route { xlog("L_INFO", "B: [$T_branch_idx] [$T_reply_code]\\n"); t_relay(); }""")
    proxy.receive(invite())
    assert logs(proxy, "B: ") == ["[<null>] [<null>]"]


# --- branch_route -----------------------------------------------------------------------------------
def test_branch_route_edits_stay_on_their_branch():
    """t_on_branch(): branch_route[N] runs once per branch before it leaves ($T_branch_idx); its
    edits (headers, Request-URI, $du) belong to that branch only (16.6: each copy is made from
    the request as it was)."""
    proxy = proxy_of("""
route { append_branch("sip:carol@10.0.0.3"); append_branch("sip:dave@10.0.0.4"); t_on_branch("1"); t_relay(); }
branch_route[1] {
    xlog("L_INFO", "B: $T_branch_idx $ru\\n");
    if ($T_branch_idx == 0) { append_hf("X-Zero: yes\\r\\n"); }
    if ($T_branch_idx == 1) { rewritehostport("10.0.0.8:5070"); }
    if ($T_branch_idx == 2) { $du = "sip:10.0.0.9:5080"; }
}
""")
    proxy.receive(invite())
    b0, b1, b2, _ = proxy.take()
    assert logs(proxy, "B: ") == ["0 sip:bob@10.0.0.2", "1 sip:carol@10.0.0.3", "2 sip:dave@10.0.0.4"]
    assert b0.msg.header("x-zero") == "yes"
    assert b1.msg.header("x-zero") is None and b2.msg.header("x-zero") is None
    assert b1.first_line == "INVITE sip:carol@10.0.0.8:5070 SIP/2.0" and (b1.dest.host, b1.dest.port) == ("10.0.0.8", 5070)
    assert b2.first_line == "INVITE sip:dave@10.0.0.4 SIP/2.0" and (b2.dest.host, b2.dest.port) == ("10.0.0.9", 5080)
    assert (b0.dest.host, b0.dest.port) == ("10.0.0.2", None)


def test_branch_route_record_route_stays_on_its_branch():
    """record_route() in branch_route asks for a Record-Route on that branch only."""
    proxy = proxy_of("""
route { append_branch("sip:carol@10.0.0.3"); t_on_branch("1"); t_relay(); }
branch_route[1] { if ($T_branch_idx == 0) { record_route(); } }
""")
    proxy.receive(invite())
    b0, b1, _ = proxy.take()
    assert b0.msg.header("record-route") is not None
    assert b1.msg.header("record-route") is None


def test_branch_route_edits_do_not_leak_into_failure_route():
    proxy = proxy_of("""
route { t_on_branch("1"); t_on_failure("2"); t_relay(); }
branch_route[1] { append_hf("X-Branch: $T_branch_idx\\r\\n"); }
failure_route[2] { xlog("L_INFO", "F: $ru\\n"); rewritehostport("10.0.0.3:5060"); t_relay(); }
""")
    proxy.receive(invite())
    b0, _ = proxy.take()
    assert b0.msg.header("x-branch") == "0"
    proxy.receive(reply_to(b0, 486), src=UAS)
    _, b1 = proxy.take()
    assert logs(proxy, "F: ") == ["sip:bob@10.0.0.2"]
    # branch_route stays armed for the new branch (index 1); branch 0's header is not there
    assert b1.msg.header_values("x-branch") in ([], ["1"])


def test_branch_route_drops_a_branch():
    """drop in branch_route: that branch does not leave, the others do."""
    proxy = proxy_of("""
route { append_branch("sip:carol@10.0.0.3"); t_on_branch("1"); t_relay(); }
branch_route[1] { if (uri=~"carol") { drop; } }
""")
    proxy.receive(invite())
    out = proxy.take()
    assert methods(out) == ["INVITE", "100"] and out[0].dest.host == "10.0.0.2"
    assert len(proxy.layer.clients) == 1
    proxy.receive(reply_to(out[0], 486), src=UAS)
    assert methods(proxy.take()) == ["ACK", "486"]


def test_branch_route_dropping_every_branch():
    """No branch left: t_relay() fails (-1), the transaction is forgotten and the script answers
    statelessly (sl_reply_error)."""
    proxy = proxy_of("""
route { t_on_branch("1"); if (!t_relay()) { setflag(1); sl_reply_error(); } }
branch_route[1] { drop; }
""")
    ctx = proxy.receive(invite())
    out = proxy.take()
    assert ctx.flags & (1 << 1)
    assert len(responses(out)) == 1 and requests(out) == [] and status(out[0]) >= 400
    assert not proxy.layer.servers and not proxy.layer.clients


# --- t_newtran, t_reply, sl on a transaction ----------------------------------------------------------
@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
def test_t_newtran_then_exit_is_500(method):
    """A transaction the script made and left without a reply or a branch is answered 500, so
    that the UAC does not retransmit into the void; its retransmissions get the same 500."""
    proxy = proxy_of("route { t_newtran(); exit; }")
    req = invite(method=method)
    proxy.receive(req)
    answer, = proxy.take()
    assert status(answer) == 500 and "without a reply" in answer.msg.reason
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [answer.data]


def test_t_newtran_then_drop_sends_nothing_and_forgets():
    proxy = proxy_of("route { t_newtran(); drop; }")
    req = invite()
    proxy.receive(req)
    assert proxy.take() == []
    assert not proxy.layer.servers


def test_script_exception_after_t_newtran_is_500():
    """A bug in the script (here: a function raising) after t_newtran(): the transaction is still
    answered 500 before the error propagates (the worker logs it and goes on)."""
    proxy = proxy_of('route { t_newtran(); xlog("L_INFO", "boom\\n"); }')
    real = proxy.runtime.log

    def log(level, text):
        if text == "boom":
            raise RuntimeError("script bug")
        real(level, text)
    proxy.runtime.log = log
    with pytest.raises(RuntimeError):
        proxy.receive(invite())
    assert methods(proxy.take()) == ["500"]


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE"])
def test_t_reply(method):
    """t_reply() answers on the transaction: the retransmission gets the reply again (17.2.1,
    17.2.2) and it is not relayed."""
    proxy = proxy_of('route { t_reply("404", "Not Here"); }')
    req = invite(method=method)
    proxy.receive(req)
    answer, = proxy.take()
    assert answer.first_line == "SIP/2.0 404 Not Here" and answer.msg.to.tag
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [answer.data]
    assert len(proxy.layer.servers) == 1 and not proxy.layer.clients


def test_t_reply_provisional_then_final():
    proxy = proxy_of('route { t_reply("180", "Ringing"); t_reply("486", "Busy Here"); t_reply("500", "Again"); }')
    req = invite()
    proxy.receive(req)
    assert methods(proxy.take()) == ["180", "486"]


def test_sl_send_reply_after_t_newtran_goes_through_the_transaction():
    """sl_send_reply() on a request that has a transaction answers through it: the 500 of an
    unanswered transaction does not follow, and retransmissions get the reply again."""
    proxy = proxy_of('route { t_newtran(); sl_send_reply("404", "Nope"); }')
    req = invite(method="OPTIONS")
    proxy.receive(req)
    answer, = proxy.take()
    assert answer.first_line == "SIP/2.0 404 Nope"
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [answer.data]


def test_second_final_reply_is_refused():
    proxy = proxy_of("""route { t_newtran(); sl_send_reply("404", "Nope");
                               if (!sl_send_reply("486", "Busy")) { setflag(1); } }""")
    ctx = proxy.receive(invite())
    assert methods(proxy.take()) == ["404"]
    assert ctx.flags & (1 << 1)


def test_sl_reply_error_after_a_failed_t_relay_goes_through_no_transaction():
    proxy = proxy_of('route { $du = "sip:10.0.0.9:5080"; if (!t_relay()) { sl_reply_error(); } }')
    proxy.runtime.refuse.add(("10.0.0.9", 5080))
    proxy.receive(invite())
    out = proxy.take()
    assert methods(out) == ["477"]


# --- t_relay --------------------------------------------------------------------------------------------
def test_t_relay_twice_fails():
    """A second t_relay() in the same route: -1 (the request was relayed already), nothing sent
    twice."""
    proxy = proxy_of("route { t_relay(); if (!t_relay()) { setflag(2); } }")
    ctx = proxy.receive(invite())
    assert methods(proxy.take()) == ["INVITE", "100"]
    assert ctx.flags & (1 << 2)
    assert len(proxy.layer.clients) == 1


def test_t_relay_after_t_reply_fails():
    proxy = proxy_of('route { t_reply("404", "No"); if (!t_relay()) { setflag(2); } }')
    ctx = proxy.receive(invite())
    assert methods(proxy.take()) == ["404"]
    assert ctx.flags & (1 << 2)


def test_t_relay_of_an_ack_makes_no_transaction():
    """An ACK (of a 2xx) is relayed statelessly (17: no transaction for an ACK); t_newtran() on
    one fails."""
    proxy = proxy_of('route { if (!t_newtran()) { setflag(1); } t_relay(); }')
    req = invite()
    ok = parse_message(reply_to(parse_message(req.encode()), 200))
    ctx = proxy.receive(ack_2xx(req, ok, ruri="sip:bob@10.0.0.2:5070"))
    out, = proxy.take()
    assert out.first_line == "ACK sip:bob@10.0.0.2:5070 SIP/2.0" and (out.dest.host, out.dest.port) == ("10.0.0.2", 5070)
    assert len(out.msg.vias) == 2
    assert ctx.flags & (1 << 1)
    assert not proxy.layer.servers and not proxy.layer.clients


@pytest.mark.parametrize("call,proto,host,port,via", [
    ('t_relay("tcp:10.0.0.9:5070")', Proto.TCP, "10.0.0.9", 5070, "SIP/2.0/TCP 127.0.0.1:5060"),
    ('t_relay("udp:10.0.0.9:5070")', Proto.UDP, "10.0.0.9", 5070, "SIP/2.0/UDP 127.0.0.1:5060"),
    ('t_relay("10.0.0.9:5070")', Proto.UDP, "10.0.0.9", 5070, "SIP/2.0/UDP 127.0.0.1:5060"),
    ('t_relay("tls:10.0.0.9:5061")', Proto.TLS, "10.0.0.9", 5061, "SIP/2.0/TLS 127.0.0.1:5061"),
    ('t_relay_to_tls("10.0.0.9", "5061")', Proto.TLS, "10.0.0.9", 5061, "SIP/2.0/TLS 127.0.0.1:5061"),
    ('t_relay_to_tcp("10.0.0.9", "5090")', Proto.TCP, "10.0.0.9", 5090, "SIP/2.0/TCP 127.0.0.1:5060"),
    ('t_relay_to_udp("10.0.0.9", "5090")', Proto.UDP, "10.0.0.9", 5090, "SIP/2.0/UDP 127.0.0.1:5060"),
    ('t_relay_to_tcp()', Proto.TCP, "10.0.0.2", None, "SIP/2.0/TCP 127.0.0.1:5060"),
])
def test_t_relay_destinations(call, proto, host, port, via):
    """t_relay("proto:host:port") and t_relay_to_*(): the branch goes there, by that transport,
    with a Via naming it (18.1.1: the Via's transport is the one the request leaves by); the
    Request-URI is not changed."""
    proxy = proxy_of(f"route {{ {call}; }}")
    proxy.receive(invite())
    out = proxy.take()
    branch = requests(out)[0]
    assert branch.dest.proto is proto and (branch.dest.host, branch.dest.port) == (host, port)
    assert branch.first_line == "INVITE sip:bob@10.0.0.2 SIP/2.0"
    assert branch.msg.header_values("via")[0].startswith(via + ";branch=z9hG4bK")
    assert methods(responses(out)) == ["100"]
    # replies come back on the branch and go upstream
    proxy.receive(reply_to(branch, 486), src=(host, port or 5060), proto=proto)
    assert methods(proxy.take()) == ["ACK", "486"]


def test_t_relay_no_100_flag():
    """t_relay(1): OpenSER's flag 0x01: no 100 Trying."""
    proxy = proxy_of("route { t_relay(1); }")
    proxy.receive(invite())
    assert methods(proxy.take()) == ["INVITE"]


def test_t_relay_failing_synchronously():
    """t_relay() whose only branch cannot be sent returns -1: sl_reply_error() answers 477 and no
    transaction (nor timer) is left."""
    proxy = proxy_of("route { if (!t_relay()) { sl_reply_error(); } }")
    proxy.runtime.refuse.add(("10.0.0.2", None))
    req = invite()
    proxy.receive(req)
    out = proxy.take()
    assert [s.first_line for s in out] == ["SIP/2.0 477 Unfortunately error on sending to next hop occurred"]
    assert not proxy.layer.servers and not proxy.layer.clients
    proxy.advance(60)
    assert proxy.take() == []
    assert proxy.idle()


def test_t_relay_failing_synchronously_then_retransmission_tried_again():
    """With no transaction left, a retransmission goes through the script again (and may now
    succeed)."""
    proxy = proxy_of("route { if (!t_relay()) { sl_reply_error(); } }")
    proxy.runtime.refuse.add(("10.0.0.2", None))
    req = invite()
    proxy.receive(req)
    proxy.take()
    proxy.runtime.refuse.clear()
    proxy.receive(req)
    assert methods(proxy.take()) == ["INVITE", "100"]


def test_t_relay_to_unsupported_scheme():
    proxy = proxy_of("route { if (!t_relay()) { sl_reply_error(); } }")
    proxy.receive(invite("tel:+15551234"))
    out = proxy.take()
    assert methods(out) == ["416"]
    assert not proxy.layer.servers


# --- t_check_trans ----------------------------------------------------------------------------------
def test_t_check_trans_for_cancel():
    """t_check_trans() on a CANCEL: true when its INVITE has a transaction here."""
    proxy = proxy_of("""
route {
    if (method=="CANCEL") {
        if (t_check_trans()) { t_relay(); exit; }
        sl_send_reply("481", "No Such Call");
        exit;
    }
    t_relay();
}
""")
    req = invite()
    proxy.receive(cancel_of(req))
    assert [s.first_line for s in proxy.take()] == ["SIP/2.0 481 No Such Call"]
    proxy.receive(req)
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    proxy.take()
    proxy.receive(cancel_of(req))
    assert sorted(methods(proxy.take())) == ["200", "CANCEL"]


def test_t_check_trans_in_onreply_route():
    proxy = proxy_of("""
route { t_relay(); }
onreply_route { if (t_check_trans()) { xlog("L_INFO", "T: yes $rs\\n"); } else { xlog("L_INFO", "T: no $rs\\n"); } }
""")
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 180), src=UAS)
    stray = invite(method="OPTIONS").replace("Via: ", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother\r\nVia: ", 1)
    proxy.receive(reply_to(parse_message(stray.encode()), 200), src=UAS)
    assert logs(proxy, "T: ") == ["yes 180", "no 200"]
    assert [(s.dest.host, s.dest.port) for s in proxy.take()] == [UAC, UAC]


def test_t_reply_code_in_the_request_route_after_t_reply():
    """$T_reply_code in a request route: the final status the transaction sent."""
    proxy = proxy_of('route { t_reply("404", "No"); xlog("L_INFO", "C: $T_reply_code\\n"); }')
    proxy.receive(invite())
    assert logs(proxy, "C: ") == ["404"]


def test_failure_route_relay_refused_lets_the_best_go():
    """A new branch in failure_route that cannot be sent: t_relay() fails there and the best
    response so far goes upstream."""
    proxy = proxy_of("""
route { t_on_failure("1"); t_relay(); }
failure_route[1] { rewritehostport("10.0.0.3:5060"); if (!t_relay()) { xlog("L_INFO", "F: refused\\n"); } }
""")
    proxy.runtime.refuse.add(("10.0.0.3", 5060))
    proxy.receive(invite())
    first, _ = proxy.take()
    proxy.receive(reply_to(first, 486), src=UAS)
    assert methods(proxy.take()) == ["ACK", "486"]
    assert logs(proxy, "F: ") == ["refused"]
    assert len(proxy.layer.clients) == 1


def test_failure_route_raising_lets_the_best_go():
    """A bug in failure_route is logged and the best response goes upstream: the UAC is never
    left without an answer."""
    proxy = proxy_of("""
route { t_on_failure("1"); t_relay(); }
failure_route[1] { xlog("L_INFO", "boom\\n"); }
""")
    real = proxy.runtime.log

    def log(level, text):
        if text == "boom":
            raise RuntimeError("script bug")
        real(level, text)
    proxy.runtime.log = log
    proxy.receive(invite())
    first, _ = proxy.take()
    proxy.receive(reply_to(first, 486), src=UAS)
    assert methods(proxy.take()) == ["ACK", "486"]


def test_t_newtran_then_t_relay_failing_answers_through_the_transaction():
    """With a transaction made first, a t_relay() that cannot send leaves it in place: the
    script's sl_reply_error() answers on it (477), and a retransmission gets that answer again
    rather than running the script a second time."""
    proxy = proxy_of("route { t_newtran(); if (!t_relay()) { xlog(\"L_INFO\", \"S: failed\\n\"); sl_reply_error(); } }")
    proxy.runtime.refuse.add(("10.0.0.2", None))
    req = invite()
    proxy.receive(req)
    answer, = proxy.take()
    assert status(answer) == 477
    proxy.receive(req)
    assert [s.data for s in proxy.take()] == [answer.data]
    assert logs(proxy, "S: ") == ["failed"]


def test_t_check_status_in_onreply_and_request_routes():
    proxy = proxy_of("""
route { t_on_reply("1"); t_relay(); }
onreply_route[1] { if (t_check_status("18[0-9]")) { xlog("L_INFO", "S: ringing $rs\\n"); } }
""")
    proxy.receive(invite())
    branch, _ = proxy.take()
    proxy.receive(reply_to(branch, 183), src=UAS)
    proxy.receive(reply_to(branch, 486), src=UAS)
    assert logs(proxy, "S: ") == ["ringing 183"]
    proxy = proxy_of('route { t_reply("486", "Busy"); if (t_check_status("^486$")) { xlog("L_INFO", "S: 486\\n"); } }')
    proxy.receive(invite())
    assert logs(proxy, "S: ") == ["486"]


def test_branch_idx_of_a_serial_branch():
    """$T_branch_idx counts every branch of the transaction: the one failure_route adds after
    two parallel ones is 2."""
    proxy = proxy_of("""
route { append_branch("sip:carol@10.0.0.3"); t_on_failure("1"); t_on_reply("2"); t_relay(); }
failure_route[1] { rewritehostport("10.0.0.4:5060"); t_relay(); }
onreply_route[2] { xlog("L_INFO", "I: $T_branch_idx $rs\\n"); }
""")
    proxy.receive(invite())
    b0, b1, _ = proxy.take()
    proxy.receive(reply_to(b0, 486), src=UAS)
    proxy.receive(reply_to(b1, 486), src=UAS2)
    b2, = requests(proxy.take())[-1:]
    proxy.receive(reply_to(b2, 180), src=("10.0.0.4", 5060))
    assert logs(proxy, "I: ") == ["0 486", "1 486", "2 180"]


def test_sip_warning_is_added_once_whether_or_not_tm_answers():
    """sip_warning=yes: one Warning header on a stateless reply to a request tm has seen, and on
    a reply through its transaction."""
    proxy = FakeProxy('route { if (method=="OPTIONS") { sl_send_reply("404", "Nope"); exit; } '
                      't_newtran(); sl_send_reply("486", "Busy"); }', head="sip_warning=yes\n" + HEAD)
    proxy.receive(invite(method="OPTIONS"))
    proxy.receive(invite())
    stateless, stateful = proxy.take()
    assert (status(stateless), status(stateful)) == (404, 486)
    assert [len(s.msg.header_values("warning")) for s in (stateless, stateful)] == [1, 1]
