"""Recorded edits, serialize() and make_response()."""

from __future__ import annotations

import pytest

from pyproxy.sip import (LocalSIPError, MessageTooLarge, RemoteSIPError, StreamParser,
                         make_response, parse_message)
from _parser_paths import parser_path  # noqa: F401 (autouse: each test on both parser paths)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a;rport\r\n"
    b"v: SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK-b, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-c\r\n"
    b"f: \"Alice\" <sip:alice@example.com>;tag=1\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"i: abc@10.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"X-Odd:   spacing  kept \r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"body"
)
HEAD, BODY = INVITE.split(b"\r\n\r\n")


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n")[0].split(b"\r\n")


def test_no_edits_is_raw():
    m = parse_message(INVITE)
    assert m.serialize() is m.raw


def test_insert_via_keeps_everything_else():
    m = parse_message(INVITE)
    m.insert_via("SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-new")
    out = m.serialize()
    assert lines(out)[1] == b"Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-new"
    assert out == HEAD.replace(b"\r\n", b"\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-new\r\n", 1) \
        + b"\r\n\r\n" + BODY
    again = parse_message(out)
    assert [v.branch for v in again.vias] == ["z9hG4bK-new", "z9hG4bK-a", "z9hG4bK-b", "z9hG4bK-c"]
    # reads show the message as received
    assert m.top_via.branch == "z9hG4bK-a"
    assert m.serialize() == out  # repeatable


def test_second_via_on_separate_and_folded_lines():
    # where a response goes after our Via: the second value, wherever its line starts
    assert parse_message(INVITE).second_via.branch == "z9hG4bK-b"
    folded = INVITE.replace(b"rport\r\nv: ", b"rport, ")
    assert parse_message(folded).second_via.branch == "z9hG4bK-b"
    assert parse_message(folded).vias[1].branch == "z9hG4bK-b"
    alone = INVITE.replace(b"v: SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK-b, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-c\r\n", b"")
    assert parse_message(alone).second_via is None


def test_remove_top_via_on_folded_line():
    m = parse_message(INVITE)
    m.remove_top_via()
    m.remove_top_via()
    out = parse_message(m.serialize())
    assert [v.branch for v in out.vias] == ["z9hG4bK-c"]
    assert lines(m.serialize())[1] == b"v: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-c"
    m.remove_top_via()
    assert not parse_message(m.serialize()).has_header("via")
    with pytest.raises(LocalSIPError):
        m.remove_top_via()


def test_removing_every_value_of_a_via_line_removes_the_line():
    m = parse_message(INVITE.replace(b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a;rport",
                                     b"Via: SIP/2.0/UDP 10.0.0.9, SIP/2.0/UDP 10.0.0.8", 1))
    m.remove_top_via()
    m.remove_top_via()          # both values of the first line, and nothing else: it goes (was a TypeError)
    assert b"10.0.0.9" not in m.serialize() and b"10.0.0.8" not in m.serialize()
    assert parse_message(m.serialize()).vias


def test_remove_top_via_of_one_value_with_a_quoted_comma():
    m = parse_message(INVITE.replace(b"branch=z9hG4bK-a;rport", b'branch=z9hG4bK-a;x="1,2"', 1))
    m.remove_top_via()          # one value, whatever its quoted comma: the line goes
    assert [v.branch for v in parse_message(m.serialize()).vias] == ["z9hG4bK-b", "z9hG4bK-c"]


def test_remove_added_via_first():
    m = parse_message(INVITE)
    m.insert_via("SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-new")
    m.remove_top_via()
    assert m.serialize() == INVITE


def test_add_remove_replace_headers():
    m = parse_message(INVITE)
    m.add_header("X-Last", "1")
    m.add_header("X-First", "0", first=True)
    m.add_header_raw("P-hint: x\r\n")
    assert m.remove_header("route") == 1
    m.replace_header("Max-Forwards", "69")
    m.replace_header("Subject", "new")
    out = m.serialize()
    got = lines(out)
    assert got[1] == b"X-First: 0"
    assert got[-4:] == [b"l: 4", b"X-Last: 1", b"P-hint: x", b"Subject: new"]
    assert b"Max-Forwards: 69" in got and b"Max-Forwards: 70" not in got
    assert not any(line.startswith(b"Route") for line in got)
    assert b"X-Odd:   spacing  kept " in got
    assert out.endswith(b"\r\n\r\nbody")
    # removing an added header counts it
    assert m.remove_header("x-last") == 1
    assert b"X-Last" not in m.serialize()


