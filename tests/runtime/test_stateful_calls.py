"""Calls through the transaction-stateful proxy (tm's t_relay() with rr's record_route()): sipp
call flows over UDP, TCP and TLS, a re-INVITE, a callee that hangs up across transports, and,
with four workers, connections and transactions held by different workers and a worker killed
while it holds transactions.

Each TLS leg is sipp's (or a raw peer's) TCP through stunnel, as in test_tls_calls.py. What the
caller and the callee received is read back from sipp's message traces (-trace_msg)."""

import os
import signal
import time
import uuid

import pytest

from ._harness import LOOP, free_port, udp_options
from ._stateful import (
    SDP,
    Call,
    Peer,
    assert_sound,
    by_call,
    call_id_owned_by,
    hangup,
    place_call,
    start_sipp,
    stateful_route,
    summary,
    uri_of,
    worker_holding,
)
from .test_tls_calls import stunnel, tls_extra

CALLS, RATE = 30, 30


def record_route_uris(msg) -> list:
    return [uri_of(v) for v in msg.header_values("record-route")]


def assert_names_proxy(uri, port: int, transport: str, double: bool = False):
    """A Record-Route URI of ours: our address, the transport, loose routing (;lr)."""
    assert (uri.host, uri.port) == (LOOP, port), uri
    assert uri.params.get("transport", "udp").lower() == transport, uri
    assert "lr" in uri.params and ("r2" in uri.params) == double, uri


def assert_via_is_proxy(msg, port: int):
    via = msg.top_via
    assert (via.host, via.port) == (LOOP, port) and via.branch.startswith("z9hG4bK"), \
        f"{msg!r} did not come through the proxy (top Via {via})"


# ------------------------------------------------------------------ sipp call flows

def start_callee(reaper, folder, pki, transport, scenario_name, name="uas"):
    """A sipp UAS reached over `transport` (TLS: through a stunnel server); (sipp, the port the
    proxy sends to)."""
    if transport != "tls":
        port = free_port()
        uas = start_sipp(reaper, folder, name, scenario_name, transport, port=port,
                         keys={"tp": transport.upper(), "contact": f"{LOOP}:{port}"})
        return uas, port
    tunnel, backend = free_port(), free_port()
    uas = start_sipp(reaper, folder, name, scenario_name, "tcp", port=backend,
                     keys={"tp": "TLS", "contact": f"{LOOP}:{tunnel}"})
    stunnel(reaper, folder, "server", tunnel, backend, pki)
    return uas, tunnel


def caller_entry(reaper, folder, pki, transport, proxy, tls_port):
    """Where a sipp UAC over `transport` sends (TLS: a stunnel client in front of the proxy), and
    the sipp transport it uses."""
    if transport != "tls":
        return proxy.port, transport
    tunnel = free_port()
    stunnel(reaper, folder, "client", tunnel, tls_port, pki)
    return tunnel, "tcp"


@pytest.mark.parametrize("children", [1, 4])
@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_calls_are_record_routed_and_relayed_statefully(sipp, reaper, proxy_factory, tmp_path, pki,
                                                        transport, children):
    """INVITE/180/200/ACK/BYE through t_relay() + record_route(): the caller hears the proxy's
    100 Trying and a 200 carrying the proxy's Record-Route; the callee gets the INVITE with that
    Record-Route and the ACK and BYE through the proxy, which consumed its own Route."""
    tls_port = free_port()
    proxy = proxy_factory(children=children, extra=tls_extra(pki, tls_port) if transport == "tls" else "",
                          route=stateful_route())
    workers = proxy.workers()
    port = tls_port if transport == "tls" else proxy.port
    uas, uas_port = start_callee(reaper, tmp_path, pki, transport, "uas.xml")
    entry, uac_t = caller_entry(reaper, tmp_path, pki, transport, proxy, tls_port)
    uac = start_sipp(reaper, tmp_path, "uac", "uac.xml", uac_t, remote=entry, calls=CALLS, rate=RATE, hold_ms=100,
                     cid_prefix=f"rr{uuid.uuid4().hex[:6]}",
                     keys={"uas": f"{LOOP}:{uas_port}", "uas_tp": transport, "tp": transport.upper()})
    rc = uac.finish()
    assert rc == 0 and uac.stats().get("SuccessfulCall(C)") == str(CALLS), f"{uac.describe()}\n{proxy.tail()}"

    caller, callee = by_call(uac.received()), by_call(uas.received())
    assert len(caller) == len(callee) == CALLS, (len(caller), len(callee))
    for call_id, got in callee.items():
        kinds = summary(got)
        assert {"INVITE", "ACK", "BYE"} <= set(kinds), (call_id, kinds)
        for msg in got:
            assert_via_is_proxy(msg, port)
            assert not msg.header_values("route"), f"the proxy left its own Route in {msg!r}"
        invite = next(m for m in got if getattr(m, "method", None) == "INVITE")
        [rr] = record_route_uris(invite)
        assert_names_proxy(rr, port, transport)
        heard = summary(caller[call_id])
        assert "100 INVITE" in heard and "200 INVITE" in heard and "200 BYE" in heard, (call_id, heard)
        ok = next(m for m in caller[call_id] if summary([m]) == ["200 INVITE"])
        assert [str(u) for u in record_route_uris(ok)] == [str(rr)]
        assert len(ok.vias) == 1, f"the proxy's Via reached the caller: {ok!r}"
    assert_sound(proxy, workers)


