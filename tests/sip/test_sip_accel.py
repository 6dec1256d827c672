"""The C accelerator agrees with the pure-Python parser, is built where it can be, and is off
when the environment says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from _corpus import CASES, case_ids
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _parser_paths import pure_python
from pyproxy.sip import KeepAlive, StreamParser, accel, grammar, make_response, parser, validate
from pyproxy.modules.auth import digest
from pyproxy.modules.auth.digest import Malformed, parse_credentials
from pyproxy.sip.address import parse_name_addr
from pyproxy.sip.errors import RemoteSIPError, SIPError
from pyproxy.sip.headers import _by_bytes, split_list
from pyproxy.sip.message import Request, Response
from pyproxy.sip.serialize import Edits
from pyproxy.sip.uri import _parse_uri
from pyproxy.sip.validate import check_head
from pyproxy.sip.via import Via, parse_via
from test_sip_fuzz import mutated

needs_accel = pytest.mark.skipif(not accel.ENABLED, reason="the C accelerator is not built here")


def python_head(head: bytes):
    """parse_head's result, pure Python, in scan_head's shape; or the error it raises."""
    with pure_python():
        try:
            msg = parser.parse_head(head, len(head))
        except RemoteSIPError as e:
            return e
    first, second = (msg.status, msg.reason) if not msg.is_request else (msg.method, msg.ruri)
    return (msg._start, not msg.is_request, first, second, msg._names, msg._lines, msg._cl), msg.version


def python_via(text: str):
    with pure_python():
        try:
            via = parse_via(text)
        except RemoteSIPError as e:
            return e
    return (via.transport, via.host, via.port, via.params), via.protocol


def agree(data: bytes) -> None:
    """Where C takes a head or a Via value, pure Python parses it to the same result."""
    head = head_of(data)
    scanned = accel.scan_head(head, _by_bytes)
    if scanned is not None:     # else not the common case: the Python path alone judges it
        expected = python_head(head)
        assert not isinstance(expected, RemoteSIPError), f"C accepted what Python refuses: {expected}"
        assert scanned[:7] == expected[0] and expected[1] == "SIP/2.0"
        agree_facts(head, scanned[7])
        agree_message(head)
    agree_datagram(data)
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"via", b"v"):
            for text in split_list(value.decode("utf-8", "surrogateescape")):
                agree_via(text)


def agree_facts(head: bytes, facts: dict) -> None:
    """Each fact C put in the message's cache is what the Python path reads, without an error;
    and the message parse_head() makes with them reads the same."""
    accelerated = parser.parse_head(head, len(head))
    with pure_python():
        msg = parser.parse_head(head, len(head))
        python = {"cseq": lambda m: m.cseq, "max-forwards": lambda m: m.max_forwards,
                  "call-id-ok": lambda m: bool(grammar.CALL_ID.fullmatch(m.call_id)),
                  "top_via": lambda m: fields(m.top_via), "second_via": lambda m: fields(m.second_via),
                  "head-ok": lambda m: check_head(m) is None}
        for key, fact in facts.items():
            try:
                expected = python[key](msg)
            except RemoteSIPError as e:
                raise AssertionError(f"C found {key} {fact!r} where Python finds {e}") from None
            assert fact == expected == python[key](accelerated), key
            if key.endswith("_via") and fact is not None:
                assert list(fact[3]) == list(expected[3])


def agree_message(head: bytes) -> None:
    """The message head_message() builds in C is the one the Python path builds, slot by slot."""
    same_message(accel.head_message(head, _by_bytes), lambda: parser.parse_head(head, len(head)))


def agree_datagram(data: bytes) -> None:
    """Where datagram_message() takes a datagram, Python parses it to the same message, its
    framing (raw, body) included; where it does not, Python may refuse it."""
    built = accel.datagram_message(data, _by_bytes, 65536)
    if built is not None:
        same_message(built, lambda: parser.parse_message(data))


def same_message(built, parse_in_python) -> None:
    with pure_python():
        try:
            expected = parse_in_python()
        except RemoteSIPError as e:
            raise AssertionError(f"C built a message where Python refuses it: {e}") from None
    assert type(built) is type(expected)
    for name in (name for cls in type(expected).__mro__ for name in getattr(cls, "__slots__", ())):
        if name != "_cache":        # (C's holds the facts it found: agree_facts checks them)
            assert getattr(built, name) == getattr(expected, name), name
    for key in ("top_via", "second_via"):
        if isinstance(built._cache.get(key), Via):
            assert fields(built._cache[key]) == fields(getattr(expected, key)) and \
                built._cache[key].protocol == "SIP/2.0"


@needs_accel
def test_use_types_refuses_a_class_whose_slots_it_does_not_fill():
    class Longer(Request):
        __slots__ = ("more",)
    with pytest.raises(TypeError, match="slots the accelerator does not know"):
        accel.use_types(Longer, Response, Via, Edits)
    with pytest.raises(TypeError, match="has no slot method"):
        accel.use_types(Response, Response, Via, Edits)  # (a Response has no method slot)
    with pytest.raises(TypeError, match="Via has no slot top"):
        accel.use_types(Request, Response, Via, Via)
    # a refused call changed nothing: the classes in use are still read at their own offsets
    msg = parser.parse_message(b"INVITE sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nMax-Forwards: 9\r\n"
                               b"Content-Length: 0\r\n\r\n")
    assert type(msg) is Request
    msg.replace_line("max-forwards", b"Max-Forwards: 8")
    assert accel.serialized(msg, None) == b"INVITE sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nMax-Forwards: 8\r\n" \
                                          b"Content-Length: 0\r\n\r\n"
    accel.use_types(Request, Response, Via, Edits)


def fields(via):
    return None if via is None else (via.transport, via.host, via.port, via.params)


def agree_via(text: str) -> None:
    scanned = accel.scan_via(text)
    if scanned is not None:
        expected = python_via(text)
        assert not isinstance(expected, RemoteSIPError), f"C accepted what Python refuses: {expected}"
        assert scanned == expected[0] and expected[1] == "SIP/2.0"
        assert list(scanned[3]) == list(expected[0][3])        # the parameters' order too


@needs_accel
@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_c_and_python_agree_on_the_corpus(case):
    agree(case.data)


def head_of(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data[:end if end >= 0 else len(data)]


@needs_accel
def test_c_takes_the_common_case():
    taken = [case.name for case in CASES if accel.scan_head(head_of(case.data), _by_bytes) is not None]
    assert len(taken) >= 20, taken      # else the accelerator accelerates nothing
    head = (b"INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\n"
            b"Max-Forwards: 70\r\nCall-ID: a@b\r\nCSeq: 7 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>")
    assert accel.scan_head(head, _by_bytes)[7] == {
        "top_via": ("UDP", "192.0.2.1", None, {"branch": "z9hG4bK-1"}), "second_via": None, "cseq": (7, "INVITE"),
        "max-forwards": 70, "call-id-ok": True, "head-ok": True}
    # and the serializer, for the edits of a stateless forward (else its agreement tests test nothing)
    lines = [b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1;rport", b"Max-Forwards: 70"]
    names = ["via", "max-forwards"]
    assert accel.edited_block(lines, names, {1: b"Max-Forwards: 69"}, set(), 0, (None, 5060)) == (
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1;rport=5060\r\nMax-Forwards: 69")
    assert accel.edited_block([b"Via: a, b", lines[1]], names, {}, set(), 1, None) == b"Via: b\r\nMax-Forwards: 70"
    assert accel.edited_block(lines, names, {}, {0}, 0, None) == b"Max-Forwards: 70"
    # and the whole message, for those edits and our Via on top
    msg = parser.parse_message(head + b"\r\nVia: SIP/2.0/UDP 192.0.2.3\r\nContent-Length: 1\r\n\r\nx")
    msg.replace_line("max-forwards", b"Max-Forwards: 69")
    msg.set_top_via_params(rport=5060)
    assert accel.serialized(msg, b"Via: ours") == b"\r\n".join([
        b"INVITE sip:b@example.com SIP/2.0", b"Via: ours", b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1;rport=5060",
        b"Max-Forwards: 69", *head.split(b"\r\n")[3:], b"Via: SIP/2.0/UDP 192.0.2.3", b"Content-Length: 1", b"", b"x"])
    assert accel.scan_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;rport;received=192.0.2.2") == (
        "UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK-1", "rport": None, "received": "192.0.2.2"})


VIAS = ["SIP/2.0/UDP h", "SIP/2.0/tls h.example.com.;BRANCH=z9hG4bK1;Rport=1", "SIP/2.0/UDP h:65536",
        "SIP/2.0/UDP h:0", "SIP/2.0/UDP h:123456", "SIP/2.0/UDP h:", "SIP/2.0/UDP h;branch",
        "SIP/2.0/UDP h;received=1.2.3.256", "SIP/2.0/UDP h;received=01.2.3.4", "SIP/2.0/UDP h;received",
        "SIP/2.0/UDP h;received=1.2.3", "SIP/2.0/UDP h;received=1.2.3.4.5", "SIP/2.0/UDP h;rport=65536",
        "SIP/2.0/UDP h;rport=x", "SIP/2.0/UDP h;rport=6;rport=x", "SIP/2.0/UDP -h", "SIP/2.0/UDP h-",
        "SIP/2.0/UDP h;a=", "SIP/2.0/UDP h;;a", "SIP/2.0/UDP h ;a", "SIP/2.0/UDP  h", "SIP/2.0/UDP h;a=b=c",
        "SIP/2.0/UDP [::1]:5060", "SIP/2.0/UDP h;a=\"q\"", "SIP/2.0/UDP h;a;a=1", "SIP/2.0/UDP h;received=9.9.9.9",
        "SIP/2.0/UDP é", "sip/2.0/UDP h", "SIP/2.0/UDP h;RECEIVED=bogus", "SIP/2.0/UDP h;BRANCH", "SIP/2.0/ h",
        "SIP/2.0/UDP", "SIP/2.0/UDP h:5060 ", "SIP/2.0/UDP h:５"]


HEADERS = ["CSeq: 2147483647 INVITE", "CSeq: 2147483648 INVITE", "CSeq: 01 INVITE", "CSeq: 1\tINVITE",
           "CSeq: 1  INVITE ", "CSeq: 1INVITE", "CSeq: INVITE", "CSeq: 12345678901 INVITE", "CSeq: 1 INV ITE",
           "CSeq: " + "9" * 400 + " INVITE", "Max-Forwards: 9999999999",
           "Max-Forwards: 255", "Max-Forwards: 256", "Max-Forwards: 0070", "Max-Forwards: ", "Max-Forwards: 7 0",
           "Max-Forwards: 00000000001", "Max-Forwards: -1", "Call-ID: a@b@c", "Call-ID: @b", "Call-ID: a@",
           "Call-ID: a{}[]?/\\\"<>:()@b", "Call-ID: a b", "Call-ID: é", "i: x", "v: SIP/2.0/TCP h",
           "Via: SIP/2.0/UDP h, SIP/2.0/UDP g", "Via: SIP/2.0/UDP h;received=1.1.1.1\r\nVia: junk",
           "Max-Forwards: 1\r\nMax-Forwards: 2", "Via: SIP/2.0/UDP h\r\nVia: SIP/2.0/UDP g;received=1.1.1.1",
           "Via: SIP/2.0/UDP h\r\nVia: SIP/2.0/UDP g, SIP/2.0/UDP f", "Via: SIP/2.0/UDP h\r\nVia: bad",
           "Via: SIP/2.0/UDP h\r\nVia: SIP/2.0/UDP g\r\nVia: SIP/2.0/UDP f",
           "Via: SIP/2.0/UDP [::1]:5062\r\nVia: SIP/2.0/UDP g", "Via: SIP/2.0/UDP h;rport=x\r\nVia: SIP/2.0/UDP g",
           "Via: SIP/2.0/UDP h, SIP/2.0/TCP g;rport=1", "Via: SIP/2.0/UDP h,", "Via: SIP/2.0/UDP h, bad",
           "Via: bad, SIP/2.0/UDP g", "Via: SIP/2.0/UDP h ,SIP/2.0/UDP g , SIP/2.0/UDP f", "Via: ,",
           "Via: SIP/2.0/UDP h\x0b, SIP/2.0/UDP g", "Via: SIP/2.0/UDP h;x=\"a,b\", SIP/2.0/UDP g",
           "Via: SIP/2.0/UDP h, SIP/2.0/UDP g\r\nVia: SIP/2.0/UDP f", "CSeq: 1 A\r\nCSeq: 1 A", "Call-ID: a\r\ni: b",
           # what decides "head-ok" besides the above: a CSeq naming another method, headers
           # missing or repeated where one is allowed
           "CSeq: 1 BYE", "CSeq: 1 invite", "From: <sip:a@b>;tag=1\r\nf: <sip:c@d>", "To: <sip:b@c>\r\nt: <sip:b@c>",
           "From: ", "To: ", "Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT",
           "Expires: 1\r\nExpires: 2", "Content-Type: a/b\r\nc: a/b", "Content-Type: a/b", "Expires: 1",
           "CSeq: x INVITE"]


@needs_accel
@pytest.mark.parametrize("line", HEADERS)
def test_c_and_python_agree_on_what_routing_reads(line):
    base = {"via": "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1", "cseq": "CSeq: 1 INVITE", "max-forwards":
            "Max-Forwards: 70", "call-id": "Call-ID: a@b", "from": "From: <sip:a@b>;tag=1", "to": "To: <sip:b@c>"}
    name = {"i": "call-id", "v": "via"}.get(line.split(":")[0].lower(), line.split(":")[0].lower())
    base[name] = line
    agree(("INVITE sip:b@example.com SIP/2.0\r\n" + "\r\n".join(base.values()) + "\r\n\r\n").encode())
    if name in ("from", "to"):      # and without it
        del base[name]
        agree(("INVITE sip:b@example.com SIP/2.0\r\n" + "\r\n".join(base.values()) + "\r\n\r\n").encode())


@needs_accel
@pytest.mark.parametrize("name", sorted(set(validate._REQUIRED) | set(validate._SINGLE)))
def test_c_and_python_agree_on_required_and_single_headers(name):
    """validate's own lists, each header missing and each twice: the C scan's counts follow them."""
    lines = {"via": "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1", "cseq": "CSeq: 1 INVITE", "max-forwards":
             "Max-Forwards: 70", "call-id": "Call-ID: a@b", "from": "From: <sip:a@b>;tag=1", "to": "To: <sip:b@c>",
             "content-type": "Content-Type: a/b", "date": "Date: Sat, 13 Nov 2010 23:29:00 GMT",
             "expires": "Expires: 1", "content-length": "Content-Length: 0"}
    request = "INVITE sip:b@example.com SIP/2.0\r\n{}\r\n\r\n"
    agree(request.format("\r\n".join(lines.values())).encode())
    assert "head-ok" in parser.parse_message(request.format("\r\n".join(lines.values())).encode())._cache
    agree(request.format("\r\n".join(line for key, line in lines.items() if key != name)).encode())
    agree(request.format("\r\n".join([*lines.values(), lines[name]])).encode())


@needs_accel
@pytest.mark.parametrize("status", [b"099", b"100", b"699", b"700", b"000", b"999"])
def test_c_and_python_agree_on_status_codes(status):
    agree(b"SIP/2.0 " + status + b" X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\n"
          b"To: <sip:b@c>\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


@needs_accel
@pytest.mark.parametrize("text", VIAS)
def test_c_and_python_agree_on_via_values(text):
    agree_via(text)


@needs_accel
@settings(max_examples=int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "400")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_c_and_python_agree_on_mutated_messages(data):
    agree(data)


def alike(result_of, *args, **kwargs) -> None:
    """``result_of(...)`` is the same with the accelerator as on the pure Python path."""
    with pure_python():
        expected = result_of(*args, **kwargs)
    assert result_of(*args, **kwargs) == expected


def stream_events(data: bytes, chunk: int, max_size: int = 65536) -> list:
    """What StreamParser makes of ``data`` fed ``chunk`` octets at a time: each message's framing
    and head as parsed, each keep-alive, and the error that ends the stream."""
    parser_ = StreamParser(max_size)
    events = []
    try:
        for i in range(0, len(data), chunk):
            parser_.feed(data[i:i + chunk])
            while (event := parser_.next_event()) is not None:
                events.append(event if isinstance(event, KeepAlive) else
                              (type(event), event.raw, event.body, event._start, event._names, event._lines,
                               event._hstart, event._hend, event._cl))
    except SIPError as e:
        events.append((type(e), str(e)))
    return events


@needs_accel
@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_c_and_python_frame_the_corpus_alike(case):
    stream = case.data + b"\r\n\r\n" + case.data + b"\r\n" + case.data
    for chunk in (1, 13, len(stream)):
        alike(stream_events, stream, chunk)
    alike(stream_events, stream, len(stream), max_size=len(case.data) - 1)       # too large


@needs_accel
def test_c_frames_a_stream():
    invite = (b"INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-1\r\n"
              b"Max-Forwards: 70\r\nCall-ID: a@b\r\nCSeq: 7 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\n"
              b"Content-Length: 3\r\n\r\nabc")
    buffer = bytearray(invite + invite[:40])
    msg = accel.stream_message(buffer, parser._by_bytes, 65536)
    assert (msg.raw, msg.body, msg.method) == (invite, b"abc", "INVITE")
    assert len(buffer) == len(invite) + 40          # (the caller takes the message off)
    assert accel.stream_message(bytearray(invite[:-1]), parser._by_bytes, 65536) is None     # not all there
    assert accel.stream_message(bytearray(invite), parser._by_bytes, len(invite) - 1) is None  # too large
    no_length = invite.replace(b"Content-Length: 3\r\n", b"")
    assert accel.stream_message(bytearray(no_length), parser._by_bytes, 65536) is None


@needs_accel
@settings(max_examples=int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "400")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), mutated(), st.integers(1, 300))
def test_c_and_python_frame_mutated_streams_alike(first, second, chunk):
    alike(stream_events, first + second, chunk)
    alike(stream_events, first + second, chunk, max_size=max(1, len(first)))


def test_the_accelerator_is_built_where_a_compiler_is():
    """A fresh install on a machine with a C compiler and Python's headers builds it: if this
    fails, the build backend (tools/pyproxy_build.py) lost the extension."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if os.environ.get("PYPROXY_NO_EXTENSIONS", "0") not in ("", "0"):
        pytest.skip("PYPROXY_NO_EXTENSIONS is set")
    if not shutil.which(compiler) or not headers.exists():
        pytest.skip(f"no C compiler ({compiler}) or no {headers}: the pure-Python path runs alone")
    assert accel.ENABLED


