"""fork=no (one process does everything, UDP and TCP) and the supervisor's connection limit."""

import signal
import time

import psutil
import pytest

from ._harness import run_uac, start_uas, tcp_connect, tcp_options, udp_options, wait_closed


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_single_process_serves_calls(sipp, reaper, proxy_factory, tmp_path, transport):
    proxy = proxy_factory(children=1, extra="fork=no")
    assert psutil.Process(proxy.pid).children() == []       # no workers, no supervisor
    _, uas_port = start_uas(reaper, tmp_path, transport)
    r = run_uac(reaper, tmp_path, proxy.port, uas_port, transport, 200, 100)
    assert r.created == 200 and r.successful == 200 and r.failed == 0, f"{r.describe()}\n{proxy.tail()}"
    proxy.popen.send_signal(signal.SIGINT)      # Ctrl-C stops the one process
    assert proxy.popen.wait(10) == 0


def test_single_process_logs_its_counters_on_sigusr1(proxy_factory):
    proxy = proxy_factory(children=1, extra="fork=no")
    assert udp_options(proxy.port) == 200
    proxy.popen.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "statistics of worker 1: requests_in=" not in proxy.log():
        assert time.monotonic() < deadline and proxy.alive(), proxy.tail()
        time.sleep(0.1)
    assert proxy.alive()


def test_tcp_max_connections_is_enforced(proxy_factory):
    proxy = proxy_factory(children=2, extra="tcp_max_connections=2")
    time.sleep(0.5)     # the readiness probe's connection must be reported closed first
    first, second = tcp_connect(proxy.port), tcp_connect(proxy.port)
    try:
        assert tcp_options(proxy.port, sock=first) == 200
        assert tcp_options(proxy.port, sock=second) == 200
        with tcp_connect(proxy.port) as third:
            closed, data = wait_closed(third, 3.0)
            assert closed and data == b"", "a connection over tcp_max_connections must be closed at once"
        assert "tcp_max_connections (2) reached" in proxy.log()
    finally:
        first.close()
        second.close()
    # the limit counts open connections: after the first two close, new ones are served again
    for _ in range(50):
        if tcp_options(proxy.port) == 200:
            break
    else:
        pytest.fail("connections are refused after the earlier ones closed\n" + proxy.tail())
    assert udp_options(proxy.port) == 200
