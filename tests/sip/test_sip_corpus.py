"""Every RFC 4475 / RFC 5118 message, classified as its MANIFEST.tsv verdict says."""

from __future__ import annotations

import pytest
from _corpus import BY_NAME, CASES, CONFORMANCE, case_ids

from pyproxy.sip import STAR, RemoteSIPError, Request, Response, parse_message
from _parser_paths import parser_path  # noqa: F401 (autouse: each test on both parser paths)


def parse_and_validate(data: bytes):
    msg = parse_message(data)
    msg.validate()
    return msg


def test_corpus_is_present():
    # Fails (never skips) when the corpus cannot be found: the parametrized tests below would
    # otherwise silently collect nothing.
    assert CONFORMANCE.is_dir(), f"conformance corpus not found at {CONFORMANCE}"
    assert sum(c.suite == "rfc4475" for c in CASES) == 50
    assert sum(c.suite == "rfc5118" for c in CASES) == 12


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_verdict(case):
    if case.verdict == "valid":
        parse_and_validate(case.data)
    elif case.verdict == "invalid":
        with pytest.raises(RemoteSIPError) as info:
            parse_and_validate(case.data)
        if not case.is_response:
            assert info.value.status == case.expected_status, info.value.reason
        assert info.value.reason
    else:
        assert case.verdict in ("either", "unspecified")
        try:
            parse_and_validate(case.data)
        except RemoteSIPError:
            pass


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_round_trip(case):
    try:
        msg = parse_message(case.data)
    except RemoteSIPError:
        return
    if msg._cl is None:
        # No Content-Length (inv2543): serialize() adds one, the rest is byte-identical.
        out = msg.serialize()
        assert out == msg.raw[:msg._hend] + b"\r\nContent-Length: %d\r\n\r\n" % len(msg.body) + msg.body
    else:
        assert msg.serialize() == msg.raw
    assert case.data.startswith(msg.raw)


def msg(name: str):
    return parse_and_validate(BY_NAME[name].data)


def test_wsinv_unfolds():
    m = msg("wsinv.dat")
    assert m.header("newfangledheader") == "newfangled value continued newfangled value"
    assert m.header("subject") == ""
    assert m.cseq == (9, "INVITE")
    assert m.max_forwards == 68
    assert m.to.tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert [v.transport for v in m.vias] == ["UDP", "TCP", "UDP"]
    assert m.vias[1].branch == "z9hG4bK9ikj8" and m.vias[2].branch == "z9hG4bK30239"
    assert m.contacts[0].display == 'Quoted string ""'
    assert m.contacts[0].params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert m.routes[0].uri.params["lr"] is None
    assert m.header_names()[:3] == ["to", "from", "max-forwards"]


def test_intmeth_method_and_odd_values():
    m = msg("intmeth.dat")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.cseq == (139122385, m.method)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.header("extensionheader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_esc01_keeps_escapes():
    m = msg("esc01.dat")
    assert m.uri.user == "sips%3Auser%40example.com"
    assert m.to.uri.user == "%75se%72"
    assert m.contacts[0].uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}


