"""Talking to a running pyproxy's management interface: JSON-RPC over its Unix socket, or
OpenSER's FIFO protocol. Used by ``pyproxyctl``.

Two failures, told apart because scripts act on them differently: `MIUnreachable` (nobody serves
the path, the connection broke, no answer in time) and `MIClientError` (pyproxy answered: no)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import tempfile
import time

DEFAULT_SOCKET = "/tmp/pyproxy_mi.sock"


class MIClientError(Exception):
    """pyproxy answered with an error (an unknown command, a failed one), or not in its protocol."""


class MIUnreachable(MIClientError):
    """pyproxy could not be reached: no socket or FIFO, nobody serving it, no answer in time."""


def call_socket(path: str, method: str, params: list[str], timeout: float = 10.0):
    """The result of one JSON-RPC call; MIClientError with the server's message on error."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
                      + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except socket.timeout:
        raise MIUnreachable(f"pyproxy at {path} did not answer in {timeout:g} s") from None
    except OSError as e:
        raise MIUnreachable(f"cannot talk to pyproxy at {path}: {e.strerror or e}{_hint(e, 'mi_socket')}") from None
    if not buf:
        raise MIUnreachable(f"pyproxy at {path} closed the connection without answering")
    try:
        answer = json.loads(buf)
    except ValueError:
        raise MIClientError(f"pyproxy at {path} sent something that is not JSON-RPC") from None
    if "error" in answer:
        raise MIClientError(answer["error"].get("message", "error"))
    return answer.get("result")


def call_fifo(fifo: str, method: str, params: list[str], timeout: float = 10.0) -> str:
    """OpenSER's FIFO protocol: the reply text ("200 OK" and the result lines)."""
    folder = tempfile.mkdtemp(prefix="pyproxyctl-")
    reply = os.path.join(folder, "reply")
    os.mkfifo(reply, 0o600)
    # open before asking: pyproxy opens the reply FIFO without waiting, and finds no reader else
    rfd = os.open(reply, os.O_RDONLY | os.O_NONBLOCK)
    with contextlib.suppress(OSError):      # root asking a pyproxy run with -u: its user answers,
        owner = os.stat(fifo)               # into this FIFO only (the folder stays root's)
        if os.geteuid() == 0 and owner.st_uid != 0:
            os.chmod(folder, 0o711)
            os.fchown(rfd, owner.st_uid, owner.st_gid)
    try:
        try:
            if not stat.S_ISFIFO(os.stat(fifo).st_mode):
                raise MIUnreachable(f"{fifo} is not a FIFO (is it pyproxy's fifo= ?)")
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise MIUnreachable(f"cannot open the FIFO {fifo}: {e.strerror}{_hint(e, 'fifo')}") from None
        with os.fdopen(fd, "w") as f:
            f.write(f":{method}:{reply}\n" + "".join(f"{p}\n" for p in params) + "\n")
        data, deadline = b"", time.monotonic() + timeout
        while not data.endswith(b"\n\n") and time.monotonic() < deadline:
            try:
                chunk = os.read(rfd, 65536)
            except BlockingIOError:
                chunk = b""
            if not chunk:
                time.sleep(0.02)
            data += chunk
        if not data.endswith(b"\n\n"):
            raise MIUnreachable(f"no reply from pyproxy on {fifo} in {timeout:.0f} s" if not data else
                                f"the reply from pyproxy on {fifo} stopped after {len(data)} bytes")
        return data.decode(errors="replace").rstrip("\n")
    finally:
        os.close(rfd)
        os.unlink(reply)
        os.rmdir(folder)


def _hint(error: OSError, parameter: str) -> str:
    """A likely cause, for the errors that mean nobody serves the path."""
    if error.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENXIO):
        return f" (is {parameter}= set, and pyproxy running?)"
    return ""
