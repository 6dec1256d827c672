"""Every corpus message replayed through StreamParser: whole, byte by byte, in random chunks.

Stream semantics differ from datagrams where the manifest says so: Content-Length is mandatory
(inv2543 is an error), a Content-Length larger than what arrived means "wait for more" (clerr),
a header section without its empty line is still incomplete (baddn), and dblreq's trailing
octets are the next message on the stream.
"""

from __future__ import annotations

import random

import pytest
from _corpus import BY_NAME, CASES, case_ids

from pyproxy.sip import KeepAlive, MessageTooLarge, RemoteSIPError, StreamParser, parse_message
from _parser_paths import parser_path  # noqa: F401 (autouse: each test on both parser paths)

PING, PONG = b"\r\n\r\n", b"\r\n"
WAITS = {"clerr.dat", "baddn.dat"}     # incomplete on a stream: no event, no error
STREAM_ERRORS = {"inv2543.dat"}       # no Content-Length


def run(chunks, max_size=65536):
    """Feed chunks, draining events after each; returns events (an error ends the list)."""
    parser = StreamParser(max_size)
    events = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            try:
                event = parser.next_event()
            except RemoteSIPError as exc:
                events.append(type(exc))
                with pytest.raises(RemoteSIPError):
                    parser.next_event()  # the stream stays dead
                return events
            if event is None:
                break
            events.append(event)
    return events


def chunkings(stream: bytes, seed: int):
    rng = random.Random(seed)
    yield "whole", [stream]
    yield "bytes", [stream[i:i + 1] for i in range(len(stream))]
    for n in range(3):
        pieces, i = [], 0
        while i < len(stream):
            size = rng.choice([1, 2, 3, 5, 8, 13, 40, 100, 700])
            pieces.append(stream[i:i + size])
            i += size
        yield f"random{n}", pieces


def summary(events):
    """Messages as raw bytes, errors as their class; keep-alives dropped (their split into
    PING/PONG depends on chunking: a lone buffered CRLF is reported as PONG at once)."""
    return [e.raw if hasattr(e, "raw") else e for e in events if not isinstance(e, KeepAlive)]


def expected(case):
    if case.name in WAITS:
        return []
    if case.name in STREAM_ERRORS:
        return [RemoteSIPError]
    try:
        msg = parse_message(case.data)
    except RemoteSIPError:
        return [RemoteSIPError]
    return [msg.raw, msg.raw]


SIMPLE = [c for c in CASES if c.name != "dblreq.dat"]


@pytest.mark.parametrize("case", SIMPLE, ids=case_ids(SIMPLE))
def test_replay(case):
    # ping, message, pong, message again: framing must find the second copy too. An incomplete
    # message is sent alone (a CRLF after baddn's last header would complete it).
    stream = PING + case.data if case.name in WAITS else PING + case.data + PONG + case.data
    want = expected(case)
    whole = run([stream])
    assert summary(whole) == want
    if want == [case.data, case.data] or (want and isinstance(want[0], bytes)):
        assert whole[0] is KeepAlive.PING and whole[2] is KeepAlive.PONG
    for label, chunks in chunkings(stream, seed=hash(case.name) & 0xFFFF):
        assert summary(run(chunks)) == want, label


def test_dblreq_is_two_messages_on_a_stream():
    data = BY_NAME["dblreq.dat"].data
    events = run([data])
    register = parse_message(data)
    assert events[0].raw == register.raw and events[1] is KeepAlive.PONG
    # The INVITE's Content-Length (150) ends before "C\r\n\r\n", which is then garbage.
    assert events[2].method == "INVITE" and events[3] is RemoteSIPError and len(events) == 4
    for _, chunks in chunkings(data, seed=7):
        assert summary(run(chunks)) == summary(events)


def test_keepalives():
    parser = StreamParser()
    parser.feed(b"\r\n\r\n\r\n")
    assert parser.next_event() is KeepAlive.PING
    assert parser.next_event() is KeepAlive.PONG
    assert parser.next_event() is None
    parser.feed(b"\r\n\r")
    assert parser.next_event() is None  # could be a ping: wait
    parser.feed(b"\n")
    assert parser.next_event() is KeepAlive.PING
    parser.feed(b"\rX")
    with pytest.raises(RemoteSIPError):
        parser.next_event()


def test_oversize_header_section_fails_fast():
    parser = StreamParser(max_size=4096)
    parser.feed(b"INVITE sip:a@b SIP/2.0\r\nX-Pad: ")
    assert parser.next_event() is None
    fed = 0
    with pytest.raises(MessageTooLarge) as info:
        while fed < 1 << 20:
            parser.feed(b"a" * 1000)
            fed += 1000
            assert parser.next_event() is None
    assert fed <= 5000 and info.value.status == 513
    with pytest.raises(MessageTooLarge):
        parser.feed(b"more")


def test_oversize_content_length():
    parser = StreamParser(max_size=1000)
    parser.feed(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
    with pytest.raises(MessageTooLarge):
        parser.next_event()


def test_garbage_is_an_error():
    parser = StreamParser()
    parser.feed(b"\x16\x03\x01 not sip at all\r\n\r\n")
    with pytest.raises(RemoteSIPError):
        parser.next_event()
