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
import math
import os
import select
import socket
import stat
import time

from ..kernel import ipc
from ..kernel.logs import log
from ..kernel.loop import EventLoop, accept_client
from ..kernel.process import become, run_as
from ..sip.uri import host_port
from . import commands, metrics

WORKER_TIMEOUT = 3.0
MAX_CLIENTS = 64                # socket clients at once; more are refused
CLIENT_QUEUE_LIMIT = 8 << 20    # answers a client leaves unread before it is dropped
REQUEST_LIMIT = 1 << 20         # bytes of one request (a line, or a FIFO request)
FIFO_WRITE_TIMEOUT = 5.0        # seconds a FIFO reply waits for its reader


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
        self.load_config = None         # reads and checks the config file again (the master's load)
        self.loop = EventLoop()
        # numbered from this process's pid up: an answer a previous mi process waited for in vain
        # (it was restarted by a reload) is not taken for an answer to this one's question
        self.ids = itertools.count((os.getpid() << 32) + 1)
        self.clients: dict[int, tuple[socket.socket, bytearray, bytearray]] = {}   # fd: socket, in, out

    # -- process --------------------------------------------------------------------------------
    def run(self, endpoints: "Endpoints") -> None:
        become("mi", self.loop.stop)
        if endpoints.fifo_fd is not None:
            self.fifo_fd, self.fifo_buf = endpoints.fifo_fd, bytearray()
            self.loop.add_reader(self.fifo_fd, self.on_fifo)
        if endpoints.listener is not None:
            self.listener = endpoints.listener
            self.loop.add_reader(self.listener.fileno(), self.accept)
        if endpoints.metrics is not None:
            self.metrics = metrics.MetricsServer(endpoints.metrics, self.loop, metrics.Exposition(self).text)
        self.loop.run()     # the master removes the paths when it stops: a respawned mi serves them

    # -- worker questions -----------------------------------------------------------------------
    def ask_workers(self, question: str) -> list:
        request_id = next(self.ids)
        for send in self.handoff_send:
            send.send(ipc.encode(ipc.Control(request_id, question)))
        answers: dict[int, object] = {}
        parts: dict[int, list[bytes]] = {}      # a worker's long answer comes in several datagrams
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
                    rid, index, last, part = self.replies.read()
                except socket.timeout:
                    continue
                except (EOFError, ValueError, TypeError, IndexError):
                    continue        # not an answer in one piece: none of this question's
                if rid == request_id:
                    parts.setdefault(index, []).append(part)
                    if last:
                        answers[index] = ipc.answer_of(parts.pop(index))
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

    def reload_refusal(self) -> str | None:
        """Why the master would refuse to reload the config file as it is now (None: it would
        go ahead), so that ``reload`` can say so to whoever asked. The TLS files are left to the
        master: this process may not be allowed to read the private keys."""
        from ..assembly import reload as config_reload
        if self.load_config is None:
            return None
        try:
            config_reload.load_new(self.load_config, self.config)
        except config_reload.Refusal as e:
            return "\n".join([e.reason, *e.errors])
        return None

    def execute(self, name: str, args: list[str]):
        log.info(_clean(f"mi command: {name} {' '.join(args)}".rstrip()))
        return commands.run(self, name, args)

    # -- the JSON-RPC socket --------------------------------------------------------------------
    def accept(self) -> None:
        client = accept_client(self.loop, self.listener, self.accept, "mi_socket")
        if client is None:
            return
        if len(self.clients) >= MAX_CLIENTS:
            log.warning(f"mi_socket: {MAX_CLIENTS} clients connected already; one more refused")
            client.close()
            return
        client.setblocking(False)
        fd = client.fileno()
        self.clients[fd] = (client, bytearray(), bytearray())
        self.loop.add_reader(fd, lambda: self.on_client(fd))

    def on_client(self, fd: int) -> None:
        client, buf, out = self.clients[fd]
        try:
            data = client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or len(buf) > REQUEST_LIMIT:
            if not data and out:        # the client half-closed: what it asked for still goes to it
                self.loop.add_reader(fd, None)
            else:
                self.drop_client(fd)
            return
        buf += data
        while b"\n" in buf and fd in self.clients:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            if line.strip():
                answer = self.json_rpc(line)
                if answer is not None:
                    self.answer_client(fd, json.dumps(answer).encode() + b"\n")

    def answer_client(self, fd: int, data: bytes) -> None:
        """Queue ``data`` and send what the client takes: one that does not read blocks nobody."""
        client, _, out = self.clients[fd]
        out += data
        try:
            del out[:client.send(out)]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.drop_client(fd)
            return
        if len(out) > CLIENT_QUEUE_LIMIT:
            log.warning(f"mi_socket: a client left {len(out)} bytes of answers unread; dropped")
            self.drop_client(fd)
        elif not out and self.loop.handlers.get(fd, [True])[0] is None:
            self.drop_client(fd)        # half-closed, and answered in full
        else:
            self.loop.set_writer(fd, (lambda: self.answer_client(fd, b"")) if out else None)

    def drop_client(self, fd: int) -> None:
        client, _, _ = self.clients.pop(fd)
        self.loop.remove(fd)
        client.close()

    def json_rpc(self, line: bytes):
        """The answer to one line: a response, a list of them (a batch), or None (notifications)."""
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            return _rpc_error(None, -32700, "parse error")
        if isinstance(request, list) and request:
            return [a for a in map(self.rpc_call, request) if a is not None] or None
        return self.rpc_call(request)

    def rpc_call(self, request):
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or \
                not isinstance(request.get("method"), str) or not _valid_id(request.get("id")):
            request_id = request.get("id") if isinstance(request, dict) else None
            return _rpc_error(request_id if _valid_id(request_id) else None, -32600, "invalid request")
        request_id = request.get("id")
        params = request.get("params", [])
        if not isinstance(params, list):
            answer = _rpc_error(request_id, -32602, "params must be a list (given by position)")
        else:
            try:
                answer = {"jsonrpc": "2.0", "result": self.execute(request["method"], [str(p) for p in params]),
                          "id": request_id}
            except commands.MIError as e:
                answer = _rpc_error(request_id, -32601 if str(e).startswith("unknown command") else -32000, str(e))
            except Exception as e:      # a bug answers as an error, not as silence
                log.exception(f"mi command {request['method']!r} failed")
                answer = _rpc_error(request_id, -32603, f"internal error: {e}")
        return answer if "id" in request else None      # a notification is not answered

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
                try:
                    self.fifo_request(request.decode("utf-8", "replace").split("\n"))
                except Exception:
                    log.exception("fifo: a request failed")
        if len(self.fifo_buf) > REQUEST_LIMIT:
            log.warning(f"fifo: {len(self.fifo_buf)} bytes without the empty line that ends a request; dropped")
            self.fifo_buf.clear()

    def fifo_request(self, lines: list[str]) -> None:
        head = lines[0]
        if not head.startswith(":") or head.count(":") < 2:
            log.warning(_clean(f"fifo: malformed request line {head[:80]!r} (expected :command:reply_fifo)"))
            return
        _, name, reply = head.split(":", 2)
        try:
            result = self.execute(name, [l for l in lines[1:] if l])
            text = "200 OK\n" + _text(result)
        except commands.MIError as e:
            text = f"500 {_clean(str(e))}\n"
        if not reply:
            return
        if not os.path.isabs(reply) and "/" in reply:
            log.warning(_clean(f"fifo: reply FIFO {reply!r} refused: a name in fifo_dir, or an absolute path"))
            return
        write_reply(reply if os.path.isabs(reply) else os.path.join(self.settings.fifo_dir, reply), text + "\n")