def enabled(code: str = "", **env) -> str:
    """accel.ENABLED in a new interpreter, after ``code``, with ``env`` set."""
    run = subprocess.run([sys.executable, "-c", code + "import pyproxy.sip.accel as a; print(a.ENABLED)"],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return run.stdout.strip()


def test_no_extensions_turns_it_off():
    assert enabled(PYPROXY_NO_EXTENSIONS="1") == "False"
    if accel.ENABLED:
        assert enabled(PYPROXY_NO_EXTENSIONS="0") == "True"


def test_a_module_built_from_another_version_is_not_used():
    """An editable install keeps the module it built in the tree: after a change of _speedups.c
    that changes what its functions take or give, the old one must not be used."""
    assert enabled("import sys, types; old = types.ModuleType('pyproxy.sip._speedups'); old.API = 0; "
                   "sys.modules['pyproxy.sip._speedups'] = old; ") == "False"


EDITS = [
    lambda m: m.replace_header("Max-Forwards", "69"),
    lambda m: m.set_top_via_params(rport=5060),
    lambda m: m.set_top_via_params(received="192.0.2.7"),
    lambda m: m.set_top_via_params(received="192.0.2.8", rport=1),
    lambda m: m.remove_top_via(),
    lambda m: m.remove_header("Contact"),
    lambda m: m.remove_header_line("Via", 0),
    lambda m: m.replace_header("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-r"),
    lambda m: m.set_body(b"v=0\r\n"),
    lambda m: m.add_header("X-Added", "1"),
    lambda m: m.set_top_via_params(received="x\\g<0>\\1"),      # written as it is, not as a regex template
    lambda m: m.is_request and m.set_ruri("sip:c@example.com"),
    lambda m: m.insert_via("SIP/2.0/TCP 192.0.2.11;branch=z9hG4bK-i"),
]
TOP = b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-top"     # serialize()'s extra line (a stateless forward's)


def serialized(data: bytes, edits) -> list:
    """What serialize() gives after each edit in turn, and make_response() for a request (which
    copies the Via lines with their edit), or the error, on the current path."""
    out = []
    try:
        msg = parser.parse_message(data)
    except RemoteSIPError:
        return out
    out.append(msg.serialize(TOP))
    for edit in edits:
        try:
            edit(msg)
            out += (msg.serialize(), msg.serialize(TOP))
            if msg.is_request:
                out.append(make_response(msg, 200, "OK", to_tag="t1"))
        except SIPError as e:
            out.append(type(e))
    return out


def serialize_alike(data: bytes, edits) -> None:
    with pure_python():
        expected = serialized(data, edits)
    assert serialized(data, edits) == expected


@needs_accel
@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_c_and_python_serialize_the_corpus_alike(case):
    for n in range(len(EDITS)):
        serialize_alike(case.data, EDITS[n:] + EDITS[:n])


def drop_every_line(msg) -> None:
    for name in dict.fromkeys(msg._names):
        if name != "content-length":
            msg.remove_header(name)
    msg.remove_header_line("Content-Length", 0)


@needs_accel
def test_c_and_python_serialize_a_message_without_its_lines_alike():
    for case in CASES[:40]:
        serialize_alike(case.data, [drop_every_line])
    serialize_alike(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 2\r\n\r\nab", [drop_every_line])


VIA_LINES = ["Via: SIP/2.0/UDP h;rport", "Via: SIP/2.0/UDP h;RPort=7;received=1.1.1.1", "v:SIP/2.0/UDP h ",
             "Via : SIP/2.0/UDP h; received ;rport = 9", "Via: SIP/2.0/UDP h;branch=\"q\"", "Via: SIP/2.0/UDP h, g",
             "Via: SIP/2.0/UDP h;x=é", "Via: SIP/2.0/UDP h;rport;rport=3;received;received=2.2.2.2",
             "Via: SIP/2.0/UDP h;receivedx=1;rportx", "Via: SIP/2.0/UDP h;;rport", "Via: SIP/2.0/UDP h;received=a;b",
             "Via: SIP/2.0/UDP h ,  g,k", "Via:SIP/2.0/UDP h,", "Via: ,SIP/2.0/UDP g", "Via: SIP/2.0/UDP h\x0b, g",
             "Via: SIP/2.0/UDP h;x=<a>, g", "Via: SIP/2.0/UDP h,,g", "Via: SIP/2.0/UDP h, g\r\n , f",
             "Via: SIP/2.0/UDP h;RECEIVED=1.1.1.1;RPORT", "Via: SIP/2.0/UDP h, g\r\nVia: SIP/2.0/UDP f",
             "Via: SIP/2.0/UDP h\r\nVia:\" SIP/2.0/UDP g"]        # (a bad Via under one removed, then replaced)


@needs_accel
@pytest.mark.parametrize("line", VIA_LINES)
def test_c_and_python_rewrite_via_lines_alike(line):
    data = (f"INVITE sip:b@example.com SIP/2.0\r\n{line}\r\nVia: SIP/2.0/UDP g;branch=z9hG4bK-2\r\n"
            "Max-Forwards: 70\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()
    for n in range(len(EDITS)):
        serialize_alike(data, EDITS[n:] + EDITS[:n])


@needs_accel
@settings(max_examples=int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "400")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.permutations(range(len(EDITS))))
def test_c_and_python_serialize_mutated_messages_alike(data, order):
    serialize_alike(data, [EDITS[i] for i in order])


TO_LINES = ["To: <sip:b@example.com>", "To: <sip:b@example.com> \t", "t:sip:b@example.com;tag=x",
            "To: <sip:b@example.com>\r\nTo: <sip:c@example.com>", "To: \"B\" <sip:b@example.com>;x=1  ",
            "To: <sip:b@example.com\r\n >", "To: sip:b@<", "X-No-To: 1"]


@needs_accel
@pytest.mark.parametrize("to", TO_LINES)
def test_c_and_python_make_the_same_responses(to):
    data = (f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;rport;branch=z9hG4bK-1\r\n"
            f"f: <sip:a@example.com>;tag=1\r\n{to}\r\ni: a@b\r\nCSeq: 1 REGISTER\r\nv: SIP/2.0/UDP g, k\r\n"
            f"From: <sip:second@example.com>\r\nContent-Length: 0\r\n\r\n").encode()

    def responses():
        msg = parser.parse_message(data)
        out = [make_response(msg, 401, "Unauthorized", to_tag="t1", headers=[("WWW-Authenticate", "Digest x")]),
               make_response(msg, 100, "Trying")]
        msg.set_top_via_params(received="192.0.2.1", rport=5060)
        return out + [make_response(msg, 200, "OK", to_tag="t1"), make_response(msg, 100, "Trying")]

    with pure_python():
        expected = responses()
    assert responses() == expected


@needs_accel
def test_c_makes_the_head_of_a_common_response():
    msg = parser.parse_message(b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;rport\r\n"
                               b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: a@b\r\n"
                               b"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n")
    head = accel.response_head(b"SIP/2.0 200 OK", msg._names, msg._lines, ("192.0.2.1", 5060), b"t1")
    assert head == (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;rport=5060;received=192.0.2.1\r\n"
                    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=t1\r\nCall-ID: a@b\r\n"
                    b"CSeq: 1 REGISTER")


URI_TEXTS = ["sip:alice@example.com", "sip:alice@Example.COM:5070;transport=TCP;lr;maddr=10.0.0.1",
             "sips:bob@192.0.2.1:5061", "sip:example.com", "sip:h", "sip:h.", "sip:h-", "sip:-h", "sip:a_b.c-d",
             "sip:u@h:0", "sip:u@h:65535", "sip:u@h:65536", "sip:u@h:123456", "sip:u@h:", "sip:u@h;", "sip:u@h;a=",
             "sip:u@h;=b", "sip:u@h;a=b=c", "sip:u@h;A=1;a=2;B", "sip:@h", "sip:a@b@c", "sip:a;b=c?d/e@h",
             "sip:alice:secret@h", "sip:%61lice@h", "sip:u@[2001:db8::1]:5060", "sip:u@h?subject=x",
             "sip:ü@h", "sip:u@h;x=ü", "sip:u@h;lr;transport=udp;x=[a]/:&+$", "sip:u@h;x=a;", "sip:u@h ;x",
             "sip:u@h:5060;transport=UDP", "sip:u@1.2.3.4;maddr=[::1]", "sip:+1-212@h;user=phone",
             "sip:u@h:05060", "sip:u@h:5060x", "sip:a&=+$,;?/~*'()!@h"]


def uri_result(text: str):
    """What uri._parse_uri() (not the cached parse_uri()) makes of ``text``, on the current path."""
    try:
        u = _parse_uri(text)
    except RemoteSIPError as e:
        return type(e), str(e)
    return u.scheme, u.user, u.password, u.host, u.port, list(u.params.items()), u.headers, u.opaque, str(u)


@needs_accel
@pytest.mark.parametrize("text", URI_TEXTS)
def test_c_and_python_parse_uris_alike(text):
    alike(uri_result, text)


@needs_accel
@settings(max_examples=int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "400")), deadline=None)
@given(st.text(alphabet="aZ09-_.!~*'()&=+$,;?/@:[]%<> \tü", max_size=30))
def test_c_and_python_parse_generated_uris_alike(rest):
    alike(uri_result, "sip:" + rest)
    alike(uri_result, "SIPS:" + rest)


