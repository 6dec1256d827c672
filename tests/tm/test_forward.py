"""forward.py's parts tm builds on: next_hop() ($du before the Request-URI, RFC 3261 16.6 step 7),
outgoing() (the copy that leaves, the message left as it was) and transport_failure() (16.9: a
branch that cannot be sent is a 503; a stateless request OpenSER's 477)."""

from __future__ import annotations

import pytest

from pyproxy.config.values import Proto
from pyproxy.script.forward import (SEND_FAILED, STATEFUL_BRANCH, UnsupportedScheme, destination_of_uri, next_hop,
                             outgoing, transport_failure)
from pyproxy.modules.rr import RecordRoute
from pyproxy.script.context import Destination, ReceiveInfo, ScriptContext
from pyproxy.sip import parse_message, parse_uri

from .harness import UAC, Clock, FakeRuntime, invite

RR_OPTIONS = {"enable_full_lr": 0, "append_fromtag": 1, "enable_double_rr": 1}


def ctx_of(text: str, proto: Proto = Proto.UDP) -> ScriptContext:
    msg = parse_message(text.encode())
    return ScriptContext(msg, ReceiveInfo(UAC[0], UAC[1], "127.0.0.1", 5060, proto), FakeRuntime(Clock()))


@pytest.mark.parametrize("uri,want", [
    ("sip:bob@10.0.0.2", (Proto.UDP, "10.0.0.2", None)),
    ("sip:bob@10.0.0.2:5070;transport=TCP", (Proto.TCP, "10.0.0.2", 5070)),
    ("sip:bob@10.0.0.2;transport=tls", (Proto.TLS, "10.0.0.2", None)),
    ("sips:bob@10.0.0.2", (Proto.TLS, "10.0.0.2", None)),
    ("sip:bob@example.com;maddr=10.0.0.5", (Proto.UDP, "10.0.0.5", None)),
    ("sip:bob@10.0.0.2;transport=sctp", (Proto.UDP, "10.0.0.2", None)),
])
def test_destination_of_uri(uri, want):
    d = destination_of_uri(parse_uri(uri))
    assert (d.proto, d.host, d.port) == want


def test_next_hop_prefers_du():
    """16.6 step 7: the next hop is the first Route / $du when there is one, else the
    Request-URI."""
    ctx = ctx_of(invite())
    assert next_hop(ctx) == Destination(Proto.UDP, "10.0.0.2", None)
    ctx.dst_uri = "sip:10.0.0.9:5080;transport=tcp"
    assert next_hop(ctx) == Destination(Proto.TCP, "10.0.0.9", 5080)


def test_next_hop_of_a_tel_uri_is_unsupported():
    """16.3 step 2 (416): a tel: Request-URI without $du cannot be sent."""
    with pytest.raises(UnsupportedScheme):
        next_hop(ctx_of(invite("tel:+15551234")))
    ctx = ctx_of(invite("tel:+15551234"))
    ctx.dst_uri = "sip:gw@10.0.0.7"
    assert next_hop(ctx) == Destination(Proto.UDP, "10.0.0.7", None)


def test_outgoing_leaves_the_message_as_it_was():
    """The copy that leaves has our Via on top (16.6 step 8) and the Record-Route asked for; the
    message itself is unchanged, so that the next branch starts from it again."""
    ctx = ctx_of(invite())
    before = ctx.msg.serialize()
    ctx.record_route = RecordRoute(RR_OPTIONS)
    data, _ = outgoing(ctx, Destination(Proto.UDP, "10.0.0.2", None), STATEFUL_BRANCH + "x.1.0")
    out = parse_message(data)
    assert out.header_values("via")[0] == f"SIP/2.0/UDP 127.0.0.1:5060;branch={STATEFUL_BRANCH}x.1.0"
    assert out.header_values("record-route") == ["<sip:127.0.0.1:5060;lr;ftag=a1>"]
    assert ctx.msg.serialize() == before
    data2, _ = outgoing(ctx, Destination(Proto.TCP, "10.0.0.3", None), STATEFUL_BRANCH + "x.1.1")
    out2 = parse_message(data2)
    assert len(out2.header_values("via")) == 2 and out2.header_values("via")[0].startswith("SIP/2.0/TCP ")
    assert ctx.msg.serialize() == before


def test_outgoing_over_tcp_in_keeps_the_connection_port():
    """18.2.2: a request that came over TCP without rport: our Via keeps the connection's source
    port (;cport=) so that the response finds the connection."""
    ctx = ctx_of(invite(), proto=Proto.TCP)
    data, _ = outgoing(ctx, Destination(Proto.UDP, "10.0.0.2", None), "z9hG4bKabc")
    assert parse_message(data).header_values("via")[0].endswith(";cport=5062")


@pytest.mark.parametrize("branch,why,want", [
    (STATEFUL_BRANCH + "1.2.0", "connection refused", (503, "Service Unavailable (connection refused)")),
    (STATEFUL_BRANCH + "1.2.0", "bad\r\nthing\x00", (503, "Service Unavailable (badthing)")),
    (STATEFUL_BRANCH + "1.2.0", "x" * 300, (503, f"Service Unavailable ({'x' * 120})")),
    ("z9hG4bK0123abcd", "connection refused", SEND_FAILED),
    (None, "connection refused", SEND_FAILED),
])
def test_transport_failure(branch, why, want):
    """16.9: "If the transport layer notifies a proxy of an error when it tries to forward a
    request, the proxy MUST behave as if the forwarded request received a 503": a branch of a
    transaction gets a 503 with what happened (printable, short); a stateless request 477."""
    via = f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}" if branch else "SIP/2.0/UDP 127.0.0.1:5060"
    request = parse_message(invite(via=via).encode())
    assert transport_failure(request, why) == want
