"""Messages the transaction layer has no transaction for, or that test its matching: a CANCEL
or an ACK for nothing, a reply for no transaction, RFC 2543 peers (no z9hG4bK cookie), a flood
of 2xx for one INVITE, retransmissions that arrive right after the final reply. Each gets its
RFC answer, and the proxy still answers OPTIONS over UDP and TCP afterwards with the workers
it started with.

One stateful proxy with one worker (module-scoped), so that `Peer.settle` is a barrier."""

import time

import pytest

from ._harness import LOOP, Reaper, start_proxy
from ._stateful import (
    SDP,
    WAIT,
    Call,
    Peer,
    assert_sound,
    build_request,
    hangup,
    new_branch,
    new_call_id,
    place_call,
    stateful_route,
)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    reaper = Reaper()
    try:
        p = start_proxy(reaper, tmp_path_factory.mktemp("stateful_bad_input"), 1, route=stateful_route())
        p.initial = p.workers()
        yield p
    finally:
        reaper.stop_all()


@pytest.fixture
def peers(proxy):
    """(caller, callee) on UDP; afterwards the proxy must still be sound and serving."""
    caller, callee = Peer("alice"), Peer("bob")
    yield caller, callee
    caller.close()
    callee.close()
    assert proxy.answers() == (200, 200), proxy.tail()
    assert_sound(proxy, proxy.initial)


def test_a_cancel_for_nothing_is_answered_481(proxy, peers):
    """A CANCEL whose INVITE the proxy never saw: 481 (RFC 3261 16.10: no response context)."""
    caller, callee = peers
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    call.cancel()
    reply = caller.expect("481 CANCEL", call.call_id)
    assert reply.msg.to.tag, "a final response needs a To tag"
    caller.settle(proxy.port)
    assert len(caller.all("481", call.call_id)) == 1 and not caller.all("2xx", call.call_id), caller.inbox


def test_an_ack_for_nothing_gets_no_reply(proxy, peers):
    """An ACK that matches no transaction is never answered (RFC 3261 17.2.3 / 17.1.1.3); it
    is at most relayed on, statelessly, as an end-to-end ACK."""
    caller, callee = peers
    call_id = new_call_id("ack")
    caller.send(build_request("ACK", f"sip:bob@{LOOP}:{callee.port}", via=caller.via(), call_id=call_id, cseq=1,
                              from_tag="a1", to_tag="nobody"), proxy.port)
    caller.settle(proxy.port)
    assert not caller.all("100", call_id) and not [g for g in caller.inbox if g.call_id == call_id], caller.inbox
    assert len(callee.all("ACK", call_id)) <= 1, callee.inbox


@pytest.mark.parametrize("branch", ["z9hG4bKnothing", "z9hG4bKtm1.2.3"], ids=["foreign", "stateful-looking"])
def test_a_reply_for_no_transaction_is_forwarded_by_its_via(proxy, peers, branch):
    """A 200 whose top Via is ours but whose branch matches no transaction goes on statelessly
    by the next Via, without ours (as OpenSER did)."""
    caller, callee = peers
    call_id = new_call_id("stray")
    reply = (f"SIP/2.0 200 OK\r\n"
             f"Via: SIP/2.0/UDP {LOOP}:{proxy.port};branch={branch}\r\n"
             f"Via: {caller.via()}\r\n"
             f"From: <sip:alice@{LOOP}>;tag=a1\r\nTo: <sip:bob@{LOOP}>;tag=b1\r\n"
             f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{LOOP}:{callee.port}>\r\n"
             f"Content-Length: 0\r\n\r\n").encode()
    callee.send(reply, proxy.port)
    got = caller.expect("200 INVITE", call_id)
    assert len(got.msg.vias) == 1 and got.msg.top_via.port == caller.port, got.raw


@pytest.mark.parametrize("branch", ["1234abcd", ""], ids=["old-branch", "no-branch"])
def test_rfc2543_matching_absorbs_retransmissions_and_the_ack(proxy, peers, branch):
    """A peer without the z9hG4bK cookie (RFC 2543): its transaction is matched by Request-URI,
    From tag, Call-ID, CSeq and Via (RFC 3261 17.2.3). The retransmitted INVITE is absorbed and
    the 180 sent again; the ACK of the 486 is absorbed (the callee gets the proxy's own only)."""
    caller, callee = peers
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}", branch=branch)
    cid = call.call_id
    call.invite()
    invite = callee.expect("INVITE", cid)
    callee.answer(invite, 180)
    ringing = caller.expect("180", cid)
    call.send(call.invite_bytes)
    assert caller.expect("180", cid).raw == ringing.raw
    callee.answer(invite, 486)
    busy = caller.expect("486", cid)
    assert busy.msg.top_via.branch == (branch or None)
    call.ack_failure(busy)
    caller.settle(proxy.port)
    assert len(callee.all("INVITE", cid)) == 1, callee.inbox
    assert len(callee.all("ACK", cid)) == 1, callee.inbox
    assert callee.all("ACK", cid)[0].branch == invite.branch      # the proxy's, hop by hop


