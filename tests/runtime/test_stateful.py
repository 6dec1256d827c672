"""The transaction-stateful proxy (tm) between a raw caller and raw callees over UDP: CANCEL,
serial and parallel forking, the timers that end a call nobody answers, retransmissions, and
transport failures that end a branch. One worker (children=1), so that `Peer.settle` is a
barrier: after it, whatever the proxy sent is in the peers' inboxes, and the tests can assert
what did *not* arrive."""

import time

import pytest

from ._harness import LOOP, free_port
from ._stateful import SDP, Call, Peer, assert_sound, build_request, hangup, new_call_id, stateful_route, uri_of
from .test_tls_calls import tls_extra


@pytest.fixture
def peers():
    """peers("alice", "bob", ...) -> UDP peers, closed at the end of the test."""
    made = []

    def make(*names):
        made.extend(Peer(n) for n in names)
        return made[-len(names):] if len(names) > 1 else made[-1]
    yield make
    for p in made:
        p.close()


def test_cancel_before_the_answer(proxy_factory, peers):
    """The caller's CANCEL gets 200 from the proxy and its INVITE 487; the callee gets a CANCEL
    from the proxy, hop by hop (the branch and Request-URI of the INVITE the proxy sent it), and
    the proxy's ACK of its 487. Neither the callee's 200 to the CANCEL nor the caller's ACK go
    any further."""
    proxy = proxy_factory(children=1, route=stateful_route())
    workers = proxy.workers()
    caller, callee = peers("alice", "bob")
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    cid = call.call_id
    call.invite()
    caller.expect("100", cid)
    invite = callee.expect("INVITE", cid)
    callee.answer(invite, 180)
    caller.expect("180", cid)

    call.cancel()
    caller.expect("200 CANCEL", cid)
    cancel = callee.expect("CANCEL", cid)
    assert (cancel.branch, cancel.msg.ruri, cancel.cseq) == (invite.branch, invite.msg.ruri, (1, "CANCEL"))
    assert cancel.msg.to.tag is None and cancel.msg.from_.tag == call.from_tag
    callee.answer(cancel, 200)
    callee.answer(invite, 487)
    final = caller.expect("487 INVITE", cid)
    ack = callee.expect("ACK", cid)
    assert (ack.branch, ack.cseq, ack.msg.to.tag) == (invite.branch, (1, "ACK"), "bob-tag")
    call.ack_failure(final)

    caller.settle(proxy.port)
    assert len(caller.all("200 CANCEL", cid)) == 1, caller.inbox
    assert len(callee.all("ACK", cid)) == 1 and len(callee.all("CANCEL", cid)) == 1, callee.inbox
    assert_sound(proxy, workers)


def test_a_cancel_before_any_provisional_waits_for_one(proxy_factory, peers):
    """A CANCEL that comes before the callee said anything: the caller gets 200 at once, but the
    proxy CANCELs the branch only once a provisional response came (RFC 3261 9.1); then the
    call ends with 487 as above."""
    proxy = proxy_factory(children=1, route=stateful_route())
    workers = proxy.workers()
    caller, callee = peers("alice", "bob")
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    cid = call.call_id
    call.invite()
    invite = callee.expect("INVITE", cid)
    caller.expect("100", cid)
    call.cancel()
    caller.expect("200 CANCEL", cid)
    caller.settle(proxy.port)
    assert not callee.all("CANCEL", cid), "the branch was CANCELed before it sent a provisional response"

    callee.answer(invite, 180)
    cancel = callee.expect("CANCEL", cid)
    assert (cancel.branch, cancel.cseq) == (invite.branch, (1, "CANCEL"))
    callee.answer(cancel, 200)
    callee.answer(invite, 487)
    call.ack_failure(caller.expect("487 INVITE", cid))
    assert callee.expect("ACK", cid).branch == invite.branch
    caller.settle(proxy.port)
    assert len(callee.all("ACK", cid)) == 1, callee.inbox
    assert_sound(proxy, workers)


