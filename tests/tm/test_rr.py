"""rr: record-routing and loose routing (RFC 3261 16.4, 16.6 steps 4 and 6, 16.12, RFC 5658 for
double Record-Route), over the fake network."""

from __future__ import annotations

import pytest

from pyproxy.config.values import Proto
from pyproxy.sip import parse_message

from .harness import HEAD_XLOG, UAC, UAS, FakeProxy, ack_2xx, invite, reply_to, requests, status

RR = """
route {
    if (loose_route()) { xlog("L_INFO", "LR: du=$du ru=$ru\\n"); t_relay(); exit; }
    if (method=="INVITE") { record_route(); }
    if (!t_relay()) { sl_reply_error(); }
}
"""


def rr_proxy(route: str = RR, **params) -> FakeProxy:
    modparams = "".join(f'modparam("rr", "{k}", {v})\n' for k, v in params.items())
    return FakeProxy(route, modparams, head=HEAD_XLOG)


def relayed(proxy, req, **kw):
    proxy.receive(req, **kw)
    return requests(proxy.take())[0]


def rr_of(sent):
    return sent.msg.header_values("record-route")


# --- record_route() ---------------------------------------------------------------------------------
@pytest.mark.parametrize("proto,ruri,want", [
    (Proto.UDP, "sip:bob@10.0.0.2", ["<sip:127.0.0.1:5060;lr;ftag=a1>"]),
    (Proto.TCP, "sip:bob@10.0.0.2;transport=tcp", ["<sip:127.0.0.1:5060;transport=tcp;lr;ftag=a1>"]),
    (Proto.TLS, "sip:bob@10.0.0.2;transport=tls", ["<sip:127.0.0.1:5061;transport=tls;lr;ftag=a1>"]),
])
def test_single_record_route_when_in_and_out_are_the_same(proto, ruri, want):
    """16.6 step 4: one Record-Route value naming this proxy (with ;lr, 19.1.1) when the request
    leaves by the socket and transport it came in on."""
    proxy = rr_proxy()
    dst = ("127.0.0.1", 5061) if proto is Proto.TLS else ("127.0.0.1", 5060)
    branch = relayed(proxy, invite(ruri), proto=proto, dst=dst)
    assert rr_of(branch) == want


@pytest.mark.parametrize("ruri,out", [
    ("sip:bob@10.0.0.2;transport=tcp", "<sip:127.0.0.1:5060;transport=tcp;lr;ftag=a1;r2=on>"),
    ("sip:bob@10.0.0.2;transport=tls", "<sip:127.0.0.1:5061;transport=tls;lr;ftag=a1;r2=on>"),
    ("sips:bob@10.0.0.2", "<sip:127.0.0.1:5061;transport=tls;lr;ftag=a1;r2=on>"),
])
def test_double_record_route_when_the_transport_changes(ruri, out):
    """RFC 5658 (OpenSER's enable_double_rr): a request that came by UDP and leaves by TCP/TLS gets
    two Record-Route values, each with ;r2=on. The top one, which the next hop (the UAS) will
    use to reach us (its route set is the Record-Route list in order, 12.1.1), names the
    outbound socket; the one below, which the UAC uses (reversed list, 12.1.2), names the
    inbound socket."""
    proxy = rr_proxy()
    branch = relayed(proxy, invite(ruri))
    assert rr_of(branch) == [out, "<sip:127.0.0.1:5060;lr;ftag=a1;r2=on>"]


def test_double_record_route_tcp_in_udp_out():
    proxy = rr_proxy()
    branch = relayed(proxy, invite("sip:bob@10.0.0.2"), proto=Proto.TCP)
    assert rr_of(branch) == ["<sip:127.0.0.1:5060;lr;ftag=a1;r2=on>",
                             "<sip:127.0.0.1:5060;transport=tcp;lr;ftag=a1;r2=on>"]


def test_double_record_route_can_be_disabled():
    proxy = rr_proxy(enable_double_rr=0)
    branch = relayed(proxy, invite("sip:bob@10.0.0.2;transport=tcp"))
    assert rr_of(branch) == ["<sip:127.0.0.1:5060;lr;ftag=a1>"]


