"""Calls through the proxy: sipp UAC -> pyproxy -> sipp UAS (the shared bench scenarios),
INVITE/100/180/200/ACK, pause, BYE/200, over UDP and over TCP, with one worker and with four.
Every call must succeed."""

import os
import signal
import time

import pytest
from ._harness import run_uac, start_uas

CALLS, RATE = 500, 100


def test_sipp_alone_completes_every_call(sipp, reaper, tmp_path):
    """The generator's own sanity check (no proxy): if this fails, the machine or sipp is the
    problem, not pyproxy."""
    _, uas_port = start_uas(reaper, tmp_path, "udp")
    r = run_uac(reaper, tmp_path, uas_port, uas_port, "udp", 200, RATE)
    assert (r.rc, r.successful, r.failed) == (0, 200, 0), r.describe()


@pytest.mark.parametrize("children", [1, 4])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_calls_through_the_proxy(sipp, reaper, proxy_factory, tmp_path, transport, children):
    proxy = proxy_factory(children=children)
    _, uas_port = start_uas(reaper, tmp_path, transport)
    r = run_uac(reaper, tmp_path, proxy.port, uas_port, transport, CALLS, RATE)
    assert proxy.alive(), f"pyproxy exited with {proxy.popen.returncode}\n{r.describe()}\n{proxy.tail()}"
    assert r.created == CALLS and r.successful == CALLS and r.failed == 0 and r.rc == 0, \
        f"{r.describe()}\n{proxy.tail()}"
    assert r.wall < 30, f"{CALLS} calls at {RATE} cps took {r.wall:.1f} s"


def test_stateless_calls_without_affinity(sipp, reaper, proxy_factory, tmp_path):
    """call_affinity=auto with a stateless script: no hand-offs, every call still completes."""
    proxy = proxy_factory(children=4, extra="call_affinity=auto")
    _, uas_port = start_uas(reaper, tmp_path, "udp")
    r = run_uac(reaper, tmp_path, proxy.port, uas_port, "udp", CALLS, RATE)
    assert r.created == CALLS and r.successful == CALLS and r.failed == 0, f"{r.describe()}\n{proxy.tail()}"
    os.kill(proxy.pid, signal.SIGUSR1)          # the master logs every process's counters
    deadline = time.monotonic() + 5
    while proxy.log().count("statistics of worker") < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [line for line in proxy.log().splitlines() if "statistics of worker" in line]
    assert len(workers) == 4 and all("handoffs_out=0," in line for line in workers), workers