@needs_accel
def test_c_parses_the_common_uri():
    assert accel.sip_uri_parts("alice@192.0.2.1:5060;Transport=UDP;lr") == \
        ("alice", "192.0.2.1", 5060, {"transport": "UDP", "lr": None})


NAME_ADDR_TEXTS = [
    "<sip:alice@example.com>", " <sip:alice@example.com>;tag=1928 \t", '"Alice" <sip:alice@example.com>;tag=x',
    '"A \\"q\\" B" <sip:a@h>', '"unterminated <sip:a@h>', '"" <sip:a@h>', '"Al\tice"<sip:a@h>',
    "Alice Smith <sip:a@h>", "Alice\t<sip:a@h>", "caller<sip:a@h>", "Al@ce <sip:a@h>", 'Al"ice <sip:a@h>',
    "<SIP:Alice@Example.COM:5070;Transport=TCP;lr>;Expires=60;q=0.5;EXPIRES=30",
    "<sips:b@192.0.2.1:5061>", "<tel:+1-212>", "<mailto:a@h>", "<sip:a@h", "<sip:a@h>>", "<sip:a@h>x",
    "<sip:a@h> ;tag=1", "<sip:a@h>; tag=1", "<sip:a@h>;tag = 1", "<sip:a@h>;;tag=1", "<sip:a@h>;", "<sip:a@h>;=1",
    "<sip:a@h>;tag=", "<sip:a@h>;tag=a=b", "<sip:a@h>;tag=[::1]:5", '<sip:a@h>;+sip.instance="<urn:uuid:1-2>"',
    '<sip:a@h>;x="a;b"', '<sip:a@h>;x="a\\"b"', '<sip:a@h>;x="open', "<sip:a@h>;x=ü", "<sip:ü@h>", "Ü <sip:a@h>",
    "<sip:a@h?subject=x>", "<sip:a:pw@h>", "<sip:%61@h>", "<sip:a@[2001:db8::1]>", "<sip:a@h:65536>",
    "< sip:a@h>", "<sip:a@h >", "<>", "<:a>", "sip:a@h;tag=1", "*", "", "   ", "<sip:a@h>\x0b", "\x0c<sip:a@h>",
    "<sip:a@h>;tag=1\r\n", "<sip:a@h>;lr;lr=2", "<sip:u@h;transport=udp>;expires=3600;+sip.ice;reg-id=1",
]


