"""Bad input never crashes a worker: garbage and empty datagrams, the largest datagram UDP can
carry, malformed requests (400), an oversize request (513), every RFC 4475 message classed
`invalid` over UDP and over TCP, a TCP stream that never ends its message, garbage on TCP, and
a TCP peer that says nothing.

One proxy (children=4) takes all of it (module-scoped, the tests run in file order); the last
test checks that every worker still serves and that the master's children are the very
processes it started with."""

import random
import re
import selectors
import socket
import time
import uuid

import pytest
from ._harness import (LOOP, RFC4475, Reaper, owner, read_tcp_message, start_proxy, status_of, tcp_connect,
                      tcp_options, udp_exchange, udp_options, udp_socket, wait_closed)

CHILDREN = 4


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    reaper = Reaper()
    try:
        p = start_proxy(reaper, tmp_path_factory.mktemp("bad_input"), CHILDREN)
        p.initial = p.processes()
        assert len(p.initial) == CHILDREN + 1, p.initial
        yield p
    finally:
        reaper.stop_all()


def assert_alive(proxy):
    assert proxy.alive(), f"pyproxy exited with {proxy.popen.returncode}\n{proxy.tail()}"


def invalid_corpus():
    manifest = RFC4475 / "MANIFEST.tsv"
    assert manifest.is_file(), f"{manifest} is missing: the shared folder must lie beside the repository"
    rows = [ln.split("\t") for ln in manifest.read_text().splitlines()[1:] if ln.strip()]
    files = [f for f, _sec, verdict, *_ in rows if verdict.split(";", 1)[0].strip() == "invalid"]
    assert len(files) >= 20, files
    return {f: (RFC4475 / f).read_bytes() for f in files}


def bad_request(proto: str, lport: int, mutate: str) -> bytes:
    """A request with a readable Via naming the sender, broken in one way."""
    lines = [f"INVITE sip:bob@{LOOP}:9 SIP/2.0",
             f"Via: SIP/2.0/{proto.upper()} {LOOP}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
             "Max-Forwards: 70", f"From: <sip:alice@{LOOP}>;tag=a1", f"To: <sip:bob@{LOOP}>",
             f"Call-ID: bad-{uuid.uuid4().hex}", "CSeq: 1 INVITE", "Content-Length: 0"]
    if mutate == "cseq":
        lines[6] = "CSeq: notanumber INVITE"
    elif mutate == "no-from":
        del lines[3]
    elif mutate == "cseq-method":
        lines[6] = "CSeq: 1 BYE"
    elif mutate == "content-length":
        lines[7] = "Content-Length: -5"
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


BAD_REQUESTS = ["cseq", "no-from", "cseq-method", "content-length"]


def test_garbage_datagrams_get_no_reply(proxy):
    rnd = random.Random(4475)
    datagrams = [rnd.randbytes(rnd.randint(1, 1400)) for _ in range(30)]
    datagrams += [b"", b"\r\n\r\n", b"hello proxy\r\n\r\n", b"SIP/2.0\r\n\r\n",
                  b"\x00" * 512, rnd.randbytes(65507)]  # the largest UDP payload
    # malformed responses are dropped too
    datagrams += [f"SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP {LOOP}:9;branch=z9hG4bKx\r\n\r\n".encode(),
                  b"SIP/2.0 200\r\nVia: garbage\r\nContent-Length: 0\r\n\r\n"]
    socks = []
    for d in datagrams:
        s = udp_socket()
        s.sendto(d, (LOOP, proxy.port))
        socks.append(s)
    replies = collect_udp(socks, 1.5)
    for s in socks:
        s.close()
    got = {i: r for i, r in enumerate(replies) if r is not None}
    assert not got, {i: (datagrams[i][:40], r[:60]) for i, r in got.items()}
    assert_alive(proxy)


def test_udp_datagram_over_the_size_limit_cannot_be_sent():
    """A 70 kB datagram cannot exist on IPv4 (65507 octets of payload at most): the largest one
    is sent by the test above, and 513 is tested over TCP below."""
    with udp_socket() as s, pytest.raises(OSError):
        s.sendto(b"x" * 70000, (LOOP, 9))