@pytest.mark.parametrize("params,want", [
    ({"enable_full_lr": 1}, "<sip:127.0.0.1:5060;lr=on;ftag=a1>"),
    ({"append_fromtag": 0}, "<sip:127.0.0.1:5060;lr>"),
    ({"enable_full_lr": 1, "append_fromtag": 0}, "<sip:127.0.0.1:5060;lr=on>"),
])
def test_record_route_options(params, want):
    """enable_full_lr: ;lr=on for old user agents; append_fromtag: ;ftag= with the From tag."""
    proxy = rr_proxy(**params)
    assert rr_of(relayed(proxy, invite())) == [want]


@pytest.mark.parametrize("call,want", [
    ('record_route_preset("10.1.1.1:5080")', "<sip:10.1.1.1:5080;lr;ftag=a1>"),
    ('record_route_preset("sip:proxy.example.com")', "<sip:proxy.example.com;lr;ftag=a1>"),
    ('record_route(); add_rr_param(";nat=yes")', "<sip:127.0.0.1:5060;lr;ftag=a1;nat=yes>"),
    ('record_route_preset("10.1.1.1"); add_rr_param(";a=1"); add_rr_param(";b=2")',
     "<sip:10.1.1.1;lr;ftag=a1;a=1;b=2>"),
])
def test_record_route_preset_and_add_rr_param(call, want):
    proxy = rr_proxy(f"route {{ {call}; t_relay(); }}")
    assert rr_of(relayed(proxy, invite())) == [want]


def test_add_rr_param_without_record_route_fails():
    proxy = rr_proxy('route { if (!add_rr_param(";x=1")) { setflag(1); } t_relay(); }')
    ctx = proxy.receive(invite())
    assert ctx.flags & 2
    assert rr_of(requests(proxy.take())[0]) == []


def test_record_route_on_register_is_refused():
    """A REGISTER makes no dialog (RFC 3261 10.2: Record-Route has no meaning in it): record_route()
    fails and the REGISTER leaves without one."""
    proxy = rr_proxy('route { if (!record_route()) { setflag(1); } t_relay(); }')
    ctx = proxy.receive(invite(method="REGISTER"))
    assert ctx.flags & 2
    assert rr_of(requests(proxy.take())[0]) == []


def test_record_route_on_each_forked_branch():
    """Every branch carries the Record-Route (16.6 step 4), named for the socket it leaves by."""
    proxy = rr_proxy('route { record_route(); append_branch("sip:carol@10.0.0.3;transport=tcp"); t_relay(); }')
    proxy.receive(invite())
    b1, b2 = requests(proxy.take())
    assert rr_of(b1) == ["<sip:127.0.0.1:5060;lr;ftag=a1>"]
    assert len(rr_of(b2)) == 2 and all("r2=on" in v for v in rr_of(b2))


def test_add_rr_param_in_branch_route_stays_on_its_branch():
    """A parameter added in branch_route belongs to that branch's Record-Route only."""
    proxy = rr_proxy("""
route { record_route(); append_branch("sip:carol@10.0.0.3"); t_on_branch("1"); t_relay(); }
branch_route[1] { add_rr_param(";br=x"); }
""")
    proxy.receive(invite())
    b1, b2 = requests(proxy.take())
    assert rr_of(b1) == ["<sip:127.0.0.1:5060;lr;ftag=a1;br=x>"]
    assert rr_of(b2) == ["<sip:127.0.0.1:5060;lr;ftag=a1;br=x>"]


def test_record_route_is_not_in_the_upstream_reply_twice():
    """The UAS copies Record-Route into its response (12.1.1); the proxy forwards it as is."""
    proxy = rr_proxy()
    branch = relayed(proxy, invite())
    proxy.receive(reply_to(branch, 200), src=UAS)
    ok, = proxy.take()
    assert ok.msg.header_values("record-route") == ["<sip:127.0.0.1:5060;lr;ftag=a1>"]


# --- loose_route() --------------------------------------------------------------------------------
def bye(ruri="sip:bob@10.0.0.2:5070", routes=(), via=None):
    route = "".join(f"Route: {r}\r\n" for r in routes)
    return invite(ruri, method="BYE", to_tag="b1", extra=route, via=via)


