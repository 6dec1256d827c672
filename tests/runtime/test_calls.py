"""Calls through the proxy: sipp UAC -> pyproxy -> sipp UAS (the shared bench scenarios),
INVITE/100/180/200/ACK, pause, BYE/200, over UDP and over TCP, with one worker and with four.
Every call must succeed."""

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