def name_addr_result(text: str):
    """What parse_name_addr() makes of ``text``, on the current path."""
    try:
        a = parse_name_addr(text)
    except RemoteSIPError as e:
        return type(e), str(e)
    u = a.uri
    return (a.display, list(a.params.items()), u.scheme, u.user, u.password, u.host, u.port, list(u.params.items()),
            u.headers, u.opaque, str(u), str(a))


@needs_accel
@pytest.mark.parametrize("text", NAME_ADDR_TEXTS)
def test_c_and_python_parse_name_addrs_alike(text):
    alike(name_addr_result, text)


@needs_accel
@settings(max_examples=int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "400")), deadline=None)
@given(st.text(alphabet='aZ09-_.!~*+\'()&=$,;?/@:[]%<>" \t\\ü', max_size=30),
       st.text(alphabet='aZ09-.!~*+\'=;:[]<>" \t\\ü', max_size=20))
def test_c_and_python_parse_generated_name_addrs_alike(rest, params):
    alike(name_addr_result, rest)
    alike(name_addr_result, f"<sip:{rest}>{params}")
    alike(name_addr_result, f'"{params}" <SIP:{rest}>;{params}')
    alike(name_addr_result, f"{params}<sips:a@h>{rest}")


@needs_accel
def test_c_parses_the_common_name_addr():
    assert accel.name_addr_parts('"Al" <sip:alice@192.0.2.1:5060;Transport=UDP>;Tag=1;lr') == \
        ("Al", "sip", "sip:alice@192.0.2.1:5060;Transport=UDP", "alice", "192.0.2.1", 5060, {"transport": "UDP"},
         {"tag": "1", "lr": None})
    assert accel.name_addr_parts("<tel:1>") is None         # (the Python path's)


