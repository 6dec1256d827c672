"""The TCP supervisor's hand-over of an accepted connection to a worker: the descriptor passed on
the worker's channel with its NewConn (the supervisor's own copy closed), TCP_NODELAY set (from the
listener), the connection in the shared table, and the local address asked of the kernel only for a
wildcard listener."""

import socket

import pytest

from pyproxy.config.settings import Settings
from pyproxy.config.values import Proto, SocketSpec
from pyproxy.kernel import ipc
from pyproxy.kernel.shm import NO_DOMAIN, SharedMemory
from pyproxy.runtime.listeners import Listener, bind
from pyproxy.runtime.supervisor import Supervisor


@pytest.mark.parametrize("bound_as", ["127.0.0.1", "0.0.0.0"])
def test_accepted_connection_handed_to_a_worker(bound_as):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listening = bind(SocketSpec(Proto.TCP, "127.0.0.1", port)).sock
    listener = Listener(Proto.TCP, bound_as, port, listening)   # ("0.0.0.0" bound to loopback: tests stay on it)
    assert listener.wildcard is (bound_as == "0.0.0.0")
    worker_end, supervisor_end = ipc.channel_pair()
    master_end, supervisor_master_end = ipc.channel_pair()
    shm = SharedMemory(1, 3, 64)
    supervisor = Supervisor([listener], [supervisor_end], supervisor_master_end, shm, Settings(), 2)
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        supervisor.accept(listener)     # (create_connection returned: the connection waits to be accepted)
        payload, fd = ipc.receive_with_fd(worker_end, 4096)
        item = ipc.decode(payload)
        assert type(item) is ipc.NewConn and fd is not None
        assert (item.proto, item.local_ip, item.local_port) == ("tcp", "127.0.0.1", port)
        assert (item.peer_ip, item.peer_port) == client.getsockname()
        assert shm.lookup(Proto.TCP, *client.getsockname()) == (item.conn_id, 0, NO_DOMAIN)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd) as passed:
            assert passed.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)    # the listener's
            passed.sendall(b"hello")
            assert client.recv(5) == b"hello"
        assert client.recv(5) == b""    # the worker's copy closed and the supervisor's too: the end
    finally:
        client.close()
        supervisor.loop.close()
        for sock in (listening, worker_end, supervisor_end, master_end, supervisor_master_end):
            sock.close()
