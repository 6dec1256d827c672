"""The "pyproxy: mi" process: one command at a time, from the FIFO or the JSON-RPC socket.

- **FIFO** (``fifo=``, OpenSER's text protocol): a request is ``:command:reply_fifo`` then one
  argument per line and an empty line; the answer, ``200 OK`` (or ``500 reason``) then the result,
  is written to ``reply_fifo`` (in ``fifo_dir`` unless absolute).
- **Unix socket** (``mi_socket=``): JSON-RPC 2.0, one request per line, one response per line.

Both are created with mode 0600 (``fifo_mode``, ``mi_socket_mode``). Worker questions travel on
the workers' hand-off sockets; the answers come back on the mi process's own socket.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import stat
import time

from ..runtime import ipc
from ..runtime.logs import log
from ..runtime.loop import EventLoop
from ..runtime.process import become
from . import commands

WORKER_TIMEOUT = 3.0


class MIServer:
    def __init__(self, config, master_pid: int, started: float, shm, workers: int, handoff_send: list,
                 reply_recv: socket.socket, reload_signal: int):
        self.config = config
        self.settings = config.settings
        self.master_pid = master_pid
        self.started = started
        self.shm = shm
        self.workers = workers
        self.handoff_send = handoff_send
        self.reply_recv = reply_recv
        self.replies = ipc.DatagramReader(reply_recv)
        self.reload_signal = reload_signal
        self.tls_disabled = self.settings.disable_tls
        self.loop = EventLoop()
        self.ids = itertools.count(1)
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}

    # -- process --------------------------------------------------------------------------------
    def run(self, endpoints: "Endpoints") -> None:
        become("mi", self.loop.stop)
        if endpoints.fifo_fd is not None:
            self.fifo_fd, self.fifo_buf = endpoints.fifo_fd, bytearray()
            self.loop.add_reader(self.fifo_fd, self.on_fifo)
        if endpoints.listener is not None:
            self.listener = endpoints.listener
            self.loop.add_reader(self.listener.fileno(), self.accept)
        try:
            self.loop.run()
        finally:
            for path in (self.settings.fifo, self.settings.mi_socket):
                if path:
                    _unlink(path)

    # -- worker questions -----------------------------------------------------------------------
    def ask_workers(self, question: str) -> list:
        request_id = next(self.ids)
        for send in self.handoff_send:
            send.send(ipc.dumps((ipc.CONTROL, request_id, question)))
        answers: dict[int, object] = {}
        deadline = time.monotonic() + WORKER_TIMEOUT
        self.reply_recv.setblocking(True)
        try:
            while len(answers) < self.workers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise commands.MIError(f"{self.workers - len(answers)} worker(s) did not answer in "
                                           f"{WORKER_TIMEOUT:.0f} s")
                self.reply_recv.settimeout(left)
                try:
                    rid, index, result = self.replies.read()
                except socket.timeout:
                    continue
                if rid == request_id:
                    answers[index] = result
        finally:
            self.reply_recv.setblocking(False)
        return [answers[i] for i in sorted(answers)]

    def statistics(self) -> dict:
        names = [f"worker {i + 1}" for i in range(self.workers)] + ["tcp main", "master"]
        return {name: self.shm.stats_of(i).read() for i, name in enumerate(names)}

    def check_tls(self) -> str | None:
        from ..tls.domains import DomainTable, TLSConfigError
        try:
            DomainTable.build(self.settings, self.config.tls_domains, self.config.cfg_dir)
        except TLSConfigError as e:
            return "; ".join(e.messages)
        return None

    def execute(self, name: str, args: list[str]):
        log.info(f"mi command: {name} {' '.join(args)}".rstrip())
        return commands.run(self, name, args)

    # -- the JSON-RPC socket --------------------------------------------------------------------
    def accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        client.setblocking(False)
        self.clients[client.fileno()] = (client, bytearray())
        self.loop.add_reader(client.fileno(), lambda fd=client.fileno(): self.on_client(fd))

    def on_client(self, fd: int) -> None:
        client, buf = self.clients[fd]
        try:
            data = client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or len(buf) > 1 << 20:
            self.loop.remove(fd)
            self.clients.pop(fd, None)
            client.close()
            return
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            if line.strip():
                answer = self.json_rpc(line)
                client.setblocking(True)
                try:
                    client.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    pass
                finally:
                    client.setblocking(False)

    def json_rpc(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except ValueError:
            return _rpc_error(None, -32700, "parse error")
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or \
                not isinstance(request.get("method"), str):
            return _rpc_error(request.get("id") if isinstance(request, dict) else None, -32600, "invalid request")
        params = request.get("params") or []
        if not isinstance(params, list):
            return _rpc_error(request.get("id"), -32602, "params must be a list")
        try:
            result = self.execute(request["method"], [str(p) for p in params])
        except commands.MIError as e:
            code = -32601 if str(e).startswith("unknown command") else -32000
            return _rpc_error(request.get("id"), code, str(e))
        return {"jsonrpc": "2.0", "result": result, "id": request.get("id")}

    # -- the FIFO -------------------------------------------------------------------------------
    def on_fifo(self) -> None:
        try:
            data = os.read(self.fifo_fd, 65536)
        except BlockingIOError:
            return
        self.fifo_buf += data
        while b"\n\n" in self.fifo_buf or self.fifo_buf.startswith(b"\n"):
            request, _, rest = bytes(self.fifo_buf).partition(b"\n\n")
            self.fifo_buf[:] = rest
            request = request.lstrip(b"\n")
            if request:
                self.fifo_request(request.decode("utf-8", "replace").split("\n"))

    def fifo_request(self, lines: list[str]) -> None:
        head = lines[0]
        if not head.startswith(":") or head.count(":") < 2:
            log.warning(f"fifo: malformed request line {head[:80]!r} (expected :command:reply_fifo)")
            return
        _, name, reply = head.split(":", 2)
        try:
            result = self.execute(name, [l for l in lines[1:] if l])
            text = "200 OK\n" + _text(result)
        except commands.MIError as e:
            text = f"500 {e}\n"
        if reply:
            path = reply if os.path.isabs(reply) else os.path.join(self.settings.fifo_dir, reply)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                log.warning(f"fifo: cannot open the reply FIFO {path}: {e.strerror}")
                return
            try:
                os.write(fd, text.encode() + b"\n")
            except OSError as e:
                log.warning(f"fifo: cannot write the reply to {path}: {e.strerror}")
            finally:
                os.close(fd)


def _text(result, indent: str = "") -> str:
    """Results as OpenSER printed them: name:: value lines, nested by indentation."""
    if isinstance(result, dict):
        return "".join(f"{indent}{k}:: {v}\n" if not isinstance(v, (dict, list))
                       else f"{indent}{k}::\n{_text(v, indent + chr(9))}" for k, v in result.items())
    if isinstance(result, list):
        return "".join(_text(item, indent) if isinstance(item, (dict, list)) else f"{indent}{item}\n"
                       for item in result)
    return f"{indent}{result}\n"


def _rpc_error(request_id, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id}


class MIStartError(Exception):
    """A management endpoint cannot be created; the text names the parameter and the path."""


class Endpoints:
    """The management socket and FIFO, made by the master before it forks and drops privileges:
    a bad path stops the start with its name, folders only root may write work, and a respawned
    mi process serves the same ones."""

    def __init__(self, settings) -> None:
        self.listener = _open_socket(settings.mi_socket, settings.mi_socket_mode) if settings.mi_socket else None
        self.fifo_fd = _open_fifo(settings.fifo, settings.fifo_mode) if settings.fifo else None


def _open_socket(path: str, mode: int) -> socket.socket:
    _unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except OSError as e:
        sock.close()
        raise MIStartError(f"mi_socket={path}: {e.strerror}") from None
    finally:
        os.umask(old)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _open_fifo(path: str, mode: int) -> int:
    try:
        if os.path.lexists(path):
            if not stat.S_ISFIFO(os.lstat(path).st_mode):
                raise MIStartError(f"fifo={path} exists and is not a FIFO (pyproxy does not replace it)")
            os.unlink(path)
        os.mkfifo(path, mode)
        os.chmod(path, mode)
        # opened read-write so that the last writer closing does not give us EOF after EOF
        return os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as e:
        raise MIStartError(f"fifo={path}: {e.strerror}") from None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            log.warning(f"cannot remove {path}: {e.strerror}")
