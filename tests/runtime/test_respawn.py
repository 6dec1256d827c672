"""A worker killed with SIGKILL is respawned by the master within a second (same title, new pid):
in the middle of a call run, the master logs it and calls owned by the other workers go on; when
the worker held TCP and TLS connections, the TCP supervisor forgets them, so that requests for a
peer it was connected to open a new connection, and the clients' connections held by the other
workers go on."""

import os
import re
import signal
import socket
import time
import uuid
from types import SimpleNamespace

import psutil

from pyproxy.assembly.loader import load_config_text
from pyproxy.kernel import ipc
from pyproxy.runtime.arbiter import Arbiter

from ._harness import (
    LOOP,
    free_port,
    options_request,
    owner,
    read_tcp_message,
    run_uac,
    start_uas,
    status_of,
    tcp_connect,
    udp_socket,
)
from .test_mi import Peer, call_id_for, mi, send_to, tls_lines
from .test_tls import client_context

CHILDREN, CALLS, RATE = 4, 300, 30
VICTIM = 2
RESPAWN_S = 1.0
SLACK_S = 0.3  # this test's own polling under load


def kill_and_wait_respawn(proxy, number: int) -> tuple[int, float]:
    """SIGKILL worker `number`; (its new pid, seconds it took), asserting a respawn in time."""
    old_pid = proxy.workers()[number]
    os.kill(old_pid, signal.SIGKILL)
    t_kill = time.monotonic()
    new_pid = None
    while time.monotonic() - t_kill < RESPAWN_S + SLACK_S:
        new_pid = proxy.workers().get(number)
        if new_pid and new_pid != old_pid:
            break
        time.sleep(0.02)
    took = time.monotonic() - t_kill
    assert new_pid and new_pid != old_pid, \
        f"no new 'pyproxy: worker {number}' within {took:.2f} s of SIGKILL: {proxy.processes()}\n{proxy.tail()}"
    return new_pid, took


def test_killed_worker_is_respawned_and_calls_go_on(sipp, reaper, proxy_factory, tmp_path):
    proxy = proxy_factory(children=CHILDREN)
    _, uas_port = start_uas(reaper, tmp_path, "udp")
    prefix = f"rsp{uuid.uuid4().hex[:8]}"
    owned = sum(owner(f"{prefix}-{n}@127.0.0.1", CHILDREN) == VICTIM for n in range(1, CALLS + 1))

    before = proxy.processes()
    finish = run_uac(reaper, tmp_path, proxy.port, uas_port, "udp", CALLS, RATE, cid_prefix=prefix,
                     wait=False)
    time.sleep(3)  # mid-run: ~90 calls made, ~210 to come
    new_pid, took = kill_and_wait_respawn(proxy, VICTIM)

    r = finish()
    print(f"respawned in {took:.2f} s; {owned} of {CALLS} calls owned by worker {VICTIM}; {r.describe()}")
    assert proxy.alive(), f"pyproxy exited with {proxy.popen.returncode}\n{proxy.tail()}"
    after = proxy.processes()
    assert after.keys() == before.keys(), (before, after)
    assert {t: p for t, p in after.items() if t != f"pyproxy: worker {VICTIM}"} == \
        {t: p for t, p in before.items() if t != f"pyproxy: worker {VICTIM}"}, "other processes changed"

    master_lines = [ln for ln in proxy.log().splitlines() if re.search(r"\bmaster\[\d+\]", ln)]
    assert any("died" in ln and "respawn" in ln for ln in master_lines), \
        "the master logged no line with 'died' and 'respawn'\n" + proxy.tail()

    assert proxy.answers() == (200, 200)

    # Calls in the victim's hands when it died may fail; the others must not. A few calls owned by
    # other workers may have been read from the socket by the victim just before it died.
    tolerance = 3
    assert r.created == CALLS, r.describe()
    assert r.failed <= owned + tolerance and r.successful >= CALLS - owned - tolerance, \
        f"{r.failed} calls failed, but only {owned} of {CALLS} belong to worker {VICTIM}\n{r.describe()}"

    # and a second run after the respawn is clean
    r2 = run_uac(reaper, tmp_path, proxy.port, uas_port, "udp", 100, 50, name="uac2",
                 cid_prefix=f"{prefix}b")
    assert (r2.rc, r2.successful, r2.failed) == (0, 100, 0), f"{r2.describe()}\n{proxy.tail()}"
    assert any(owner(f"{prefix}b-{n}@127.0.0.1", CHILDREN) == VICTIM for n in range(1, 101))


# ------------------------------------------------------------------ a victim holding connections

CONN_CHILDREN = 3


def held_by(proxy, remote_port: int, local_port: int | None = None) -> int | None:
    """The worker whose process holds the established TCP socket to 127.0.0.1:`remote_port`
    (from `local_port`, when given), as the kernel sees it (psutil)."""
    for number, pid in proxy.workers().items():
        try:
            sockets = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for c in sockets:
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == remote_port and \
                    (local_port is None or c.laddr.port == local_port):
                return number
    return None


def options_on(conn, proto: str, port: int, timeout: float = 3.0) -> int | None:
    """The status of an OPTIONS to the proxy itself sent on an open client connection."""
    try:
        conn.sendall(options_request(port, f"held-{uuid.uuid4().hex}", proto, conn.getsockname()[1]))
        reply = read_tcp_message(conn, time.monotonic() + timeout, bytearray())
    except OSError:
        return None
    return status_of(reply) if reply else None