def test_a_reinvite_follows_the_route_set(sipp, reaper, proxy_factory, tmp_path, pki):
    """A re-INVITE inside the dialog goes to the proxy named by the route set, which sends it on
    to the callee's Contact without a Record-Route of its own or the Route it consumed; its 200
    and ACK and the BYE make it through."""
    calls = 5
    proxy = proxy_factory(children=2, route=stateful_route())
    uas, uas_port = start_callee(reaper, tmp_path, pki, "udp", "uas_reinvite.xml")
    uac = start_sipp(reaper, tmp_path, "uac", "uac_reinvite.xml", "udp", remote=proxy.port, calls=calls, rate=10,
                     keys={"uas": f"{LOOP}:{uas_port}", "uas_tp": "udp", "tp": "UDP"})
    rc = uac.finish()
    assert rc == 0, f"{uac.describe()}\n{uas.describe()}\n{proxy.tail()}"
    sent = by_call([m for d, m in uac.messages() if d == "sent"])
    for call_id, got in by_call(uas.received()).items():
        reinvite = [m for m in got if getattr(m, "method", None) == "INVITE" and m.cseq[0] == 2]
        assert len(reinvite) >= 1, (call_id, summary(got))
        msg = reinvite[0]
        assert_via_is_proxy(msg, proxy.port)
        assert msg.ruri == f"sip:sipp@{LOOP}:{uas_port};transport=UDP", msg.ruri
        assert not msg.header_values("route") and not msg.header_values("record-route"), msg
        assert {(1, "ACK"), (2, "ACK")} <= {m.cseq for m in got if getattr(m, "method", None) == "ACK"}
        assert "BYE" in summary(got)
        # the caller did send it along the route set: our Record-Route, as its Route
        [routes] = [m.header_values("route") for m in sent[call_id] if getattr(m, "method", None) == "INVITE"
                    and m.cseq[0] == 2][:1]
        assert len(routes) == 1
        assert_names_proxy(uri_of(routes[0]), proxy.port, "udp")
    assert len(by_call(uas.received())) == calls


def test_udp_caller_tls_callee_double_record_route_and_the_callee_hangs_up(sipp, reaper, proxy_factory, tmp_path,
                                                                            pki):
    """UDP in, TLS out (a ;transport=tls Request-URI): two Record-Route values (RFC 5658), the
    TLS one first; the callee's BYE along them crosses back from TLS to UDP to the caller, and
    the caller's 200 goes back over TLS."""
    calls = 3
    tls_port = free_port()
    proxy = proxy_factory(children=2, extra=tls_extra(pki, tls_port), route=stateful_route())
    uas, uas_port = start_callee(reaper, tmp_path, pki, "tls", "uas_bye.xml")
    uac = start_sipp(reaper, tmp_path, "uac", "uac_wait_bye.xml", "udp", remote=proxy.port, calls=calls, rate=10,
                     keys={"uas": f"{LOOP}:{uas_port}", "uas_tp": "tls", "tp": "UDP"})
    rc = uac.finish()
    assert rc == 0, f"{uac.describe()}\n{uas.describe()}\n{proxy.tail()}"
    uas_sent = by_call([m for d, m in uas.messages() if d == "sent"])
    caller = by_call(uac.received())
    callee = by_call(uas.received())
    assert len(caller) == len(callee) == calls
    for call_id, got in callee.items():
        invite = next(m for m in got if getattr(m, "method", None) == "INVITE")
        out, back = record_route_uris(invite)
        assert_names_proxy(out, tls_port, "tls", double=True)
        assert_names_proxy(back, proxy.port, "udp", double=True)
        assert "200 BYE" in summary(got), (call_id, summary(got))
        bye_sent = next(m for m in uas_sent[call_id] if getattr(m, "method", None) == "BYE")
        assert [str(uri_of(v)) for v in bye_sent.header_values("route")] == [str(out), str(back)]

        heard = caller[call_id]
        ok = next(m for m in heard if summary([m]) == ["200 INVITE"])
        assert [str(u) for u in record_route_uris(ok)] == [str(out), str(back)]
        bye = next(m for m in heard if getattr(m, "method", None) == "BYE")
        assert_via_is_proxy(bye, proxy.port)
        assert bye.top_via.transport.upper() == "UDP"
        assert not bye.header_values("route"), f"the proxy left its Route values in {bye!r}"
        assert bye.ruri.startswith(f"sip:sipp@{LOOP}:{uac.port}"), bye.ruri
    assert_sound(proxy)


# ------------------------------------------------------------------ four workers