@pytest.mark.parametrize("mutate", BAD_REQUESTS)
def test_malformed_request_with_readable_via_gets_400_over_udp(proxy, mutate):
    with udp_socket(1.0) as s:
        reply = udp_exchange(proxy.port, bad_request("udp", s.getsockname()[1], mutate), sock=s, tries=2)
    assert reply is not None and status_of(reply) == 400, (reply, proxy.tail(10))
    # the reason phrase says what is wrong: the sender's developer reads it there
    assert re.match(rb"SIP/2\.0 400 Bad Request \(\S[^\r\n]*\)\r\n", reply), reply[:100]
    assert_alive(proxy)


@pytest.mark.parametrize("mutate", BAD_REQUESTS)
def test_malformed_request_with_readable_via_gets_400_over_tcp(proxy, mutate):
    with tcp_connect(proxy.port) as s:
        s.sendall(bad_request("tcp", s.getsockname()[1], mutate))
        reply = read_tcp_message(s, time.monotonic() + 3, bytearray())
        if mutate == "content-length" and reply is None:
            # a framing error on a stream: closing the connection is right too (RFC 4475 3.1.2.3)
            closed, _ = wait_closed(s, 0.1)
            assert closed, f"no reply and the connection is still open\n{proxy.tail(10)}"
            return
    assert reply is not None and status_of(reply) == 400, (reply, proxy.tail(10))
    assert_alive(proxy)


