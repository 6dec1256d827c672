"""RFC 3263 through a running proxy and a DNS server of the test's own (dns_server=): SRV, then
the target's address; a name with a port by its address; failures answered 477; a DNS server that
never answers blocks nobody; sips: by _sips._tcp with the certificate checked against the domain."""

import random
import re
import socket
import time
import uuid

import pytest

from pyproxy.config.values import Proto
from pyproxy.kernel.loop import EventLoop
from pyproxy.runtime.resolver import UNKNOWN, Resolver, candidates, nameservers, order_srv, read_hosts

from ._harness import LOOP, free_port, options_request, read_tcp_message, status_of, udp_socket
from .test_tls import accept_request, tls_server, tls_settings


def send(proxy, u, ruri, call_id=None):
    call_id = call_id or f"dns-{uuid.uuid4().hex}"
    u.sendto(options_request(proxy.port, call_id, "udp", u.getsockname()[1], ruri=ruri), (LOOP, proxy.port))
    return call_id


def test_srv_then_the_targets_address_and_the_answers_are_cached(proxy_factory, dns_zone):
    with udp_socket(5.0) as uas, udp_socket(5.0) as u:
        zone = dns_zone({("_sip._udp.example.test", "SRV"): [f"10 0 {uas.getsockname()[1]} box1.example.test.",
                                                              "20 0 9 box2.example.test."],
                         ("box1.example.test", "A"): [LOOP]})
        proxy = proxy_factory(children=1, extra=f"dns_server={LOOP}:{zone.port}\n")
        for _ in range(3):
            call_id = send(proxy, u, "sip:bob@example.test")
            got, _ = uas.recvfrom(65536)
            assert got.startswith(b"OPTIONS sip:bob@example.test SIP/2.0") and call_id.encode() in got
    # every SRV target's address is asked once (the next ones are for failover), then cached
    assert zone.questions == {("_sip._udp.example.test", "SRV"): 1, ("box1.example.test", "A"): 1,
                              ("box2.example.test", "A"): 1}


def test_a_name_with_a_port_goes_by_its_address(proxy_factory, dns_zone):
    with udp_socket(5.0) as uas, udp_socket(5.0) as u:
        zone = dns_zone({("uas.example.test", "A"): [LOOP]})
        proxy = proxy_factory(children=1, extra=f"dns_server={LOOP}:{zone.port}\n")
        send(proxy, u, f"sip:bob@uas.example.test:{uas.getsockname()[1]}")
        assert uas.recvfrom(65536)[0].startswith(b"OPTIONS sip:bob@uas.example.test:")
    assert ("_sip._udp.uas.example.test", "SRV") not in zone.questions


def test_a_name_that_does_not_resolve_is_answered_477(proxy_factory, dns_zone):
    zone = dns_zone({})
    proxy = proxy_factory(children=1, extra=f"dns_server={LOOP}:{zone.port}\n")
    with udp_socket(5.0) as u:
        send(proxy, u, "sip:bob@nowhere.example.test")
        assert status_of(u.recvfrom(65536)[0]) == 477
    assert "nowhere.example.test does not exist" in proxy.log()


def test_a_dns_server_that_never_answers_blocks_nobody(proxy_factory, dns_zone):
    """One worker: while its question waits (1.5 s per server), it answers OPTIONS at once."""
    zone = dns_zone({})
    zone.silent = True
    proxy = proxy_factory(children=1, extra=f"dns_server={LOOP}:{zone.port}\n")
    with udp_socket(5.0) as u:
        waiting = send(proxy, u, "sip:bob@slow.example.test")
        started = time.monotonic()
        send(proxy, u, f"sip:{LOOP}:{proxy.port}")
        data, _ = u.recvfrom(65536)
        assert status_of(data) == 200 and time.monotonic() - started < 1.0
        data, _ = u.recvfrom(65536)
        assert status_of(data) == 477 and waiting.encode() in data
        assert 1.0 < time.monotonic() - started < 4.0
    assert zone.questions[("_sip._udp.slow.example.test", "SRV")] == 1


def test_sips_by_srv_and_the_certificate_checked_against_the_domain(proxy_factory, dns_zone, pki):
    """RFC 5922: the server at the SRV target must prove the SIP domain (biloxi.example.com), not
    the target's name."""
    port, server_port = free_port(), free_port()
    zone = dns_zone({("_sips._tcp.biloxi.example.com", "SRV"): [f"0 0 {server_port} sip1.biloxi.example.com."],
                     ("sip1.biloxi.example.com", "A"): [LOOP]})
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port) + f"tls_verify_server=1\n"
                                                                      f"dns_server={LOOP}:{zone.port}\n")
    server_ctx, listener = tls_server(pki, "biloxi.example.com", server_port)
    with udp_socket(5.0) as u:
        send(proxy, u, "sips:bob@biloxi.example.com")
        got = accept_request(server_ctx, listener)
    listener.close()
    assert got is not None and got.startswith(b"OPTIONS sips:bob@biloxi.example.com SIP/2.0")
    assert re.search(rb"Via: SIP/2.0/TLS 127\.0\.0\.1:\d+;branch=", got)