@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_connections_and_transactions_held_by_other_workers(reaper, proxy_factory, tmp_path, pki, transport):
    """children=4: the caller's connection, the callee's connection and the call's transactions
    sit in three different workers; requests, replies, the ACK and the BYE cross between them."""
    tls_port = free_port()
    proxy = proxy_factory(children=4, extra=tls_extra(pki, tls_port) if transport == "tls" else "",
                          route=stateful_route())
    workers = proxy.workers()
    port = tls_port if transport == "tls" else proxy.port
    callee = Peer("bob", "tcp", listen=True, proto=transport)
    peer = None
    try:
        if transport == "tls":
            tunnel_out, tunnel_in = free_port(), free_port()
            stunnel(reaper, tmp_path, "server", tunnel_out, callee.port, pki)
            stunnel(reaper, tmp_path, "client", tunnel_in, tls_port, pki)
            peer = Peer("alice", "tcp", connect=tunnel_in, proto="tls")
            callee.contact_port = target = tunnel_out
            proxy_side = {"local_port": tls_port}       # the only connection to it
        else:
            peer = Peer("alice", "tcp", connect=proxy.port)
            target = callee.port
            proxy_side = {"remote_port": peer.sock.getsockname()[1]}
        peer.settle(port)                               # answered: the connection is in a worker now
        caller_worker = worker_holding(proxy, **proxy_side)

        def call_owned_by_another(*busy):
            return Call(peer, port, ruri, next(call_id_owned_by(n, 4, "xw") for n in range(1, 5) if n not in busy))

        ruri = f"sip:bob@{LOOP}:{target};transport={transport}"
        first = call_owned_by_another(caller_worker)
        place_call(first, callee)
        callee_worker = worker_holding(proxy, remote_port=target)
        hangup(first, callee)
        second = call_owned_by_another(caller_worker, callee_worker)
        invite, _ = place_call(second, callee)
        hangup(second, callee)
        [rr] = invite.msg.header_values("record-route")
        assert_names_proxy(uri_of(rr), port, transport)
    finally:
        callee.close()
        if peer:
            peer.close()
    assert_sound(proxy, workers)


def test_a_worker_killed_with_its_transactions(reaper, proxy_factory):
    """children=4, eight ringing calls, two per worker; worker 2 is killed (SIGKILL). The other
    workers' calls go on: one answered and hung up, one canceled (200, 487, the callee gets the
    CANCEL). Worker 2's transactions are gone: its calls' CANCEL hears 481 and the callee never
    sees one. The respawned worker and the others take new calls."""
    victim = 2
    proxy = proxy_factory(children=4, route=stateful_route())
    caller, callee = Peer("alice"), Peer("bob")
    try:
        ruri = f"sip:bob@{LOOP}:{callee.port}"
        answered = [Call(caller, proxy.port, ruri, call_id_owned_by(n, 4, "kill")) for n in range(1, 5)]
        canceled = [Call(caller, proxy.port, ruri, call_id_owned_by(n, 4, "kill")) for n in range(1, 5)]
        invites = {}
        for call in answered + canceled:
            call.invite()
            invites[call.call_id] = callee.expect("INVITE", call.call_id)
            callee.answer(invites[call.call_id], 180)
            caller.expect("180", call.call_id)

        old = proxy.workers()
        os.kill(old[victim], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while proxy.workers().get(victim) in (None, old[victim]):
            assert time.monotonic() < deadline, f"worker {victim} was not respawned\n{proxy.tail()}"
            time.sleep(0.05)
        # serving: an OPTIONS of a Call-ID it owns is answered (sent again until it is, as a UAC would)
        while udp_options(proxy.port, call_id_owned_by(victim, 4, "ready"), timeout=0.5, tries=1) != 200:
            assert time.monotonic() < deadline, f"the new worker {victim} does not answer\n{proxy.tail()}"

        for n, call in enumerate(answered, 1):
            if n == victim:
                continue
            callee.answer(invites[call.call_id], 200, body=SDP)
            call.accepted(caller.expect("200 INVITE", call.call_id))
            call.ack()
            callee.expect("ACK", call.call_id)
            hangup(call, callee)
        for n, call in enumerate(canceled, 1):
            call.cancel()
            if n == victim:
                caller.expect("481 CANCEL", call.call_id)
                continue
            caller.expect("200 CANCEL", call.call_id)
            cancel = callee.expect("CANCEL", call.call_id)
            assert cancel.branch == invites[call.call_id].branch
            callee.answer(cancel, 200)
            callee.answer(invites[call.call_id], 487)
            call.ack_failure(caller.expect("487 INVITE", call.call_id))
            callee.expect("ACK", call.call_id)

        for n in range(1, 5):                           # new calls, one per worker
            call = Call(caller, proxy.port, ruri, call_id_owned_by(n, 4, "new"))
            place_call(call, callee)
            hangup(call, callee)
        dead = canceled[victim - 1].call_id
        assert not callee.all("CANCEL", dead), f"a CANCEL came for {dead}, a call of the killed worker"
        assert proxy.alive() and "Traceback" not in proxy.log(), proxy.tail()
    finally:
        caller.close()
        callee.close()
