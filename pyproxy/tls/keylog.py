"""``tls_keylog_file``: every TLS connection's secrets, in the NSS key log format, for Wireshark.

What ``SSLKEYLOGFILE`` makes browsers write: ``CLIENT_RANDOM`` lines for TLS 1.2,
``CLIENT_HANDSHAKE_TRAFFIC_SECRET``, ``CLIENT_TRAFFIC_SECRET_0``, ... for TLS 1.3, each naming the
ClientHello's random. With them a capture can be decrypted, which is the point (TLS 1.3 leaves
no other way: ssldump with the server's key worked only for RSA key exchange) and the danger:
whoever reads the file reads the calls.

Rules:
- The master opens the file when it builds the TLS domains, before it drops privileges; the
  workers inherit the descriptor. One descriptor per path and process, so a ``tls_reload``
  (which builds the domains again, in a worker) reuses it instead of opening the file anew.
- Opened with O_APPEND and created with mode 0600; an existing file that group or others can
  read, that another user owns, that has other names (hard links), a symbolic link or anything
  but a regular file is refused.
- Each line is one ``os.write`` on the O_APPEND descriptor: a line is far shorter than what the
  kernel writes in one piece, so lines of different workers never interleave.
"""

from __future__ import annotations

import os
import pwd
import stat

from OpenSSL import SSL

from ..config.values import config_path

_OPEN: dict[str, "KeyLog"] = {}         # absolute path -> the KeyLog of this process


class KeyLog:
    """The keylog callback of every Context (``Context.set_keylog_callback``)."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def __call__(self, conn: SSL.Connection, line: bytes) -> None:
        try:
            os.write(self.fd, line + b"\n")
        except OSError:
            pass            # a debugging aid: a full disk must not break the connection


def open_keylog(value: str, cfg_dir: str, report, run_user: str = "", create: bool = True) -> KeyLog | None:
    """The KeyLog of ``tls_keylog_file`` (a relative path is in the config's folder; the loader
    makes the default one absolute in the state folder); None, with the problem in ``report``,
    when it cannot be opened or is not safe to write secrets to. ``create=False`` (checks: -c,
    tls check, the mi process) only looks: it neither creates the file nor opens it."""
    path = os.path.abspath(config_path(value, cfg_dir))
    if path in _OPEN:
        return _OPEN[path]
    if not create:
        problem = _unsafe(os.lstat(path), run_user) if os.path.lexists(path) else None
        if problem is None and not os.path.lexists(path) and not os.access(os.path.dirname(path), os.W_OK):
            problem = "cannot be created: its folder is not writable"
        if problem:
            report.error(f"{path}: {problem}")
        return None
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        why = "is a symbolic link" if os.path.islink(path) else f"cannot open: {e.strerror}"
        report.error(f"{path}: {why}")
        return None
    problem = _unsafe(os.fstat(fd), run_user)
    if problem:
        os.close(fd)
        report.error(f"{path}: {problem}")
        return None
    _OPEN[path] = keylog = KeyLog(path, fd)
    return keylog


def _unsafe(st: os.stat_result, run_user: str) -> str | None:
    """Why a file may not receive the secrets: what it is, who may read it, who owns it."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_mode & 0o077:
        return (f"is readable or writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): it will "
                f"hold the secrets of every TLS connection; chmod 600 it")
    if st.st_uid not in (os.geteuid(), _uid(run_user)):
        return f"belongs to uid {st.st_uid}, neither pyproxy's user nor this one: that user would read the secrets"
    if st.st_nlink > 1:
        return "has other names (hard links): whoever made them would read the secrets"
    return None


def _uid(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid if user else None
    except KeyError:
        return None
