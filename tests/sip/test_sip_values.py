"""URIs, name-addr values and Vias."""

from __future__ import annotations

import pytest

from pyproxy.sip import (RemoteSIPError, is_ipv4, is_ipv6_reference, parse_name_addr, parse_uri,
                         parse_via)
from _parser_paths import parser_path  # noqa: F401 (autouse: each test on both parser paths)


def test_sip_uri_components():
    u = parse_uri("sip:alice:secret@Example.COM:5070;transport=TCP;lr;maddr=10.0.0.1?subject=hi&x=1")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sip", "alice", "secret", "Example.COM", 5070)
    assert u.params == {"transport": "TCP", "lr": None, "maddr": "10.0.0.1"}
    assert u.headers == "subject=hi&x=1"
    assert u.transport == "tcp"
    assert str(u) == "sip:alice:secret@Example.COM:5070;transport=TCP;lr;maddr=10.0.0.1?subject=hi&x=1"


def test_defaults_and_sips():
    assert parse_uri("sip:example.com").transport == "udp"
    s = parse_uri("SIPS:bob@example.com")
    assert s.scheme == "sips" and s.transport == "tls" and s.port is None and s.user == "bob"
    assert str(s) == "SIPS:bob@example.com"  # untouched URIs round-trip exactly


def test_replace():
    u = parse_uri("sip:alice@example.com;lr")
    v = u.replace(host="192.0.2.1", port=5080)
    assert str(v) == "sip:alice@192.0.2.1:5080;lr"
    assert str(u) == "sip:alice@example.com;lr"
    assert str(u.replace(user=None)) == "sip:example.com;lr"
    with pytest.raises(TypeError):
        u.replace(nonsense=1)


def test_ipv6_hosts():
    u = parse_uri("sip:[2001:db8::10]:5070;transport=udp")
    assert u.host == "[2001:db8::10]" and u.port == 5070
    assert parse_uri("sip:user@[::ffff:192.0.2.1]").host == "[::ffff:192.0.2.1]"
    for bad in ("sip:2001:db8::10", "sip:[2001:db8::10", "sip:[zz::1]", "sip:[::1]x"):
        with pytest.raises(RemoteSIPError):
            parse_uri(bad)
    assert is_ipv6_reference("[2001:db8:::192.0.2.1]")  # RFC 3261 ABNF bug, tolerated
    assert is_ipv6_reference("[2001:db8::192.0.2.1]")
    assert not is_ipv6_reference("2001:db8::1") and not is_ipv6_reference("[fe80::1%eth0]")
    assert is_ipv4("192.0.2.255") and not is_ipv4("192.0.2.256") and not is_ipv4("example.com")


def test_tel_and_other_schemes():
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (t.scheme, t.user, t.host) == ("tel", "+1-201-555-0123", "")
    assert t.params == {"phone-context": "example.com"}
    assert str(t.replace(user="+1-201-555-0124")) == "tel:+1-201-555-0124;phone-context=example.com"
    o = parse_uri("urn:service:sos")
    assert o.scheme == "urn" and o.opaque == "service:sos" and o.user is None
    assert str(o) == "urn:service:sos"


def test_escapes_kept():
    u = parse_uri("sip:%61lice@example.com?Route=%3Csip:p.example.com%3E")
    assert u.user == "%61lice" and u.headers == "Route=%3Csip:p.example.com%3E"
    for bad in ("sip:a%zz@example.com", "sip:a%4@example.com", "sip:a b@example.com", "sip:@example.com",
                "<sip:a@b>", "sip:a@b:99999", "sip:a@b;;lr", "sip:a@-b", "", ":x", "sip:"):
        with pytest.raises(RemoteSIPError):
            parse_uri(bad)


def test_name_addr_forms():
    n = parse_name_addr('"Alice \\"A\\" Smith" <sip:alice@example.com;lr>;tag=12;expires=60')
    assert n.display == 'Alice "A" Smith'
    assert n.uri.params == {"lr": None}
    assert n.params == {"tag": "12", "expires": "60"} and n.tag == "12"
    assert str(n) == '"Alice \\"A\\" Smith" <sip:alice@example.com;lr>;tag=12;expires=60'
    tokens = parse_name_addr("Alice  Smith <sip:a@b>")
    assert tokens.display == "Alice  Smith"
    assert parse_name_addr("<sip:a@b>").display is None


def test_angle_vs_addr_spec_params():
    # RFC 3261 20.10: without <>, parameters after the URI belong to the header
    bracketed = parse_name_addr("<sip:x@example.com;tag=1>")
    assert bracketed.uri.params == {"tag": "1"}
    assert bracketed.tag is None
    assert parse_name_addr("<sip:x@example.com>;tag=1").tag == "1"
    bare = parse_name_addr("sip:x@example.com;tag=1")
    assert bare.tag == "1" and bare.uri.params == {} and str(bare.uri) == "sip:x@example.com"


def test_bad_name_addrs():
    for bad in ('"unterminated <sip:a@b>', "Bell, Alexander <sip:a@b>", "< sip:a@b >",
                "sip:a@b?subject=x", "<sip:a@b", "<sip:a@b>;;", "<sip:a@b> junk", '"x" sip:a@b'):
        with pytest.raises(RemoteSIPError):
            parse_name_addr(bad)


def test_via():
    v = parse_via("SIP/2.0/udp 192.0.2.1:5060;branch=z9hG4bK-1;rport;received=192.0.2.9;x=y")
    assert (v.protocol, v.transport, v.host, v.port) == ("SIP/2.0", "UDP", "192.0.2.1", 5060)
    assert v.branch == "z9hG4bK-1" and v.rport is True and v.received == "192.0.2.9"
    assert list(v.params) == ["branch", "rport", "received", "x"]
    assert str(v) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;rport;received=192.0.2.9;x=y"
    assert parse_via("SIP/2.0/TLS h;rport=5061").rport == 5061
    assert parse_via("SIP/2.0/UDP h").rport is None
    spaced = parse_via("SIP / 2.0 / TCP   host.example.com : 5061 ; branch = z9hG4bKx")
    assert (spaced.transport, spaced.host, spaced.port, spaced.branch) == ("TCP", "host.example.com", 5061, "z9hG4bKx")
    v6 = parse_via("SIP/2.0/WSS [2001:db8::1]:443;received=[2001:db8::2]")
    assert v6.host == "[2001:db8::1]" and v6.port == 443 and v6.transport == "WSS"


def test_bad_vias():
    for bad in ("", "SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP host:70000",
                "SIP/2.0/UDP host;received=example.com", "SIP/2.0/UDP host;branch", "SIP/2.0/UDP ho st",
                "SIP/2.0/UDP host;rport=x"):
        with pytest.raises(RemoteSIPError):
            parse_via(bad)