def write_reply(path: str, text: str) -> None:
    """Write a FIFO request's answer to its reply FIFO: a FIFO only (never a file or a link a
    local user points us at), all of it, waiting a bounded time for a slow reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except (OSError, ValueError) as e:
        log.warning(_clean(f"fifo: cannot open the reply FIFO {path}: {getattr(e, 'strerror', None) or e}"))
        return
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            log.warning(_clean(f"fifo: {path} is not a FIFO; no reply written there"))
            return
        data, deadline = memoryview(text.encode()), time.monotonic() + FIFO_WRITE_TIMEOUT
        while data:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning(_clean(f"fifo: {path} was not read for {FIFO_WRITE_TIMEOUT:.0f} s; reply cut"))
                    return
                select.select([], [fd], [], 0.1)
    except OSError as e:
        log.warning(_clean(f"fifo: cannot write the reply to {path}: {e.strerror}"))
    finally:
        os.close(fd)


def _text(result, indent: str = "") -> str:
    """Results as OpenSER printed them: name:: value lines, nested by indentation."""
    if isinstance(result, dict):
        return "".join(f"{indent}{_clean(str(k))}:: {_clean(str(v))}\n" if not isinstance(v, (dict, list))
                       else f"{indent}{_clean(str(k))}::\n{_text(v, indent + chr(9))}" for k, v in result.items())
    if isinstance(result, list):
        return "".join(_text(item, indent) if isinstance(item, (dict, list)) else f"{indent}{_clean(str(item))}\n"
                       for item in result)
    return f"{indent}{_clean(str(result))}\n"


def _clean(text: str) -> str:
    """Control characters escaped: a peer's SNI or a command name cannot start a line of its own
    in a reply or in the log (an empty line ends a FIFO reply)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _valid_id(value) -> bool:
    """JSON-RPC 2.0: an id is a string, a number or null (and a NaN cannot be sent back)."""
    return value is None or isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                       and math.isfinite(value))