def test_oversize_request_over_tcp_gets_513(proxy):
    body = b"x" * 70000
    with tcp_connect(proxy.port, timeout=5) as s:
        lport = s.getsockname()[1]
        head = (f"MESSAGE sip:bob@{LOOP}:9 SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {LOOP}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:alice@{LOOP}>;tag=a1\r\nTo: <sip:bob@{LOOP}>\r\n"
                f"Call-ID: big-{uuid.uuid4().hex}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        # The header section announces the size: the proxy may answer 513 before the body comes,
        # and may close without reading the rest (an RST would then discard its reply), so wait
        # for an answer first and send the rest of the body only if none came.
        s.sendall(head + body[:1000])
        reply = read_tcp_message(s, time.monotonic() + 1.5, bytearray())
        if reply is None:
            try:
                s.sendall(body[1000:])
            except OSError:
                pass
            reply = read_tcp_message(s, time.monotonic() + 3, bytearray())
    assert reply is not None and status_of(reply) == 513, (reply, proxy.tail(10))
    assert_alive(proxy)


def collect_udp(socks, timeout):
    replies = [None] * len(socks)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            try:
                data = key.fileobj.recv(65535)
            except OSError:
                continue
            if replies[key.data] is None:
                replies[key.data] = data
    sel.close()
    return replies


def check_corpus_outcomes(outcomes, corpus, proxy):
    """A request: no reply, or a 4xx/5xx. A response: never anything back."""
    bad = {}
    for name, reply in outcomes.items():
        if reply is None:
            continue
        status = status_of(reply)
        if corpus[name].startswith(b"SIP/2.0 ") or status is None or not 400 <= status <= 599:
            bad[name] = reply[:80]
    assert not bad, f"unexpected answers: {bad}\n{proxy.tail(20)}"
    assert_alive(proxy)


def test_rfc4475_invalid_messages_over_udp(proxy):
    corpus = invalid_corpus()
    socks = {}
    for name, data in corpus.items():
        s = udp_socket()
        s.sendto(data, (LOOP, proxy.port))
        socks[name] = s
    replies = collect_udp(list(socks.values()), 2.0)
    for s in socks.values():
        s.close()
    outcomes = dict(zip(socks, replies))
    print({n: status_of(r) if r else None for n, r in outcomes.items()})
    check_corpus_outcomes(outcomes, corpus, proxy)


def test_rfc4475_invalid_messages_over_tcp(proxy):
    corpus = invalid_corpus()
    conns = {}
    for name, data in corpus.items():  # each on a fresh connection
        s = tcp_connect(proxy.port)
        try:
            s.sendall(data)
        except OSError:
            pass
        conns[name] = s
    outcomes = collect_tcp(conns, 2.0)
    for s in conns.values():
        s.close()
    print({n: status_of(r) if r else None for n, r in outcomes.items()})
    check_corpus_outcomes(outcomes, corpus, proxy)


def collect_tcp(conns, timeout):
    """name -> the first SIP message read from that connection, or None (closed or silent)."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for name, s in conns.items():
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, name)
        bufs[name] = bytearray()
    outcomes = dict.fromkeys(conns)
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            name = key.data
            try:
                chunk = key.fileobj.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                bufs[name] += chunk
                msg = read_tcp_message(key.fileobj, 0, bufs[name])  # complete already? (no waiting)
                if msg is None:
                    continue
                outcomes[name] = msg
            sel.unregister(key.fileobj)
    sel.close()
    return outcomes


def test_tcp_stream_without_message_end_is_closed(proxy):
    s = tcp_connect(proxy.port, timeout=5)
    head = (f"INVITE sip:bob@{LOOP}:9 SIP/2.0\r\nVia: SIP/2.0/TCP {LOOP}:{s.getsockname()[1]};"
            f"branch=z9hG4bKendless\r\nX-Endless: ").encode()
    sent, closed_early = 0, False
    try:
        s.sendall(head)
        chunk = b"a" * 65536
        while sent < 1 << 20:
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        closed_early = True
    except socket.timeout:
        pass  # the proxy stopped reading: it must still close the connection
    closed, data = (True, b"") if closed_early else wait_closed(s, 5.0)
    s.close()
    assert closed, f"connection still open 5 s after {sent} octets without a message end\n{proxy.tail(10)}"
    assert not data or status_of(data) in (400, 513), data[:80]
    assert_alive(proxy)


def test_tcp_garbage_stream_is_closed(proxy):
    rnd = random.Random(5118)
    with tcp_connect(proxy.port) as s:
        s.sendall(rnd.randbytes(4000) + b"\r\n\r\n")
        t0 = time.monotonic()
        closed, data = wait_closed(s, 5.0)
    assert closed, f"a TCP stream of garbage was not closed within 5 s\n{proxy.tail(10)}"
    assert not data or status_of(data) == 400, data[:80]
    print(f"closed after {time.monotonic() - t0:.2f} s")
    assert_alive(proxy)


def test_every_worker_still_serves_and_none_crashed(proxy):
    assert_alive(proxy)
    call_ids = []
    n = 0
    while min((sum(owner(c, CHILDREN) == k for c in call_ids) for k in range(1, CHILDREN + 1))) < 3:
        n += 1
        call_ids.append(f"alive-{n}-{uuid.uuid4().hex[:6]}")
        assert n < 1000
    udp = {c: udp_options(proxy.port, c) for c in call_ids}
    tcp = {}
    with tcp_connect(proxy.port) as s:
        for c in call_ids:
            tcp[c + "-tcp"] = tcp_options(proxy.port, c + "-tcp", sock=s)
    assert set(udp.values()) == {200}, {c: (owner(c, CHILDREN), st) for c, st in udp.items() if st != 200}
    assert set(tcp.values()) == {200}, {c: (owner(c, CHILDREN), st) for c, st in tcp.items() if st != 200}
    time.sleep(0.3)
    served = {m["callid"]: int(m["worker"]) for m in proxy.processing() if m["callid"] in udp or m["callid"] in tcp}
    assert {c: owner(c, CHILDREN) for c in list(udp) + list(tcp)} == served
    assert proxy.processes() == proxy.initial, "the master's children changed (a worker crashed and was respawned?)"


def test_idle_tcp_connection_is_closed_after_lifetime(reaper, tmp_path):
    lifetime = 2
    p = start_proxy(reaper, tmp_path, CHILDREN, f"tcp_connection_lifetime={lifetime}")
    initial = p.processes()
    s = tcp_connect(p.port)
    t0 = time.monotonic()
    closed, data = wait_closed(s, lifetime + 5)
    took = time.monotonic() - t0
    s.close()
    assert closed and data == b"", f"idle connection not closed after {took:.1f} s ({data[:60]!r})\n{p.tail(10)}"
    assert took >= lifetime - 1, f"idle connection closed after {took:.1f} s, before the lifetime ({lifetime} s)"
    assert p.answers() == (200, 200) and p.processes() == initial
