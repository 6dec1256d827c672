"""The management interface against careless and hostile local clients: FIFO reply paths that
are not FIFOs, many clients at once, a client that never reads, the mi process killed, a second
instance on the same paths, JSON-RPC's corner cases, answers too long for one datagram."""

import json
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from pyproxy.mi.client import call_fifo, call_socket
from pyproxy.mi.server import MIServer, _text
from pyproxy.kernel import ipc
from pyproxy.kernel.loop import EventLoop

from ._harness import LOOP, free_port, start_proxy, title
from .test_mi import tls_lines
from .test_tls import client_context


def mi_extra(tmp_path):
    return f'mi_socket="{tmp_path}/mi.sock"\nfifo="{tmp_path}/fifo"\nfifo_dir="{tmp_path}"\n'


def fifo_write(fifo, text: str) -> None:
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def rpc_lines(sock_path, payload: bytes, answers: int, timeout=5.0) -> list:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(payload)
        buf = b""
        while buf.count(b"\n") < answers:
            buf += s.recv(65536)
        return [json.loads(line) for line in buf.splitlines()]


def test_fifo_replies_go_to_fifos_only(proxy_factory, tmp_path):
    proxy_factory(children=1, extra=mi_extra(tmp_path))
    victim, outside = tmp_path / "victim.txt", tmp_path.parent / f"outside-{os.getpid()}.txt"
    victim.write_text("keep me\n")
    (tmp_path / "link").symlink_to(victim)
    for reply in (str(victim), "link", f"../{outside.name}"):
        fifo_write(tmp_path / "fifo", f":version:{reply}\n\n")
    assert call_fifo(str(tmp_path / "fifo"), "version", []).startswith("200 OK")   # served after them
    assert victim.read_text() == "keep me\n" and not outside.exists()


def test_many_fifo_clients_at_once_all_get_their_reply(proxy_factory, tmp_path):
    proxy_factory(children=1, extra=mi_extra(tmp_path))
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: call_fifo(str(tmp_path / "fifo"), "uptime", [], timeout=15), range(30)))
    assert all(r.startswith("200 OK") for r in replies)


def test_a_socket_client_that_never_reads_blocks_nobody(proxy_factory, tmp_path):
    proxy_factory(children=1, extra=mi_extra(tmp_path))
    request = b'{"jsonrpc": "2.0", "method": "get_statistics", "id": 1}\n'
    with socket.socket(socket.AF_UNIX) as greedy:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.connect(str(tmp_path / "mi.sock"))
        greedy.setblocking(False)
        for _ in range(2000):
            try:
                greedy.send(request)
            except BlockingIOError:
                break
        started = time.monotonic()
        assert call_socket(str(tmp_path / "mi.sock"), "uptime", [], timeout=5)["uptime"] >= 0
        assert call_fifo(str(tmp_path / "fifo"), "uptime", [], timeout=5).startswith("200 OK")
        assert time.monotonic() - started < 5


def test_a_killed_mi_process_comes_back_on_the_same_paths(proxy_factory, tmp_path):
    proxy = proxy_factory(children=1, extra=mi_extra(tmp_path))
    mi_process = next(p for p in psutil.Process(proxy.popen.pid).children() if title(p) == "pyproxy: mi")
    mi_process.send_signal(signal.SIGTERM)
    mi_process.wait(5)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert call_socket(str(tmp_path / "mi.sock"), "uptime", [], timeout=2)["uptime"] >= 0
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert call_fifo(str(tmp_path / "fifo"), "version", []).startswith("200 OK")