CREDENTIALS = [
    'Digest username="alice", realm="example.com", nonce="abc", uri="sip:example.com", '
    'response="0123456789abcdef0123456789abcdef"',
    'Digest username="bob",realm="r",nonce="n",uri="sip:r",response="0123456789abcdef0123456789abcdef",'
    'algorithm=MD5,qop=auth,nc=00000001,cnonce="c",opaque="o"',
    "Digest \tusername = alice , realm=r,nonce=n,uri=sip:r,response=0123456789ABCDEF0123456789abcdef\t",
    'Digest username="a\\"b", realm="r", nonce="n", uri="sip:r", response="0123456789abcdef0123456789abcdef"',
    'Digest username="alice", username="bob"', 'Digest USERNAME="a", Username="b"', 'Digest username="open',
    'Digest username="a" realm="r"', 'Digest username="a",', 'Digest ,username="a"', 'Digest username',
    'Digest =x', 'Digest username=', 'Digest username="a"x', 'Digest username="a\rb"', "Digest username=\"ü\"",
    'Digest username=a"b', "Digest nonce=" + "n" * 1024 + ",x=1", "Digest nonce=" + "n" * 1025,
    'Digest username="' + "u" * 1025 + '"', "Digest a=b;c=d", "Digest a=b, , c=d", "Basic dXNlcjpwYXNz",
]