def test_killed_worker_connections_are_forgotten(proxy_factory, pki, tmp_path):
    """Worker 2 of 3 owns clients' TCP and TLS connections and the connections it opened to two
    peers of ours (TCP and TLS). After its SIGKILL: it is respawned within a second and `mi ps`
    lists the new pid; the supervisor logs that it forgot exactly those connections; the peers see
    them close; a request for either peer, processed by another worker, arrives on a NEW connection
    (not handed to the dead owner and lost); the clients on other workers are still answered."""
    sock, tls_port = tmp_path / "mi.sock", free_port()
    proxy = proxy_factory(children=CONN_CHILDREN, extra=tls_lines(pki, "localhost", tls_port) + f'mi_socket="{sock}"\n')
    ports = {"tcp": proxy.port, "tls": tls_port}
    clients = [("tcp", tcp_connect(proxy.port)) for _ in range(CONN_CHILDREN)] + \
        [("tls", client_context(pki).wrap_socket(tcp_connect(tls_port))) for _ in range(CONN_CHILDREN)]
    with Peer("tcp") as tcp_peer, Peer("tls", pki) as tls_peer, udp_socket() as u:
        try:
            for proto, c in clients:    # answered: each is in its worker's hands now
                assert options_on(c, proto, ports[proto]) == 200, proxy.tail()
            owners = [held_by(proxy, c.getsockname()[1], ports[proto]) for proto, c in clients]
            assert VICTIM in owners and set(owners) - {VICTIM}, owners
            for peer in (tcp_peer, tls_peer):       # the victim opens a connection to each peer
                send_to(proxy, peer.uri(), call_id_for(VICTIM, CONN_CHILDREN, "before"), u)
                assert peer.next_request() is not None, proxy.tail()
                assert held_by(proxy, peer.port) == VICTIM
            assert [(e["worker"], e["peer"]) for e in mi(sock, "tls_list") if e["direction"] == "out"] == \
                [(VICTIM, f"{LOOP}:{tls_peer.port}")]

            new_pid, _ = kill_and_wait_respawn(proxy, VICTIM)

            assert any(p["pid"] == new_pid and p["role"] == f"worker {VICTIM}" for p in mi(sock, "ps"))
            forgot = f"worker {VICTIM} died: forgot its {owners.count(VICTIM) + 2} connection(s)"
            deadline = time.monotonic() + 2
            while forgot not in proxy.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert forgot in proxy.log(), proxy.tail()
            assert tcp_peer.wait_closed(0) and tls_peer.wait_closed(0)
            for peer, worker in ((tcp_peer, 1), (tls_peer, 3)):
                send_to(proxy, peer.uri(), call_id_for(worker, CONN_CHILDREN, "after"), u)
                got = peer.next_request(timeout=3)
                assert got is not None and got[0] == 1, \
                    f"worker {worker}'s request for {peer.uri()} did not arrive on a new connection: {got}\n" \
                    + proxy.tail()
                assert held_by(proxy, peer.port) == worker
            for (proto, c), worker in zip(clients, owners):
                if worker == VICTIM:
                    assert options_on(c, proto, ports[proto], timeout=1) is None    # closed with its owner
                else:
                    assert options_on(c, proto, ports[proto]) == 200, f"{proto} client of worker {worker}"
        finally:
            for _, c in clients:
                c.close()
    assert proxy.alive() and proxy.answers() == (200, 200)


def test_a_respawned_worker_closes_the_connections_passed_to_its_predecessor():
    """The supervisor forgets a dead worker's connections, then sends EPOCH on its channel: the
    respawned worker closes what was passed before (nobody could find those connections), and
    adopts what comes after."""
    port = free_port()
    arbiter = Arbiter(load_config_text(f"fork=yes\nchildren=1\nlisten=udp:127.0.0.1:{port}\nroute {{ drop; }}\n",
                                       "<test>"), SimpleNamespace(shm_mb=8, foreground=1))
    arbiter.build()
    arbiter.incarnations[0] = 1
    worker = arbiter.new_worker(0)
    supervisor_end = arbiter.channels[0][0]

    listener = socket.create_server((LOOP, 0))

    def pass_connection(conn_id: int) -> socket.socket:
        client = socket.create_connection(listener.getsockname(), timeout=2)
        accepted, peer = listener.accept()
        socket.send_fds(supervisor_end, [ipc.encode(ipc.NewConn(conn_id, "tcp", peer[0], peer[1], LOOP, port))],
                        [accepted.fileno()])
        accepted.close()
        return client

    try:
        stale = pass_connection(1)
        supervisor_end.send(ipc.encode(ipc.Epoch(1)))
        fresh = pass_connection(2)
        worker.streams.on_channel()
        assert stale.recv(10) == b""                # closed: it was the dead worker's
        assert list(worker.streams.conns) == [2]            # adopted
        fresh.close()
    finally:
        for conn in list(worker.streams.conns.values()):
            conn.sock.close()
        listener.close()
        for bound in arbiter.listeners:
            bound.sock.close()


def test_the_tcp_supervisor_dying_stops_the_server(proxy_factory):
    """Its connection table is gone: a new supervisor would give a new client the id of a
    connection a worker still holds, and that client would get another's messages."""
    proxy = proxy_factory(children=2)
    supervisor = next(p for p in psutil.Process(proxy.popen.pid).children() if "tcp main" in " ".join(p.cmdline()))
    children = psutil.Process(proxy.popen.pid).children()
    supervisor.send_signal(signal.SIGKILL)
    assert proxy.popen.wait(10) == 1
    assert "tcp main (pid" in proxy.log() and "died with signal 9, and the table of TCP/TLS connections" in proxy.log()
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