def test_esc02_two_contacts_unknown_method():
    m = msg("esc02.dat")
    assert m.method == "RE%47IST%45R"
    assert len(m.contacts) == 2
    assert m.header("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert "c%6fntact" in m.header_names()


def test_escnull_keeps_percent_00():
    m = msg("escnull.dat")
    assert m.to.uri.user == "null-%00-null"
    assert [c.uri.user for c in m.contacts] == ["%00", "%00%00"]


def test_semiuri_user_part():
    m = msg("semiuri.dat")
    assert m.uri.user == "user;par=u%40example.net"
    assert m.uri.host == "example.com"
    assert m.uri.params == {}
    assert m.header_values("accept")[-1] == "message/sipfrag"
    assert len(m.header_values("Accept")) == 6


def test_transports():
    m = msg("transports.dat")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_longreq_many_vias():
    m = msg("longreq.dat")
    assert len(m.vias) == 34
    assert m.top_via.host == "sip33.example.com"
    assert m.vias[-1].received == "192.0.2.5"
    assert len(m.header_values("v")) == 34


def test_dblreq_ignores_trailing_octets():
    data = BY_NAME["dblreq.dat"].data
    m = msg("dblreq.dat")
    assert m.method == "REGISTER" and m.body == b""
    assert m.raw == data[:data.index(b"\r\n\r\n") + 4]
    assert b"INVITE" not in m.serialize()


def test_lwsdisp_and_cparam():
    assert msg("lwsdisp.dat").from_.display == "caller"
    # addr-spec form: the parameter after the URI is a header parameter (RFC 3261 20.10)
    c1 = msg("cparam01.dat").contacts[0]
    assert c1.params == {"unknownparam": None} and c1.uri.params == {}
    c2 = msg("cparam02.dat").contacts[0]
    assert c2.params == {} and c2.uri.params == {"unknownparam": None}
    assert msg("regescrt.dat").contacts[0].uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_schemes():
    assert msg("unkscm.dat").uri.opaque == "totallyopaquecontent"
    novel = msg("novelsc.dat").uri
    assert novel.scheme == "soap.beep" and novel.opaque == "//192.0.2.103:3002"
    m = msg("unksm2.dat")
    assert m.to.uri.scheme == "isbn" and m.from_.uri.scheme == "http"
    assert m.contacts[0].uri.scheme == "name"


def test_bodies_and_responses():
    mp = msg("mpart01.dat")
    assert len(mp.body) == 553 and b"\x00" in mp.body
    assert msg("inv2543.dat").body.startswith(b"v=0") and msg("inv2543.dat").max_forwards is None
    un = msg("unreason.dat")
    assert isinstance(un, Response) and un.status == 200 and un.reason.startswith("= 2**3 * 5**2 \u043d")
    no = msg("noreason.dat")
    assert no.status == 100 and no.reason == ""
    assert msg("zeromf.dat").max_forwards == 0
    assert [v.host for v in msg("bcast.dat").vias] == ["192.0.2.198", "255.255.255.255"]
    assert msg("bext01.dat").header_values("require") == ["nothingSupportsThis",
                                                          "nothingSupportsThisEither"]


def test_specific_rejections():
    def reason(name):
        with pytest.raises(RemoteSIPError) as info:
            parse_and_validate(BY_NAME[name].data)
        return info.value.reason

    assert "CSeq" in reason("mismatch01.dat") and "OPTIONS" in reason("mismatch01.dat")
    assert "Date" in reason("baddate.dat")
    assert "empty line" in reason("baddn.dat")
    assert "Content-Length" in reason("clerr.dat")
    assert "Content-Length" in reason("mcl01.dat")
    assert "Call-ID" in reason("multi01.dat") or "CSeq" in reason("multi01.dat")


def test_repeated_single_header_beside_repeated_vias():
    # A forwarded response repeats Via; a repeated CSeq must still be caught beside it (the
    # shallow check a worker runs per message takes a shortcut when only Via repeats).
    response = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
                b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n%s"
                b"Content-Length: 0\r\n\r\n")
    parse_message(response % b"").validate(deep=False)
    for extra, name in ((b"CSeq: 2 INVITE\r\n", "CSeq"), (b"Via: SIP/2.0/UDP c;branch=z9hG4bK3\r\nTo: <sip:c@d>\r\n", "To")):
        with pytest.raises(RemoteSIPError, match=f"more than one {name}"):
            parse_message(response % extra).validate(deep=False)


def test_ipv6():
    assert msg("ipv6-good").uri.host == "[2001:db8::10]"
    amb = msg("port-ambiguous").uri
    assert amb.host == "[2001:db8::10:5070]" and amb.port is None
    unamb = msg("port-unambiguous").uri
    assert unamb.host == "[2001:db8::10]" and unamb.port == 5070
    assert msg("via-received-param-with-delim").top_via.received == "[2001:db8::9:255]"
    assert msg("via-received-param-no-delim").top_via.received == "2001:db8::9:255"
    vias = msg("mult-ip-in-header").vias
    assert [(v.host, v.port) for v in vias] == [("[2001:db8::9:1]", 6050), ("192.0.2.1", None),
                                                ("[2001:db8::9:255]", None)]
    assert msg("ipv4-mapped-ipv6").contacts[0].uri.host == "[::ffff:192.0.2.2]"
    assert msg("ipv6-bug-abnf-3-colons").uri.host == "[2001:db8:::192.0.2.1]"
    assert msg("ipv6-correct-abnf-2-colons").to.uri.host == "[2001:db8::192.0.2.1]"


def test_star_contact():
    data = BY_NAME["cparam01.dat"].data.replace(
        b"Contact: sip:+19725552222@gw1.example.net;unknownparam", b"Contact: *")
    m = parse_and_validate(data)
    assert m.contacts == [STAR] and str(m.contacts[0]) == "*"
    bad = data.replace(b"Contact: *", b"Contact: *, <sip:a@b>")
    with pytest.raises(RemoteSIPError):
        parse_and_validate(bad)


def test_kinds():
    assert isinstance(msg("wsinv.dat"), Request)
    assert isinstance(msg("bcast.dat"), Response)