def test_a_busy_callee_and_failure_route_sends_the_call_elsewhere(proxy_factory, peers):
    """Serial forking: the first callee answers 486; the proxy ACKs it, and failure_route[1]
    (armed by t_on_failure) sees $T_reply_code 486 and relays the INVITE to a second callee,
    where the call is answered, acknowledged and hung up. The caller never hears the 486."""
    caller, busy, other = peers("alice", "busy", "other")
    route = stateful_route(body='    if ($rU=="serial") t_on_failure("1");', routes=f"""
failure_route[1] {{
    if (t_check_status("486")) {{
        rewritehostport("{LOOP}:{other.port}");
        append_hf("X-Failed: $T_reply_code\\r\\n");
        t_relay();
    }}
}}""")
    proxy = proxy_factory(children=1, route=route)
    workers = proxy.workers()
    call = Call(caller, proxy.port, f"sip:serial@{LOOP}:{busy.port}")
    cid = call.call_id
    call.invite()
    first = busy.expect("INVITE", cid)
    busy.answer(first, 486)
    ack = busy.expect("ACK", cid)
    assert (ack.branch, ack.msg.to.tag) == (first.branch, "busy-tag")

    second = other.expect("INVITE", cid)
    assert second.msg.ruri == f"sip:serial@{LOOP}:{other.port}" and second.msg.header("X-Failed") == "486"
    assert second.branch != first.branch and second.msg.header_values("record-route")
    other.answer(second, 180)
    caller.expect("180", cid)
    other.answer(second, 200, body=SDP)
    ok = caller.expect("200 INVITE", cid)
    call.accepted(ok)
    assert call.route and uri_of(call.route[0]).port == proxy.port
    call.ack()
    other.expect("ACK", cid)
    hangup(call, other)

    caller.settle(proxy.port)
    assert not caller.all("486", cid), caller.inbox
    assert len(busy.all("ACK", cid)) == 1 and not busy.all("BYE", cid)
    assert_sound(proxy, workers)


def test_a_callee_that_never_answers_times_out_without_a_cancel(proxy_factory, peers):
    """fr_timer=2: no reply at all from the callee; the caller hears 408 after about 2 s. The
    callee, which sent no provisional response, gets no CANCEL (RFC 3261 9.1), only the INVITE
    and its retransmissions (one branch)."""
    proxy = proxy_factory(children=1, route=stateful_route(fr_timer=2))
    workers = proxy.workers()
    caller, callee = peers("alice", "bob")
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    cid = call.call_id
    started = time.monotonic()
    call.invite()
    invite = callee.expect("INVITE", cid)
    caller.expect("100", cid)
    final = caller.expect("408 INVITE", cid, timeout=20)
    assert 1.5 <= final.at - started <= 10, f"408 after {final.at - started:.1f} s, fr_timer is 2 s"
    call.ack_failure(final)

    caller.settle(proxy.port)
    assert not callee.all("CANCEL", cid), callee.inbox
    assert {g.branch for g in callee.all("INVITE", cid)} == {invite.branch}
    assert {g.status for g in caller.all("4xx", cid)} == {408}, caller.inbox     # Timer G may resend it
    assert_sound(proxy, workers)


def test_a_callee_that_rings_forever_is_canceled_after_fr_inv_timer(proxy_factory, peers):
    """fr_inv_timer=2: the callee rings and never answers. About 2 s after the 180 the proxy
    CANCELs the branch (RFC 3261 16.8) and the caller hears 408; the callee's 487 is ACKed by the
    proxy and goes no further."""
    proxy = proxy_factory(children=1, route=stateful_route(fr_inv_timer=2))
    workers = proxy.workers()
    caller, callee = peers("alice", "bob")
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    cid = call.call_id
    call.invite()
    invite = callee.expect("INVITE", cid)
    callee.answer(invite, 180)
    ringing = caller.expect("180", cid)
    cancel = callee.expect("CANCEL", cid, timeout=20)
    assert 1.5 <= cancel.at - ringing.at <= 10, f"CANCEL {cancel.at - ringing.at:.1f} s after the 180"
    assert (cancel.branch, cancel.msg.ruri) == (invite.branch, invite.msg.ruri)
    final = caller.expect("408 INVITE", cid)
    callee.answer(cancel, 200)
    callee.answer(invite, 487)
    ack = callee.expect("ACK", cid)
    assert ack.branch == invite.branch
    call.ack_failure(final)

    caller.settle(proxy.port)
    assert not caller.all("487", cid), caller.inbox
    assert_sound(proxy, workers)