# -- the pure parts -------------------------------------------------------------------------------

def test_srv_order_is_priority_then_weight():
    records = [(20, 0, 1, "c"), (10, 1, 2, "a"), (10, 3, 3, "b"), (10, 0, 4, "z")]
    firsts = [order_srv(records, random.Random(seed))[0][3] for seed in range(400)]
    assert set(firsts) == {"a", "b"}
    assert 0.6 < firsts.count("b") / len(firsts) < 0.9           # weight 3 of 4
    for seed in range(50):
        ordered = order_srv(records, random.Random(seed))
        assert [r[0] for r in ordered] == [10, 10, 10, 20] and ordered[2][3] == "z"   # zero weight last


def test_addresses_and_the_hosts_file_need_no_dns(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n# a comment\n192.0.2.7  pbx.example.test pbx  # trailing\n::1 ip6-localhost\n")
    names = read_hosts(str(hosts))
    assert names == {"localhost": "127.0.0.1", "pbx.example.test": "192.0.2.7", "pbx": "192.0.2.7",
                     "ip6-localhost": "::1"}
    resolver = Resolver(None, [("127.0.0.1", 9)], names)
    assert resolver.target(Proto.TLS, "PBX.example.test.", None) == ("192.0.2.7", 5061)
    assert resolver.target(Proto.UDP, "[::1]", 5070) == ("::1", 5070)
    assert resolver.target(Proto.UDP, "elsewhere.example.test", None) is UNKNOWN


def resolve_all(resolver, loop, questions, timeout=5.0):
    """Run the loop until every (proto, host, port) question is answered: {question: (target, why)}."""
    answers = {}
    for q in questions:
        resolver.resolve(*q, lambda found, why, q=q: answers.setdefault(q, (found, why)))
    deadline = time.monotonic() + timeout
    while len(answers) < len(questions) and time.monotonic() < deadline:
        loop.running = True
        loop.call_later(0.05, loop.stop)
        loop.run()
    return answers


def test_resolver_cases_against_a_real_dns_server(dns_zone):
    zone = dns_zone({("v6only.example.test", "AAAA"): ["::1"],
                     ("_sip._tcp.shared.example.test", "SRV"): ["0 0 5070 shared.example.test."],
                     ("shared.example.test", "A"): ["192.0.2.9"],
                     ("broken.example.test", "A"): [LOOP]})
    zone.servfail.add("_sip._udp.broken.example.test")
    loop = EventLoop()
    resolver = Resolver(loop, [(LOOP, zone.port)], {})
    long_label = "x" * 64 + ".example.test"
    shared = [(Proto.TCP, "shared.example.test", None)] * 3
    answers = resolve_all(resolver, loop, [(Proto.UDP, "v6only.example.test", 5060),
                                           (Proto.UDP, "broken.example.test", None),
                                           (Proto.UDP, long_label, None), *shared])
    assert answers[(Proto.UDP, "v6only.example.test", 5060)] == (("::1", 5060), "")
    found, why = answers[(Proto.UDP, "broken.example.test", None)]
    assert found is None and "no DNS server answered" in why          # SERVFAIL is not "no SRV"
    found, why = answers[(Proto.UDP, long_label, None)]
    assert found is None and "not a DNS name" in why and not resolver.lookups
    assert answers[shared[0]] == (("192.0.2.9", 5070), "")
    assert zone.questions[("_sip._tcp.shared.example.test", "SRV")] == 1      # one query for three
    assert resolver.target(Proto.TCP, "SHARED.example.test.", None) == ("192.0.2.9", 5070)
    assert ("broken.example.test", "A") not in zone.questions
    loop.close()


def test_dns_servers_are_written_as_the_kernel_reports_answers():
    assert nameservers([("0:0::1", None), ("127.0.0.1", 5353)]) == [("::1", 53), ("127.0.0.1", 5353)]


def test_short_names_go_through_the_search_list(dns_zone):
    """As the system resolver with resolv.conf's search and ndots: pbx -> pbx.corp.test (after
    pbx.lab.test does not exist); a name with enough dots is tried as written first."""
    assert candidates("pbx", ["lab.test", "corp.test"], 1) == ["pbx.lab.test", "pbx.corp.test", "pbx"]
    assert candidates("sip.example.com", ["corp.test"], 1) == ["sip.example.com", "sip.example.com.corp.test"]
    assert candidates("svc.ns", ["cluster.local"], 5) == ["svc.ns.cluster.local", "svc.ns"]
    zone = dns_zone({("pbx.corp.test", "A"): ["192.0.2.44"],
                     ("_sip._udp.media.corp.test", "SRV"): ["0 0 5080 pbx.corp.test."]})
    loop = EventLoop()
    resolver = Resolver(loop, [(LOOP, zone.port)], {})
    resolver.search = ["lab.test", "corp.test"]
    answers = resolve_all(resolver, loop, [(Proto.UDP, "pbx", None), (Proto.UDP, "media", None),
                                           (Proto.UDP, "nothing", 5060)])
    assert answers[(Proto.UDP, "pbx", None)] == (("192.0.2.44", 5060), "")
    assert answers[(Proto.UDP, "media", None)] == (("192.0.2.44", 5080), "")
    found, why = answers[(Proto.UDP, "nothing", 5060)]
    assert found is None and "nothing does not exist" in why
    loop.close()


def test_a_target_that_refuses_the_connection_fails_over_to_the_next(proxy_factory, dns_zone):
    """RFC 3263 4.3: the SRV target of the lowest priority refuses TCP: the request goes to the
    next one; when every target refuses, the sender hears 477."""
    closed, closed2 = free_port(), free_port()
    with socket.create_server((LOOP, 0)) as listener, udp_socket(5.0) as u:
        listener.settimeout(5)
        zone = dns_zone({("_sip._tcp.fail.example.test", "SRV"): [f"0 0 {closed} a.fail.example.test.",
                                                                  f"10 0 {listener.getsockname()[1]} b.fail.example.test."],
                         ("a.fail.example.test", "A"): [LOOP], ("b.fail.example.test", "A"): [LOOP],
                         ("_sip._tcp.dead.example.test", "SRV"): [f"0 0 {closed} a.fail.example.test.",
                                                                  f"10 0 {closed2} a.fail.example.test."]})
        proxy = proxy_factory(children=1, extra=f"dns_server={LOOP}:{zone.port}\n")
        call_id = send(proxy, u, "sip:bob@fail.example.test;transport=tcp")
        conn, _ = listener.accept()
        with conn:
            got = read_tcp_message(conn, time.monotonic() + 5, bytearray())
        assert got is not None and call_id.encode() in got
        dead = send(proxy, u, "sip:bob@dead.example.test;transport=tcp")
        data, _ = u.recvfrom(65536)
        assert status_of(data) == 477 and dead.encode() in data
        u.settimeout(1.0)
        with pytest.raises(socket.timeout):     # each target tried once, one answer
            u.recvfrom(65536)


def test_failover_moves_forward_never_in_circles():
    """Each request tries each target once; a failing target is skipped by new requests of the
    same transport only, and all failing, the first is tried again."""
    resolver = Resolver(None, [(LOOP, 9)], {})
    a, b = ("192.0.2.1", 5060), ("192.0.2.2", 5060)
    resolver.cache[(Proto.TLS, "sbc.example.test", None)] = (time.monotonic() + 60, (a, b), "")
    assert resolver.target(Proto.TLS, "sbc.example.test", None) == a
    resolver.failed(Proto.TLS, a)
    assert resolver.next_target(Proto.TLS, "sbc.example.test", None, (a,)) == b
    assert resolver.target(Proto.TLS, "SBC.example.test", None) == b            # new requests skip a
    resolver.failed(Proto.TLS, b)
    assert resolver.next_target(Proto.TLS, "sbc.example.test", None, (a, b)) is None
    assert resolver.next_target(Proto.TLS, "sbc.example.test", None, (b,)) is None   # a is failing
    assert resolver.target(Proto.TLS, "sbc.example.test", None) == a            # all failing: the first
    resolver.cache[(Proto.UDP, "sbc.example.test", None)] = (time.monotonic() + 60, (a, b), "")
    assert resolver.target(Proto.UDP, "sbc.example.test", None) == a            # TLS failures only


def test_tls_failover_past_a_server_of_another_domain_which_stays_usable(proxy_factory, dns_zone, pki):
    """biloxi's first SRV target presents atlanta's certificate (RFC 5922 refuses it): the request
    goes to biloxi's second target. That server is not down, only not biloxi's: atlanta's
    requests still go to it first (its backup refuses connections)."""
    port, closed = free_port(), free_port()
    atlanta_ctx, atlanta = tls_server(pki, "atlanta.example.com", free_port())
    biloxi_ctx, biloxi = tls_server(pki, "biloxi.example.com", free_port())
    p_atlanta, p_biloxi = atlanta.getsockname()[1], biloxi.getsockname()[1]
    zone = dns_zone({("_sips._tcp.biloxi.example.com", "SRV"): [f"0 0 {p_atlanta} sip.atlanta.example.com.",
                                                                f"10 0 {p_biloxi} sip.biloxi.example.com."],
                     ("_sips._tcp.atlanta.example.com", "SRV"): [f"0 0 {p_atlanta} sip.atlanta.example.com.",
                                                                 f"10 0 {closed} sip.atlanta.example.com."],
                     ("sip.atlanta.example.com", "A"): [LOOP], ("sip.biloxi.example.com", "A"): [LOOP]})
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port) + f"tls_verify_server=1\n"
                                                                      f"dns_server={LOOP}:{zone.port}\n")

    with udp_socket(5.0) as u:
        call_id = send(proxy, u, "sips:bob@biloxi.example.com")
        assert accept_request(atlanta_ctx, atlanta) is None                 # refused: wrong name
        got = accept_request(biloxi_ctx, biloxi)
        assert got is not None and call_id.encode() in got
        call_id = send(proxy, u, "sips:carol@atlanta.example.com")
        got = accept_request(atlanta_ctx, atlanta)
        assert got is not None and call_id.encode() in got
    atlanta.close()
    biloxi.close()