def _rpc_error(request_id, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id}


class MIStartError(Exception):
    """A management endpoint cannot be created; the text names the parameter and the path."""


class Endpoints:
    """The management socket and FIFO (and metrics_listen's TCP socket), made by the master before
    it forks and drops privileges: a bad path or address stops the start with its name, folders
    only root may write work, and a respawned mi process serves the same ones. The master removes
    them when it stops."""

    def __init__(self, settings) -> None:
        self.paths: list[str] = []          # what this start made, and so may remove
        self.listener = _open_socket(settings.mi_socket, settings.mi_socket_mode) if settings.mi_socket else None
        if self.listener is not None:
            self.paths.append(settings.mi_socket)
        try:
            self.fifo_fd = _open_fifo(settings.fifo, settings.fifo_mode) if settings.fifo else None
            if self.fifo_fd is not None:
                self.paths.append(settings.fifo)
            self.metrics = _open_metrics(settings.metrics_listen) if settings.metrics_listen else None
            ids = run_as(settings.user, settings.group)
            for path in self.paths if ids else ():     # the -u user's, as OpenSER's fifo_user: the mi
                os.chown(path, *ids, follow_symlinks=False)    # process opens replies, the master removes them
        except (MIStartError, KeyError, OSError) as e:
            self.remove()
            if isinstance(e, MIStartError):
                raise
            raise MIStartError(f"mi_socket/fifo: cannot give them to -u {settings.user} -g {settings.group}: "
                               f"{getattr(e, 'strerror', None) or e}") from None

    def remove(self) -> None:
        for path in self.paths:
            _unlink(path)
        self.paths = []


def _open_socket(path: str, mode: int) -> socket.socket:
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise MIStartError(f"mi_socket={path} exists and is not a socket (pyproxy does not replace it)")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(path) == 0:
                raise MIStartError(f"mi_socket={path} is served by another process (a pyproxy running "
                                   "already?); choose another path")
        _unlink(path)       # left by a pyproxy that did not stop cleanly
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
            try:        # opening it to write succeeds only when a process reads it
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
            else:
                raise MIStartError(f"fifo={path} is read by another process (a pyproxy running already?); "
                                   "choose another path")
            os.unlink(path)
        os.mkfifo(path, mode)
        os.chmod(path, mode)
        # opened read-write so that the last writer closing does not give us EOF after EOF
        return os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as e:
        raise MIStartError(f"fifo={path}: {e.strerror}") from None


def _open_metrics(spec) -> socket.socket:
    address = host_port(spec.host, spec.port)
    try:
        return metrics.listen(spec.host, spec.port)
    except OSError as e:
        hint = " (a pyproxy or another program listens there already?)" if e.errno == errno.EADDRINUSE else ""
        raise MIStartError(f"metrics_listen={address}: {e.strerror}{hint}") from None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            log.warning(f"cannot remove {path}: {e.strerror}")
