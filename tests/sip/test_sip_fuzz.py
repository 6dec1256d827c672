"""Property tests: whatever the bytes, the SIP layer answers with a message, None/KeepAlive, or a
SIPError subclass, never another exception."""

from __future__ import annotations

import os

from _corpus import CASES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyproxy.sip import (KeepAlive, Message, Request, SIPError, StreamParser, make_response,
                         parse_message)
from _parser_paths import parser_path  # noqa: F401 (autouse: each test on both parser paths)

# PYPROXY_FUZZ_EXAMPLES=20000 for a deeper run; the default keeps the suite fast.
SETTINGS = settings(max_examples=int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "400")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
SEEDS = [case.data for case in CASES]

READS = ("call_id", "cseq", "vias", "top_via", "from_", "to", "max_forwards", "contacts", "routes",
         "record_routes", "uri")


def exercise(msg: Message) -> None:
    for name in READS:
        try:
            value = getattr(msg, name, None)
            str(value)
        except SIPError:
            pass
    for name in ("via", "contact", "x-unknown", "content-length"):
        msg.header(name)
        msg.header_values(name)
    try:
        msg.validate()
    except SIPError:
        pass
    assert isinstance(msg.serialize(), bytes)
    edits = [lambda: msg.insert_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-f"),
             lambda: msg.set_top_via_params(received="192.0.2.2", rport=1),
             msg.remove_top_via, lambda: msg.add_record_route("<sip:192.0.2.1;lr>"),
             lambda: msg.replace_header("To", "<sip:x@y>"), lambda: msg.set_body(b"x")]
    for edit in edits:
        try:
            edit()
        except SIPError:
            pass
    assert isinstance(msg.serialize(), bytes)
    if isinstance(msg, Request):
        try:
            make_response(msg, 400, "Bad Request", to_tag="t")
        except SIPError:
            pass


def datagram(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SIPError:
        return
    exercise(msg)


def stream(chunks: list[bytes]) -> None:
    parser = StreamParser(max_size=4096)
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (event := parser.next_event()) is not None:
                assert isinstance(event, (Message, KeepAlive))
                if isinstance(event, Message):
                    exercise(event)
    except SIPError:
        pass


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b",", b";", b"\r\n", b"\r\n ", b'"', b"<", b">", b":",
                                                b"%", b"\x00", b"@", b"[", b"]", b" ", b"\n", b"=",
                                                b"\xff", b"\t", b"*"]))
        elif data:
            del data[at:at + draw(st.integers(1, 20))]
    return bytes(data)


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_datagram(data):
    datagram(data)


@SETTINGS
@given(mutated())
def test_mutated_corpus_datagram(data):
    datagram(data)


@SETTINGS
@given(mutated(), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_mutated_corpus_stream(data, sizes):
    chunks, i = [], 0
    for size in sizes * (len(data) // max(1, sum(sizes)) + 1):
        chunks.append(data[i:i + size])
        i += size
    stream(chunks + [data[i:], b"\r\n\r\n"])


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_arbitrary_bytes_stream(chunks):
    stream(chunks)