def test_a_second_instance_does_not_take_the_paths_and_no_file_is_replaced(reaper, proxy_factory, tmp_path):
    first = proxy_factory(children=1, extra=mi_extra(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    second = start_proxy(reaper, other, 1, mi_extra(tmp_path), ready=False)
    assert second.popen.wait(15) != 0
    assert "is served by another process" in second.log()
    assert call_socket(str(tmp_path / "mi.sock"), "uptime", [])["uptime"] >= 0    # the first still has it
    assert first.popen.poll() is None
    fifo_only = tmp_path / "fifo-only"
    fifo_only.mkdir()
    third = start_proxy(reaper, fifo_only, 1, f'fifo="{tmp_path}/fifo"\n', ready=False)
    assert third.popen.wait(15) != 0 and "is read by another process" in third.log()
    assert call_fifo(str(tmp_path / "fifo"), "uptime", []).startswith("200 OK")   # not removed by it
    important = tmp_path / "important.txt"
    important.write_text("data\n")
    cfg = tmp_path / "third.cfg"
    port = free_port()
    cfg.write_text(f"listen=udp:{LOOP}:{port}\nmi_socket=\"{important}\"\n")
    r = subprocess.run([sys.executable, "-m", "pyproxy", "-f", str(cfg), "-D", "-E"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "exists and is not a socket" in r.stderr
    assert important.read_text() == "data\n"


def test_a_client_that_half_closes_gets_every_answer(tmp_path):
    """socat and nc -N shut their sending side once the request is written; a long answer (a
    tls_list of thousands of connections) must still reach them whole."""
    mi = MIServer.__new__(MIServer)         # the socket side alone, on a real Unix socket
    mi.loop, mi.clients = EventLoop(), {}
    mi.execute = lambda name, args: ["x" * 100] * 20000
    mi.listener = socket.socket(socket.AF_UNIX)
    mi.listener.bind(str(tmp_path / "mi.sock"))
    mi.listener.listen()
    mi.listener.setblocking(False)
    mi.loop.add_reader(mi.listener.fileno(), mi.accept)
    runner = threading.Thread(target=mi.loop.run, daemon=True)
    runner.start()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(tmp_path / "mi.sock"))
            s.sendall(b'{"jsonrpc": "2.0", "method": "tls_list", "id": 1}\n')
            s.shutdown(socket.SHUT_WR)
            time.sleep(0.5)
            data = b""
            while chunk := s.recv(1 << 16):
                data += chunk
        assert len(json.loads(data)["result"]) == 20000
    finally:
        mi.loop.stop()
        runner.join(5)
        mi.listener.close()


def test_json_rpc_corner_cases(proxy_factory, tmp_path):
    proxy_factory(children=1, extra=mi_extra(tmp_path))
    sock = tmp_path / "mi.sock"
    # a notification is not answered: the next line's answer is the first to come back
    notification = b'{"jsonrpc": "2.0", "method": "uptime"}\n'
    (answer,) = rpc_lines(sock, notification + b'{"jsonrpc": "2.0", "method": "uptime", "id": 7}\n', 1)
    assert answer["id"] == 7
    batch = b'[{"jsonrpc": "2.0", "method": "uptime", "id": 1}, {"jsonrpc": "2.0", "method": "nope", "id": 2}]\n'
    (answers,) = rpc_lines(sock, batch, 1)
    assert [a["id"] for a in answers] == [1, 2] and answers[1]["error"]["code"] == -32601
    odd = [b'{"jsonrpc": "2.0", "method": "uptime", "id": NaN}\n',
           b'{"jsonrpc": "2.0", "method": "uptime", "params": {}, "id": 3}\n',
           b"[" * 100000 + b"\n"]
    answers = rpc_lines(sock, b"".join(odd), 3)
    assert [a["error"]["code"] for a in answers] == [-32600, -32602, -32700]
    assert answers[0]["id"] is None


def test_long_answers_arrive_whole(proxy_factory, pki, tmp_path):
    """tls_list of 700 connections with long SNI names: more than a datagram holds from one
    worker, and more than a FIFO's 64 KiB buffer."""
    port = free_port()
    proxy_factory(children=1, extra=tls_lines(pki, "localhost", port) + mi_extra(tmp_path))
    ctx = client_context(pki)
    held = []
    try:
        for n in range(700):
            raw = socket.create_connection((LOOP, port), timeout=5)
            held.append(ctx.wrap_socket(raw, server_hostname=f"{n:03d}-{'x' * 55}.{'y' * 60}.{'z' * 60}.{'w' * 50}.example"))
        entries = call_socket(str(tmp_path / "mi.sock"), "tls_list", [], timeout=20)
        assert len(entries) == 700 and len(marshal.dumps(entries)) > ipc.MAX_DATAGRAM
        text = call_fifo(str(tmp_path / "fifo"), "tls_list", [], timeout=20)
        assert text.startswith("200 OK") and text.count("sni:: ") == 700
    finally:
        for s in held:
            s.close()


def test_control_characters_cannot_start_a_line_of_a_fifo_reply():
    assert _text({"sni": "a\n\n500 forged"}) == "sni:: a\\n\\n500 forged\n"
    assert _text([{"peer": "x\r"}]) == "peer:: x\\r\n"