CASES = [
    # (Request-URI, Route values) -> (Request-URI out, Route out, where it goes, $du)
    pytest.param("sip:bob@10.0.0.2:5070", ["<sip:127.0.0.1:5060;lr;ftag=a1>"],
                 "sip:bob@10.0.0.2:5070", [], ("10.0.0.2", 5070), "<null>", id="ours-only"),
    pytest.param("sip:bob@10.0.0.2:5070", ["<sip:127.0.0.1;lr>"],
                 "sip:bob@10.0.0.2:5070", [], ("10.0.0.2", 5070), "<null>", id="ours-default-port"),
    pytest.param("sip:bob@10.0.0.2:5070", ["<sip:127.0.0.1:5060;lr>", "<sip:10.0.0.7:5060;lr>"],
                 "sip:bob@10.0.0.2:5070", ["<sip:10.0.0.7:5060;lr>"], ("10.0.0.7", 5060),
                 "sip:10.0.0.7:5060;lr", id="ours-then-loose"),
    pytest.param("sip:bob@10.0.0.2:5070", ["<sip:10.0.0.7:5060;lr>"],
                 "sip:bob@10.0.0.2:5070", ["<sip:10.0.0.7:5060;lr>"], ("10.0.0.7", 5060),
                 "sip:10.0.0.7:5060;lr", id="preloaded-loose"),
    # RFC 5658: both values of our double Record-Route are ours
    pytest.param("sip:bob@10.0.0.2:5070",
                 ["<sip:127.0.0.1:5060;transport=tcp;lr;r2=on>", "<sip:127.0.0.1:5060;lr;r2=on>"],
                 "sip:bob@10.0.0.2:5070", [], ("10.0.0.2", 5070), "<null>", id="double-rr"),
    pytest.param("sip:bob@10.0.0.2:5070",
                 ["<sip:127.0.0.1:5061;transport=tls;lr;r2=on>", "<sip:127.0.0.1:5060;lr;r2=on>",
                  "<sip:10.0.0.7;lr>"],
                 "sip:bob@10.0.0.2:5070", ["<sip:10.0.0.7;lr>"], ("10.0.0.7", None), "sip:10.0.0.7;lr",
                 id="double-rr-then-loose"),
    # 16.6 step 6: a strict router next: the Request-URI goes to the end of the Route set, the
    # first Route into the Request-URI
    pytest.param("sip:bob@10.0.0.2:5070", ["<sip:127.0.0.1:5060;lr>", "<sip:10.0.0.8:5060>"],
                 "sip:10.0.0.8:5060", ["<sip:bob@10.0.0.2:5070>"], ("10.0.0.8", 5060), "<null>",
                 id="strict-next"),
    pytest.param("sip:bob@10.0.0.2:5070",
                 ["<sip:127.0.0.1:5060;lr>", "<sip:10.0.0.8:5060>", "<sip:10.0.0.9;lr>"],
                 "sip:10.0.0.8:5060", ["<sip:10.0.0.9;lr>", "<sip:bob@10.0.0.2:5070>"], ("10.0.0.8", 5060),
                 "<null>", id="strict-next-more"),
    # 16.4: a strict router before us put our Record-Route value into the Request-URI: it is
    # replaced by the last Route value (the remote target), which is removed
    pytest.param("sip:127.0.0.1:5060;lr", ["<sip:bob@10.0.0.2:5070>"],
                 "sip:bob@10.0.0.2:5070", [], ("10.0.0.2", 5070), "<null>", id="strict-previous"),
    pytest.param("sip:127.0.0.1;lr;ftag=a1", ["<sip:10.0.0.7;lr>", "<sip:bob@10.0.0.2:5070>"],
                 "sip:bob@10.0.0.2:5070", ["<sip:10.0.0.7;lr>"], ("10.0.0.7", None), "sip:10.0.0.7;lr",
                 id="strict-previous-then-loose"),
]


@pytest.mark.parametrize("ruri,routes,ruri_out,routes_out,dest,du", CASES)
def test_loose_route(ruri, routes, ruri_out, routes_out, dest, du):
    """16.4: our own Route value(s) are removed; 16.6 steps 6-7: the request goes to the first
    remaining Route (in $du) when it is a loose router, through the Request-URI when it is a
    strict one; the previous hop's strict routing is repaired (16.4)."""
    proxy = rr_proxy()
    branch = relayed(proxy, bye(ruri, routes))
    assert branch.first_line == f"BYE {ruri_out} SIP/2.0"
    assert branch.msg.header_values("route") == routes_out
    assert (branch.dest.host, branch.dest.port) == dest
    assert proxy.logged("LR: ") == [f"LR: du={du} ru={ruri_out}"]
    assert rr_of(branch) == []                  # in-dialog requests are not record-routed here


