"""Thousands of TCP connections arriving, and leaving, at once (clients behind a NAT that
restarts): the supervisor's channels to the workers fill up, and nothing may be lost on them,
neither a connection passed to a worker nor a worker's word that one closed."""

import re
import resource
import socket
import time

from ._harness import LOOP, udp_options

CONNECTIONS = 9000


def open_many(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((LOOP, port))
        socks.append(s)
        if i % 500 == 499:
            time.sleep(0.05)
    return socks


def closed_by_server(socks) -> int:
    closed = 0
    for s in socks:
        try:
            closed += s.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def test_bursts_of_connections_lose_nothing(proxy_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 2 * CONNECTIONS + 100, f"the open-files limit ({hard}) is too low for this test"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2 * CONNECTIONS + 100), hard))
    proxy = proxy_factory(children=1, extra=f"tcp_max_connections={CONNECTIONS}\n")
    for _ in range(3):
        socks = open_many(proxy.port, CONNECTIONS)
        time.sleep(1.5)
        assert closed_by_server(socks) == 0, proxy.tail()
        for s in socks:
            s.close()
        time.sleep(1.0)
    assert not re.search(r"cannot pass the connection|cannot reach the TCP supervisor|reached: refused",
                         proxy.log()), proxy.tail()
    assert udp_options(proxy.port) == 200
