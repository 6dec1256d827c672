"""The process tree of `fork=yes`: a master, `children` workers and a TCP supervisor, titled
for ps; a bounded, clean stop on SIGTERM and on SIGINT (exit 0, nothing left behind)."""

import signal
import subprocess
import time

import psutil
import pytest
from ._harness import title

CHILDREN = 3


def test_process_titles_and_tree(proxy_factory):
    proxy = proxy_factory(children=CHILDREN)
    master = psutil.Process(proxy.pid)
    assert title(master) == "pyproxy: master"
    expected = {f"pyproxy: worker {k}" for k in range(1, CHILDREN + 1)} | {"pyproxy: tcp main"}
    assert set(proxy.processes()) == expected
    assert len(master.children()) == CHILDREN + 1, [title(c) for c in master.children()]
    assert len(master.children(recursive=True)) == CHILDREN + 1, "workers must not fork grandchildren"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stops_cleanly_on_signal(proxy_factory, sig):
    proxy = proxy_factory(children=CHILDREN)
    kids = psutil.Process(proxy.pid).children(recursive=True)
    assert len(kids) == CHILDREN + 1
    t0 = time.monotonic()
    proxy.popen.send_signal(sig)
    try:
        rc = proxy.popen.wait(5)
    except subprocess.TimeoutExpired:
        rc = None
    assert rc == 0, f"exit status {rc} (None: still running 5 s after {sig.name})\n{proxy.tail()}"
    gone, alive = psutil.wait_procs(kids, timeout=max(0.1, 5 - (time.monotonic() - t0)))
    assert not alive, f"left running after the master exited: {[(p.pid, title(p)) for p in alive]}"


def test_wdir_and_open_files_limit_apply_to_every_process(proxy_factory, tmp_path):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = soft + 100 if hard == resource.RLIM_INFINITY or soft + 100 <= hard else soft
    wdir = tmp_path / "wd"
    wdir.mkdir()
    proxy = proxy_factory(children=2, extra=f'wdir="{wdir}"\nopen_files_limit={wanted}\n')
    for process in [psutil.Process(proxy.pid), *psutil.Process(proxy.pid).children()]:
        assert process.cwd() == str(wdir), title(process)
        assert process.rlimit(psutil.RLIMIT_NOFILE)[0] == wanted, title(process)


def test_a_wdir_that_does_not_exist_stops_the_start(proxy_factory, tmp_path):
    proxy = proxy_factory(children=1, extra=f'wdir="{tmp_path}/missing"\n', ready=False)
    assert proxy.popen.wait(10) == 1
    assert f"wdir={tmp_path}/missing: No such file or directory" in proxy.log()