def test_parallel_branches_one_answers_one_is_busy(proxy_factory, peers):
    """append_branch() then t_relay(): two branches at once. The busy one's 486 is ACKed by the
    proxy and not forwarded; the other's 200 goes to the caller and the call works."""
    caller, answers, busy = peers("alice", "answers", "busy")
    proxy = proxy_factory(children=1, route=stateful_route(
        body=f'    if ($rU=="fork") append_branch("sip:fork@{LOOP}:{busy.port}");'))
    workers = proxy.workers()
    call = Call(caller, proxy.port, f"sip:fork@{LOOP}:{answers.port}")
    cid = call.call_id
    call.invite()
    to_answer, to_busy = answers.expect("INVITE", cid), busy.expect("INVITE", cid)
    assert to_answer.branch != to_busy.branch
    assert to_busy.msg.ruri == f"sip:fork@{LOOP}:{busy.port}"
    busy.answer(to_busy, 486)
    ack = busy.expect("ACK", cid)
    assert (ack.branch, ack.msg.to.tag) == (to_busy.branch, "busy-tag")
    answers.answer(to_answer, 180)
    caller.expect("180", cid)
    answers.answer(to_answer, 200, body=SDP)
    call.accepted(caller.expect("200 INVITE", cid))
    assert call.to_tag == "answers-tag"
    call.ack()
    answers.expect("ACK", cid)
    hangup(call, answers)

    caller.settle(proxy.port)
    assert not caller.all("486", cid), caller.inbox
    assert len(busy.all("ACK", cid)) == 1 and not busy.all("CANCEL", cid), busy.inbox
    assert_sound(proxy, workers)


def test_a_retransmitted_invite_is_absorbed_and_the_last_reply_sent_again(proxy_factory, peers):
    """A UDP INVITE sent again: the callee gets it once; the caller gets the last reply again,
    the 180 while ringing, the 486 after it (T1 is 20 s here, so no timer resends anything
    during the test). The caller's ACK of the 486 is absorbed too."""
    proxy = proxy_factory(children=1, route=stateful_route(T1_timer=20000))
    workers = proxy.workers()
    caller, callee = peers("alice", "bob")
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    cid = call.call_id
    call.invite()
    invite = callee.expect("INVITE", cid)
    callee.answer(invite, 180)
    ringing = caller.expect("180", cid)
    call.send(call.invite_bytes)
    again = caller.expect("180", cid)
    assert again.raw == ringing.raw

    callee.answer(invite, 486)
    busy = caller.expect("486", cid)
    call.send(call.invite_bytes)
    again = caller.expect("486", cid)
    assert again.raw == busy.raw
    call.ack_failure(busy)

    caller.settle(proxy.port)
    assert len(callee.all("INVITE", cid)) == 1, callee.inbox
    assert len(callee.all("ACK", cid)) == 1, callee.inbox
    assert len(caller.all("486", cid)) == 2, caller.inbox
    assert_sound(proxy, workers)


def test_the_callers_ack_stops_the_retransmissions_of_the_final_reply(proxy_factory, peers):
    """Over UDP the proxy resends a non-2xx final reply (Timer G, T1=100 ms, T2=200 ms here)
    until the caller's ACK, which stops it (RFC 3261 17.2.1). The clock is the proxy's own:
    an OPTIONS to a peer that never answers is resent every 200 ms at most (Timer E), and
    after five of those no 486 may come."""
    proxy = proxy_factory(children=1, route=stateful_route(T1_timer=100, T2_timer=200))
    workers = proxy.workers()
    caller, callee, clock = peers("alice", "bob", "clock")
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    cid = call.call_id
    call.invite()
    callee.answer(callee.expect("INVITE", cid), 486)
    busy = caller.expect("486", cid)
    caller.expect("486", cid)                   # resent: Timer G runs
    call.ack_failure(busy)
    caller.settle(proxy.port)
    before = len(caller.all("486", cid))

    tick = new_call_id("clock")
    caller.send(build_request("OPTIONS", f"sip:clock@{LOOP}:{clock.port}", via=caller.via(), call_id=tick,
                              cseq=1, from_tag="t1"), proxy.port)
    for _ in range(6):
        clock.expect("OPTIONS", tick)
    caller.settle(proxy.port)
    assert len(caller.all("486", cid)) == before, f"the 486 was resent after the ACK: {caller.inbox}"
    assert len(callee.all("ACK", cid)) == 1, callee.inbox
    assert_sound(proxy, workers)


# ------------------------------------------------------------------ transport failures