def credentials_result(value: str):
    try:
        return parse_credentials(value)
    except Malformed as e:
        return Malformed, str(e)


def parse_credentials_alike(value: str) -> None:
    alike(credentials_result, value)
    rest = value.strip().partition(" ")[2]
    params = accel.digest_params(rest)
    if params is not None:          # what C reads, Python reads alike (whatever the checks after say)
        assert list(params.items()) == list(digest._params(rest).items())


@needs_accel
@pytest.mark.parametrize("value", CREDENTIALS)
def test_c_and_python_read_credentials_alike(value):
    parse_credentials_alike(value)


@needs_accel
@settings(max_examples=int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "400")), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["username", "realm", "nonce", "uri", "response", "qop", "nc", "x", "X-y",
                                           ""]),
                          st.text(alphabet='a0f:@"\\ \t,=ü\r', max_size=12), st.booleans()), max_size=7),
       st.sampled_from([",", ", ", " ,", ",\t", ";"]))
def test_c_and_python_read_generated_credentials_alike(params, separator):
    text = separator.join(f'{name}="{value}"' if quoted else f"{name}={value}" for name, value, quoted in params)
    parse_credentials_alike("Digest " + text)
    parse_credentials_alike("Digest " + text.replace('"', ""))


@needs_accel
def test_c_reads_the_common_credentials():
    assert accel.digest_params('username="alice", Realm=r ,nonce="n",uri="sip:r"') == \
        {"username": "alice", "realm": "r", "nonce": "n", "uri": "sip:r"}
    assert accel.digest_params('username="a\\"b"') is None          # (a quoted-pair: the Python path's)