def test_compact_names_everywhere():
    m = parse_message(INVITE)
    assert m.header("call-id") == m.header("I") == m.call_id == "abc@10.0.0.1"
    assert m.header("F") == '"Alice" <sip:alice@example.com>;tag=1'
    assert m.header("x-odd") == "spacing  kept"
    assert m.header_names() == ["via", "via", "from", "to", "call-id", "cseq", "max-forwards",
                                "route", "x-odd", "content-length"]
    assert m.remove_header("f") == 1
    assert b"\r\nf:" not in m.serialize()


def test_set_ruri_and_record_route():
    m = parse_message(INVITE)
    m.set_ruri("sip:bob@192.0.2.20:5070;transport=tcp")
    assert m.uri.port == 5070 and m.uri.transport == "tcp"
    m.add_record_route("<sip:192.0.2.1;lr>")
    out = m.serialize()
    assert out.startswith(b"INVITE sip:bob@192.0.2.20:5070;transport=tcp SIP/2.0\r\n"
                          b"Record-Route: <sip:192.0.2.1;lr>\r\n")
    assert [str(r.uri) for r in parse_message(out).record_routes] == ["sip:192.0.2.1;lr"]
    with pytest.raises(LocalSIPError):
        m.set_ruri("sip:a b")


def test_set_body_updates_content_length():
    m = parse_message(INVITE)
    m.set_body(b"a longer body")
    out = m.serialize()
    assert b"l: 4" not in out and b"Content-Length: 13\r\n\r\na longer body" in out
    again = parse_message(out)
    again.validate()
    assert again.body == b"a longer body"
    with pytest.raises(LocalSIPError):
        m.add_header("Content-Length", "3")
    with pytest.raises(LocalSIPError):
        m.remove_header("l")


def test_missing_content_length_is_added():
    m = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nxyz")
    assert m.serialize() == b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 3\r\n\r\nxyz"
    parser = StreamParser()
    parser.feed(m.serialize())
    assert parser.next_event().body == b"xyz"


def test_received_rport():
    m = parse_message(INVITE)
    m.set_top_via_params(received="192.0.2.77", rport=40000)
    out = m.serialize()
    assert lines(out)[1] == b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a;rport=40000;received=192.0.2.77"
    top = parse_message(out).top_via
    assert top.rport == 40000 and top.received == "192.0.2.77"
    assert m.top_via.rport is True  # as received
    with pytest.raises(LocalSIPError):
        m.set_top_via_params(received="1.2.3.4\r\nX: y")


def test_make_response_copies_vias_and_adds_tag():
    m = parse_message(INVITE)
    m.set_top_via_params(received="192.0.2.77", rport=40000)
    m.insert_via("SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-ours")  # not part of the reply
    reply = make_response(m, 486, "Busy Here", to_tag="xyz", headers=[("Retry-After", "30")])
    got = lines(reply)
    assert got[0] == b"SIP/2.0 486 Busy Here"
    assert got[1] == b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a;rport=40000;received=192.0.2.77"
    assert got[2] == b"v: SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK-b, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-c"
    assert got[3:] == [b'f: "Alice" <sip:alice@example.com>;tag=1', b"t: <sip:bob@example.com>;tag=xyz",
                       b"i: abc@10.0.0.1", b"CSeq: 1 INVITE", b"Retry-After: 30", b"Content-Length: 0"]
    r = parse_message(reply)
    r.validate()
    assert r.status == 486 and len(r.vias) == 3 and r.to.tag == "xyz"
    # an existing to-tag is kept
    tagged = parse_message(INVITE.replace(b"t: <sip:bob@example.com>", b"t: <sip:bob@example.com>;tag=9"))
    assert parse_message(make_response(tagged, 200, "OK", to_tag="new")).to.tag == "9"
    with pytest.raises(LocalSIPError):
        make_response(m, 99, "Nope")