def test_loose_route_without_route_is_false():
    """No Route header: loose_route() is false and the script goes on (here: t_relay to the
    Request-URI, record-routed since it is an INVITE)."""
    proxy = rr_proxy()
    branch = relayed(proxy, invite())
    assert proxy.logged("LR: ") == []
    assert rr_of(branch)


def test_in_dialog_bye_through_the_proxy():
    """A whole dialog: the INVITE is record-routed, the UAC's BYE follows the route set (12.2.1.1)
    and leaves for the remote target; its 200 comes back through the BYE's transaction."""
    proxy = rr_proxy()
    req = invite()
    branch = relayed(proxy, req)
    proxy.receive(reply_to(branch, 200, extra=(("Contact", "<sip:bob@10.0.0.2:5070>"),)), src=UAS)
    ok, = proxy.take()
    route_set = ok.msg.header_values("record-route")[::-1]
    proxy.receive(ack_2xx(req, ok.msg, ruri="sip:bob@10.0.0.2:5070", routes=route_set))
    ack, = proxy.take()
    assert (ack.dest.host, ack.dest.port) == ("10.0.0.2", 5070) and ack.msg.header("route") is None
    call_id = parse_call_id(req)
    proxy.receive(invite("sip:bob@10.0.0.2:5070", method="BYE", call_id=call_id, cseq=2, to_tag="b1",
                         extra="".join(f"Route: {r}\r\n" for r in route_set)))
    bye_out, = proxy.take()
    assert bye_out.first_line == "BYE sip:bob@10.0.0.2:5070 SIP/2.0"
    assert (bye_out.dest.host, bye_out.dest.port) == ("10.0.0.2", 5070)
    assert bye_out.msg.header("route") is None
    proxy.receive(reply_to(bye_out, 200), src=("10.0.0.2", 5070))
    ok_bye, = proxy.take()
    assert status(ok_bye) == 200 and ok_bye.msg.cseq == (2, "BYE") and (ok_bye.dest.host, ok_bye.dest.port) == UAC


def test_in_dialog_bye_from_the_callee_with_double_rr():
    """The callee's BYE, when the INVITE changed transport here: the UAS's route set is the
    Record-Route list in order (12.1.1); both our values are consumed and the BYE goes to the
    caller's Contact."""
    proxy = rr_proxy()
    req = invite("sip:bob@10.0.0.2;transport=tcp")
    branch = relayed(proxy, req)
    route_set = rr_of(branch)                   # the UAS's view
    assert len(route_set) == 2
    proxy.receive(invite("sip:alice@10.0.0.1:5062", method="BYE", to_tag="a1",
                         extra="".join(f"Route: {r}\r\n" for r in route_set),
                         via="SIP/2.0/TCP 10.0.0.2:5060;branch=z9hG4bKcalleebye"),
                  src=UAS, proto=Proto.TCP)
    bye_out, = requests(proxy.take())
    assert bye_out.first_line == "BYE sip:alice@10.0.0.1:5062 SIP/2.0"
    assert (bye_out.dest.proto, bye_out.dest.host, bye_out.dest.port) == (Proto.UDP, "10.0.0.1", 5062)
    assert bye_out.msg.header("route") is None


def test_the_uas_reaches_us_by_the_outbound_socket():
    """With a double Record-Route, the first Route the UAS sends to (the top Record-Route value)
    is the transport the INVITE reached it by: TLS here, not the caller's UDP."""
    proxy = rr_proxy()
    branch = relayed(proxy, invite("sip:bob@10.0.0.2;transport=tls"))
    first = rr_of(branch)[0]
    assert "transport=tls" in first and "5061" in first


def test_du_set_by_the_script():
    """$du: where the request goes instead of its Request-URI (the Request-URI is unchanged)."""
    proxy = rr_proxy('route { $du = "sip:10.0.0.9:5080;transport=tcp"; t_relay(); }')
    branch = relayed(proxy, invite())
    assert branch.first_line == "INVITE sip:bob@10.0.0.2 SIP/2.0"
    assert (branch.dest.proto, branch.dest.host, branch.dest.port) == (Proto.TCP, "10.0.0.9", 5080)


def parse_call_id(text):
    return parse_message(text.encode()).call_id