def test_a_flood_of_200s_for_one_invite(proxy, peers):
    """The callee sends the 200 of one INVITE 50 times (and 10 more from another fork, with
    another To tag): each is forwarded or absorbed, none is lost in a crash, and the call goes
    on: ACK and BYE through the proxy."""
    caller, callee = peers
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    cid = call.call_id
    call.invite()
    invite = callee.expect("INVITE", cid)
    for _ in range(50):
        callee.answer(invite, 200, body=SDP)
    for _ in range(10):
        callee.answer(invite, 200, tag="fork2", body=SDP)
    call.accepted(caller.expect("200 INVITE", cid))
    call.ack()
    callee.expect("ACK", cid)
    hangup(call, callee)
    caller.settle(proxy.port)
    oks = caller.all("200 INVITE", cid)
    assert 1 <= len(oks) <= 60, len(oks)
    print(f"{len(oks)} of 60 200 OKs reached the caller")


def test_a_retransmission_right_after_the_final_reply(proxy, peers):
    """A non-INVITE request sent again just after its 200 came: the transaction (Completed,
    waiting out wt_timer) sends the 200 again and the callee sees the request once. An INVITE
    sent again just after its 200: absorbed (RFC 6026 Accepted), the callee sees it once."""
    caller, callee = peers
    call_id = new_call_id("late")
    options = build_request("OPTIONS", f"sip:bob@{LOOP}:{callee.port}", via=caller.via(new_branch()),
                            call_id=call_id, cseq=1, from_tag="a1")
    caller.send(options, proxy.port)
    callee.answer(callee.expect("OPTIONS", call_id), 200)
    first = caller.expect("200 OPTIONS", call_id)
    caller.send(options, proxy.port)
    assert caller.expect("200 OPTIONS", call_id).raw == first.raw

    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    call.invite()
    invite = callee.expect("INVITE", call.call_id)
    callee.answer(invite, 200, body=SDP)
    call.accepted(caller.expect("200 INVITE", call.call_id))
    call.send(call.invite_bytes)
    call.ack()
    callee.expect("ACK", call.call_id)
    hangup(call, callee)
    caller.settle(proxy.port)
    assert len(callee.all("OPTIONS", call_id)) == 1, callee.inbox
    assert len(callee.all("INVITE", call.call_id)) == 1, callee.inbox


def test_a_retransmission_over_tcp_while_the_transaction_is_deleted(proxy, peers):
    """Over TCP a transaction is deleted as soon as its final reply left (no wait state, RFC 3261
    17.2.2): the same request sent again right after the 200 is either absorbed by the
    transaction being deleted (200 sent again) or a new request (relayed and answered again);
    either way the caller gets its 200."""
    _, callee = peers
    caller = Peer("carol", "tcp", connect=proxy.port)
    try:
        call_id = new_call_id("tcp")
        options = build_request("OPTIONS", f"sip:bob@{LOOP}:{callee.port}", via=caller.via(new_branch()),
                                call_id=call_id, cseq=1, from_tag="c1")
        caller.send(options)
        callee.answer(callee.expect("OPTIONS", call_id), 200)
        first = caller.expect("200 OPTIONS", call_id)
        caller.send(options)
        deadline = time.monotonic() + WAIT
        while len(caller.all("200 OPTIONS", call_id)) < 2:
            assert time.monotonic() < deadline, f"no 200 for the request sent again\n{caller.inbox}\n{callee.inbox}"
            for got in callee.all("OPTIONS", call_id)[1:]:
                if not got.answered:
                    got.answered = True
                    callee.answer(got, 200)
            caller.pump(0.05)
        caller.settle(proxy.port)
        assert len(callee.all("OPTIONS", call_id)) <= 2
        assert all(g.raw.split(b"\r\n")[0] == first.raw.split(b"\r\n")[0] for g in caller.all("200 OPTIONS", call_id))
    finally:
        caller.close()


def test_calls_still_complete_afterwards(proxy, peers):
    """After all of the above, a call through the proxy still works."""
    caller, callee = peers
    call = Call(caller, proxy.port, f"sip:bob@{LOOP}:{callee.port}")
    place_call(call, callee)
    hangup(call, callee)