CAUSE = "Server Internal Error (next hop: 503 Service Unavailable ("


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_connection_refused_ends_the_branch(proxy_factory, peers, pki, transport):
    """t_relay() to a TCP or TLS port where nothing listens: the caller hears, within a few
    seconds, 500 naming the next hop's 503 and the refused connection (RFC 3261 16.7 step 6 and
    16.9). A second INVITE to the same dead target is answered at once too."""
    tls_port = free_port()
    proxy = proxy_factory(children=1, extra=tls_extra(pki, tls_port) if transport == "tls" else "",
                          route=stateful_route())
    workers = proxy.workers()
    caller = peers("alice")
    dead = free_port()
    for attempt in range(2):
        call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{dead};transport={transport}")
        started = time.monotonic()
        call.invite()
        final = caller.expect("5xx", call.call_id)
        assert final.at - started < 5, f"answered after {final.at - started:.1f} s"
        assert final.status == 500 and final.msg.reason.startswith(CAUSE), final
        assert f"{transport}:{LOOP}:{dead}" in final.msg.reason and "refused" in final.msg.reason.lower(), \
            f"the reason does not say the connection was refused: {final.msg.reason}"
        call.ack_failure(final)
    caller.settle(proxy.port)
    assert_sound(proxy, workers)


def test_a_name_that_does_not_resolve_ends_the_branch(proxy_factory, peers, dns_zone):
    """A Request-URI host the DNS says does not exist: 500 naming the next hop's 503 and the name."""
    zone = dns_zone({})
    proxy = proxy_factory(children=1, extra=f"dns_server={LOOP}:{zone.port}\n", route=stateful_route())
    workers = proxy.workers()
    caller = peers("alice")
    call = Call(caller, proxy.port, "sip:bob@nowhere.invalid")
    call.invite()
    final = caller.expect("5xx", call.call_id)
    assert final.status == 500 and final.msg.reason.startswith(CAUSE), final
    assert "nowhere.invalid" in final.msg.reason, final.msg.reason
    call.ack_failure(final)
    caller.settle(proxy.port)
    assert_sound(proxy, workers)


def test_failure_route_sees_503_and_sends_the_call_elsewhere(proxy_factory, peers):
    """With failure_route armed, a refused TCP connection ends the branch as a 503 the script
    sees in $T_reply_code; it relays the INVITE over UDP to another callee, where the call
    completes."""
    caller, callee = peers("alice", "bob")
    route = stateful_route(body='    t_on_failure("1");', routes=f"""
failure_route[1] {{
    if (t_check_status("503")) {{
        append_hf("X-Failed: $T_reply_code\\r\\n");
        t_relay_to_udp("{LOOP}", {callee.port});
    }}
}}""")
    proxy = proxy_factory(children=1, route=route)
    workers = proxy.workers()
    dead = free_port()
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{dead};transport=tcp")
    cid = call.call_id
    call.invite()
    invite = callee.expect("INVITE", cid)
    assert invite.msg.header("X-Failed") == "503", invite.raw
    callee.answer(invite, 200, body=SDP)
    call.accepted(caller.expect("200 INVITE", cid))
    call.ack()
    callee.expect("ACK", cid)
    hangup(call, callee)
    caller.settle(proxy.port)
    assert not caller.all("5xx", cid), caller.inbox
    assert_sound(proxy, workers)


def test_a_tls_server_whose_certificate_names_another_host_is_a_failed_branch(proxy_factory, peers, pki):
    """RFC 5922: the TLS server at the target presents a certificate (valid, from our CA) that
    does not name it. Nothing is sent to it; the branch ends as a 503 that failure_route sees,
    and the call goes elsewhere."""
    b_tls = free_port()
    proxy_factory(children=1, extra=(f"disable_tls=no\nlisten=tls:{LOOP}:{b_tls}\n"
                                     f'tls_certificate="{pki}/biloxi.example.com/cert.pem"\n'
                                     f'tls_private_key="{pki}/biloxi.example.com/privkey.pem"\n'),
                  route='route { sl_send_reply("200", "OK"); }')
    caller, callee = peers("alice", "bob")
    route = stateful_route(body='    t_on_failure("1");', routes=f"""
failure_route[1] {{
    if (t_check_status("503")) {{
        append_hf("X-Failed: $T_reply_code\\r\\n");
        t_relay_to_udp("{LOOP}", {callee.port});
    }}
}}""")
    proxy = proxy_factory(children=1, route=route,
                          extra=tls_extra(pki, free_port()) + "tls_verify_server=1\n")
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{b_tls};transport=tls")
    call.invite()
    invite = callee.expect("INVITE", call.call_id)
    assert invite.msg.header("X-Failed") == "503", invite.raw
    assert "does not match 127.0.0.1 (RFC 5922)" in proxy.log(), proxy.tail()
    callee.answer(invite, 486)
    final = caller.expect("486", call.call_id)
    call.ack_failure(final)
    caller.settle(proxy.port)