def test_make_response_with_body():
    m = parse_message(INVITE)
    reply = parse_message(make_response(m, 200, "OK", headers=[("Content-Type", "text/plain")], body=b"hi"))
    assert reply.body == b"hi" and reply.header("content-type") == "text/plain"


def test_header_injection_refused():
    m = parse_message(INVITE)
    for bad in ("a\r\nX: y", "a\nb"):
        with pytest.raises(LocalSIPError):
            m.add_header("X-Test", bad)
        with pytest.raises(LocalSIPError):
            m.insert_via(bad)
    with pytest.raises(LocalSIPError):
        m.add_header("Bad Name", "x")
    with pytest.raises(LocalSIPError):
        m.add_header_raw("no colon here\r\n")


def test_size_limit():
    with pytest.raises(MessageTooLarge) as info:
        parse_message(INVITE, max_size=100)
    assert info.value.status == 513
    assert parse_message(INVITE, max_size=len(INVITE)).body == b"body"


def test_datagram_errors():
    for data in (b"", b"\r\n\r\n", b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n",
                 b"INVITE sip:a@b SIP/2.0\r\nVia x\r\n\r\n",
                 b"INVITE sip:a@b SIP/2.0\r\n continuation\r\n\r\n",
                 b"INVITE sip:a@b SIP/2.0\r\nX: a\nb\r\n\r\n",
                 b"INVITE sip:a@b SIP/2.0\r\nl: 10\r\n\r\nshort"):
        with pytest.raises(RemoteSIPError):
            parse_message(data)


def test_leading_crlf_and_no_headers():
    m = parse_message(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\n\r\n")
    assert m.method == "OPTIONS" and m.header_names() == [] and m.raw.startswith(b"OPTIONS")
    with pytest.raises(RemoteSIPError):
        m.validate()
    m.add_header("X-A", "1")
    assert m.serialize() == b"OPTIONS sip:a@b SIP/2.0\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"


def test_validate_statuses():
    def status(data):
        with pytest.raises(RemoteSIPError) as info:
            parse_message(data).validate()
        return info.value.status

    base = INVITE
    assert status(base.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)) == 505
    assert status(base.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")) == 400
    assert status(base.replace(b"INVITE sip", b"FOO sip")) == 501
    assert status(base.replace(b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE")) == 400
    assert status(base.replace(b"Max-Forwards: 70", b"Max-Forwards: 256")) == 400
    parse_message(base.replace(b"CSeq: 1 INVITE", b"CSeq: 2147483647 INVITE")).validate()


def test_shallow_validation_checks_what_routing_reads():
    from pyproxy.sip import RemoteSIPError, parse_message
    import pytest
    base = ("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
            "From: {frm}\r\nTo: <sip:bob@example.com>\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\n"
            "Max-Forwards: {mf}\r\nContent-Length: 0\r\n\r\n")
    bad_from = parse_message(base.format(frm='"unterminated <sip:a@b>;tag=1', mf=70).encode())
    bad_from.validate(deep=False)            # From is parsed when something reads it
    with pytest.raises(RemoteSIPError):
        bad_from.validate()
    bad_mf = parse_message(base.format(frm="<sip:a@b>;tag=1", mf="x").encode())
    with pytest.raises(RemoteSIPError):
        bad_mf.validate(deep=False)


def test_values_to_send_include_added_lines_and_leave_out_removed_ones():
    from pyproxy.sip import parse_message
    msg = parse_message(b"REGISTER sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nPath: <sip:p1;lr>\r\n"
                        b"Path: <sip:p2;lr>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nFrom: <sip:a@h>;tag=1\r\n"
                        b"To: <sip:a@h>\r\nContent-Length: 0\r\n\r\n")
    assert msg.values_to_send("path") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    msg.add_header("Path", "<sip:p0;lr>", first=True)
    msg.remove_header_line("path", 1)
    msg.add_header("Path", "<sip:p3;lr>")
    assert msg.values_to_send("Path") == ["<sip:p0;lr>", "<sip:p1;lr>", "<sip:p3;lr>"]
