"""metrics_listen: the Prometheus text endpoint of a running pyproxy, scraped with urllib and read
with prometheus_client's own parser. One proxy (two workers, TLS requiring client certificates)
serves most tests; each test compares scrapes before and after what it does, so the order of the
tests does not matter."""

import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from ._harness import LOOP, Reaper, free_port, start_proxy, udp_options, wait_closed
from .test_mi import tls_lines
from .test_tls import client_context, tls_options

DEADLINE = 20.0     # seconds for what a loaded CI machine should do in well under one


def scrape(port: int, path: str = "/metrics", method: str = "GET"):
    """(status, headers, body) of one HTTP request to the metrics endpoint."""
    request = urllib.request.Request(f"http://{LOOP}:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def metrics(port: int) -> dict:
    """name -> family (counters named without _total, as the parser names them)."""
    status, headers, body = scrape(port)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    return {f.name: f for f in text_string_to_metric_families(body)}


def total(families: dict, name: str, **labels) -> float:
    return sum(s.value for s in families[name].samples if all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(port: int, check, what: str):
    """Scrape until ``check(families)`` holds; the families it held for."""
    deadline = time.monotonic() + DEADLINE
    while True:
        families = metrics(port)
        if check(families):
            return families
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen in {DEADLINE} s of scrapes")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory, pki):
    """(proxy, metrics port, TLS port) of one pyproxy the module's tests share."""
    reaper = Reaper()
    metrics_port, tls_port = free_port(), free_port()
    extra = (tls_lines(pki, "localhost", tls_port, verify_client=1) + "tls_handshake_timeout=2\n"
             f"metrics_listen={LOOP}:{metrics_port}\n")
    try:
        proxy = start_proxy(reaper, tmp_path_factory.mktemp("metrics"), 2, extra)
        yield proxy, metrics_port, tls_port
    finally:
        reaper.stop_all()


def test_scrape_shows_statistics_memory_and_tls(served, pki):
    proxy, port, tls_port = served
    before = metrics(port)
    for _ in range(3):
        assert udp_options(proxy.port) == 200
    assert tls_options(tls_port, client_context(pki, cert="client.example.com")) == (200, "localhost")
    with socket.create_connection((LOOP, tls_port), timeout=DEADLINE) as raw:   # garbage to the TLS port
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert wait_closed(raw, DEADLINE)[0]
    with pytest.raises((ssl.SSLError, OSError)):    # a client certificate from another CA
        tls_options(tls_port, client_context(pki, cert="impostor"))
    socket.create_connection((LOOP, tls_port), timeout=DEADLINE).close()       # gone before a ClientHello
    with socket.create_connection((LOOP, tls_port), timeout=DEADLINE) as raw:   # never says a word
        assert wait_closed(raw, DEADLINE)[0]
    held = client_context(pki, cert="client.example.com").wrap_socket(socket.create_connection((LOOP, tls_port)))
    try:
        def moved(f):
            return (total(f, "pyproxy_requests_in") >= total(before, "pyproxy_requests_in") + 3
                    and total(f, "pyproxy_tls_handshakes") == total(before, "pyproxy_tls_handshakes") + 2
                    and all(total(f, "pyproxy_tls_handshakes_failed", reason=r)
                            == total(before, "pyproxy_tls_handshakes_failed", reason=r) + 1
                            for r in ("protocol", "verify", "other", "timeout"))
                    and total(f, "pyproxy_tls_connections", domain="default server domain", direction="in") >= 1)
        after = wait_for(port, moved, "3 requests, 2 handshakes, one failed for each reason, an open connection")
    finally:
        held.close()
    # statistics: every process's counters, with OpenSER's groups
    requests = after["pyproxy_requests_in"]
    assert requests.type == "counter" and requests.samples[0].name == "pyproxy_requests_in_total"
    assert {s.labels["process"] for s in requests.samples} == {"worker 1", "worker 2", "tcp main", "master"}
    assert {s.labels["group"] for s in requests.samples} == {"core"}
    assert after["pyproxy_tm_inuse"].type == "gauge" and after["pyproxy_tm_inuse"].samples[0].labels["group"] == "tm"
    assert {s.labels["group"] for s in after["pyproxy_tls_handshakes"].samples} == {"tls"}
    assert {s.labels["reason"] for s in after["pyproxy_tls_handshakes_failed"].samples} == \
        {"verify", "protocol", "timeout", "other"}
    # resident memory: one gauge per process, the pid the process's own
    pids = {title.removeprefix("pyproxy: "): pid for title, pid in proxy.processes().items()}
    pids["master"] = proxy.pid
    rss = {s.labels["process"]: s for s in after["pyproxy_process_resident_memory_bytes"].samples}
    assert set(rss) == {"master", "mi", "tcp main", "worker 1", "worker 2"}
    for role, sample in rss.items():
        assert int(sample.labels["pid"]) == pids[role] and sample.value > 1 << 20, (role, sample)
    # the certificate's notAfter, for each domain that uses the file
    cert_file = str(pki / "localhost" / "cert.pem")
    with open(cert_file, "rb") as f:
        expected = x509.load_pem_x509_certificate(f.read()).not_valid_after_utc.timestamp()
    expiry = {s.labels["domain"]: s for s in after["pyproxy_tls_certificate_not_after_seconds"].samples}
    assert {"default server domain", "default client domain"} <= set(expiry)
    assert all(s.value == int(expected) and s.labels["file"] == cert_file for s in expiry.values()), expiry
    assert after["pyproxy_start_time_seconds"].samples[0].value <= time.time()


def test_other_paths_and_methods(served):
    _, port, _ = served
    assert scrape(port, "/")[0] == 404
    assert scrape(port, "/metricsx")[0] == 404
    assert scrape(port, "/metrics", method="POST")[0] == 405
    status, headers, body = scrape(port, "/metrics?name=x", method="HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 0


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the server closes."""
    with socket.create_connection((LOOP, port), timeout=DEADLINE) as s:
        s.sendall(data)
        closed, answer = wait_closed(s, DEADLINE)
        assert closed, answer
        return answer


def test_stalled_and_garbage_clients_do_not_block_a_scrape(served):
    _, port, _ = served
    assert raw_exchange(port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000).startswith(b"HTTP/1.1 431 ")
    old = raw_exchange(port, b"GET /metrics HTTP/1.0\n\n")
    assert old.startswith(b"HTTP/1.1 200 ") and b"pyproxy_requests_in_total{" in old
    stalled = [socket.create_connection((LOOP, port), timeout=DEADLINE) for _ in range(3)]
    try:
        stalled[0].sendall(b"GET /metr")            # half a request line, then nothing
        stalled[1].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")     # headers never ended
        started = time.monotonic()
        assert "pyproxy_requests_in" in metrics(port)
        assert time.monotonic() - started < 5, "a scrape waited for the stalled clients"
        for s in stalled:       # and the server ends them itself, within its client timeout
            assert wait_closed(s, DEADLINE)[0]
    finally:
        for s in stalled:
            s.close()


def test_off_by_default(proxy_factory):
    proxy = proxy_factory(children=1)
    assert "pyproxy: mi" not in proxy.processes()
    pids = [proxy.pid, *proxy.processes().values()]
    listening = {c.laddr.port for pid in pids for c in psutil.Process(pid).net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {proxy.port}


def test_metrics_alone_starts_the_mi_process(proxy_factory):
    port = free_port()
    proxy = proxy_factory(children=1, extra=f"metrics_listen={LOOP}:{port}\n")
    assert "pyproxy: mi" in proxy.processes()
    families = metrics(port)
    assert "pyproxy_tls_connections" not in families and "pyproxy_tls_certificate_not_after_seconds" not in families
    assert {s.labels["process"] for s in families["pyproxy_process_resident_memory_bytes"].samples} == \
        {"master", "mi", "tcp main", "worker 1"}


def test_address_in_use_stops_the_start(reaper, tmp_path):
    port = free_port()
    with socket.create_server((LOOP, port)):
        proxy = start_proxy(reaper, tmp_path, 1, f"metrics_listen={LOOP}:{port}\n", ready=False)
        assert proxy.popen.wait(DEADLINE * 3) == 1, proxy.tail()
    assert f"metrics_listen={LOOP}:{port}: Address already in use" in proxy.log(), proxy.tail()


@pytest.mark.parametrize("value,message", [
    ("localhost:9090", "expected an IP address, found 'localhost'"),
    ("127.0.0.1", "the port is missing"),
    ("127.0.0.1:70000", "expected a port number from 1 to 65535, found '70000'"),
])
def test_bad_value_is_a_config_error(tmp_path, value, message):
    cfg = tmp_path / "metrics.cfg"
    cfg.write_text(f"children=1\nmetrics_listen={value}\nroute {{ drop; }}\n")
    r = subprocess.run([sys.executable, "-m", "pyproxy", "-c", "-f", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and f"{cfg}:2:16: metrics_listen: " in r.stderr and message in r.stderr, r.stderr


def test_workers_that_do_not_answer_leave_out_the_tls_connections_only(served):
    """Last in this module: a stopped worker does not answer the mi process's question."""
    proxy, port, _ = served
    worker = psutil.Process(proxy.workers()[1])
    worker.suspend()
    try:
        families = metrics(port)
    finally:
        worker.resume()
    assert "pyproxy_tls_connections" not in families
    assert {"pyproxy_requests_in", "pyproxy_process_resident_memory_bytes",
            "pyproxy_tls_certificate_not_after_seconds"} <= set(families)
    assert "metrics: TLS connections left out of this scrape: the workers: 1 worker(s) did not answer" in proxy.log()
    wait_for(port, lambda f: "pyproxy_tls_connections" in f, "the TLS connections once the worker answers again")
