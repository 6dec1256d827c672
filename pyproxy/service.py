"""``pyproxyctl service install``: lay pyproxy out as a systemd service, as a distribution package
(or ``openserctl``) would -- the config in /etc/pyproxy, the unit in /etc/systemd/system, a
``pyproxy`` system user.

Rules: an existing config is never touched (it is the administrator's); the unit is ours and is
rewritten (local changes belong in a drop-in, ``systemctl edit pyproxy``); nothing outside the
given root is written, and users are created only on the real system, by root. The shipped files
are read from a source checkout (``etc/``) or from a wheel install (``share/pyproxy/`` under the
prefix, setup.cfg's data_files), and adapted with two small text edits.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pyproxy

CONFIG = Path("/etc/pyproxy/pyproxy.cfg")
UNIT = Path("/etc/systemd/system/pyproxy.service")
USER = "pyproxy"
STATE_DIR = "/var/lib/pyproxy"
# PrivateTmp=yes gives the service its own /tmp: its management socket lives in its
# RuntimeDirectory, where pyproxyctl can reach it.
MI_SOCKET = "/run/pyproxy/mi.sock"
USERADD = ["useradd", "--system", "--user-group", "--home-dir", STATE_DIR, "--no-create-home",
           "--shell", "/usr/sbin/nologin", "--comment", "pyproxy SIP proxy", USER]
# Folders ProtectHome=yes hides from the service: a pyproxy installed there must stay readable.
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))


class ServiceError(Exception):
    """What stops the installation (a shipped file not found, a folder we may not write)."""


# --- the shipped files -------------------------------------------------------------------------

def shipped_dirs() -> list[Path]:
    """Where the shipped files may be, in order: the checkout this package runs from, then the
    data folders of the installation schemes a wheel may have used."""
    dirs = [Path(pyproxy.__file__).resolve().parents[1] / "etc"]
    for base in (sys.prefix, sysconfig.get_path("data"), site.USER_BASE):
        if base:
            dirs.append(Path(base) / "share" / "pyproxy")
    return list(dict.fromkeys(dirs))


def shipped(name: str) -> Path:
    """A shipped file (``pyproxy.cfg``, ``systemd/pyproxy.service``)."""
    for folder in shipped_dirs():
        if (folder / name).is_file():
            return folder / name
    raise ServiceError(f"the shipped {name} is in none of: " + ", ".join(map(str, shipped_dirs())))


def pyproxy_executable() -> Path:
    """The ``pyproxy`` command of the Python running this one (a virtualenv's own)."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        path = Path(folder) / "pyproxy"
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("pyproxy")
    if found:
        return Path(found)
    raise ServiceError(f"no pyproxy command beside {sys.executable} nor on PATH")


# --- adapting them -----------------------------------------------------------------------------

_MI_SOCKET = re.compile(r'^mi_socket\s*=\s*"([^"]*)"', re.M)
_EXEC_START = re.compile(r"^ExecStart=(\S+)", re.M)
_PROTECT_HOME = re.compile(r"^ProtectHome=yes$", re.M)


def service_config(text: str) -> str:
    """The shipped config with its management socket in /run/pyproxy (also where its comments
    name it); everything else as shipped."""
    m = _MI_SOCKET.search(text)
    if not m:
        return text + f'\nmi_socket="{MI_SOCKET}"\n'
    if m.group(1):
        return text.replace(m.group(1), MI_SOCKET)     # the assignment and the comments naming it
    return text[:m.start()] + f'mi_socket="{MI_SOCKET}"' + text[m.end():]


def service_unit(text: str, executable: Path) -> str:
    """The shipped unit with ExecStart naming `executable`. ProtectHome=yes would hide a pyproxy
    installed under a home folder (a virtualenv in /root, say): it becomes read-only there."""
    if not _EXEC_START.search(text):
        raise ServiceError("the shipped unit has no ExecStart=")
    quoted = f'"{executable}"' if re.search(r"\s", str(executable)) else str(executable)
    text = _EXEC_START.sub(lambda m: f"ExecStart={quoted}", text, count=1)
    if under_home(executable):
        text = _PROTECT_HOME.sub("ProtectHome=read-only", text)
    return text


def under_home(executable: Path) -> bool:
    paths = {executable, executable.resolve(), Path(sys.prefix).resolve()}
    return any(p.is_relative_to(home) for p in paths for home in HOMES)


# --- installing --------------------------------------------------------------------------------

@dataclass
class Plan:
    root: Path                  # "/" for the real system
    executable: Path
    dry_run: bool = False

    @property
    def real_system(self) -> bool:
        return self.root.resolve() == Path("/")

    def target(self, path: Path) -> Path:
        return self.root / path.relative_to("/")


def install(plan: Plan) -> list[str]:
    """Write the config (unless it exists) and the unit, create the user; the lines to print."""
    would = "would be " if plan.dry_run else ""
    lines = []
    config = plan.target(CONFIG)
    if config.exists():
        lines.append(f"{config}: exists, left as it is (mi_socket should be {MI_SOCKET}: /tmp is private)")
    else:
        _write(plan, config, service_config(shipped("pyproxy.cfg").read_text()), 0o644)
        lines.append(f"{config}: {would}written from {shipped('pyproxy.cfg')}")
    unit = plan.target(UNIT)
    text = service_unit(shipped("systemd/pyproxy.service").read_text(), plan.executable)
    before = unit.read_text() if unit.is_file() else None
    if before != text:
        _write(plan, unit, text, 0o644)
    state = "unchanged" if before == text else "replaced" if before is not None else "written"
    lines.append(f"{unit}: {would if before != text else ''}{state}, ExecStart={plan.executable}")
    if "ProtectHome=read-only" in text:
        lines.append(f"  (ProtectHome=read-only instead of yes: {plan.executable} is under a home folder)")
    lines += _user(plan)
    if plan.real_system:
        lines.append("then: systemctl daemon-reload && systemctl enable --now pyproxy")
    else:
        lines.append("then, on that system: systemctl daemon-reload && systemctl enable --now pyproxy")
    ctl = plan.executable.with_name("pyproxyctl")
    lines.append(f"users: runuser -u {USER} -- {ctl} -f {CONFIG} add USER PASSWORD; "
                 f"management: {ctl} mi -s {MI_SOCKET} ps")
    return lines


def _write(plan: Plan, path: Path, text: str, mode: int) -> None:
    if plan.dry_run:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.replace(path)
    except OSError as e:
        raise ServiceError(f"{e.filename or path}: {e.strerror}") from None


def _user(plan: Plan) -> list[str]:
    command = shlex.join(USERADD)
    if not plan.real_system:
        return [f"user: create it on that system: {command}"]
    try:
        pwd.getpwnam(USER)
        return [f"user {USER}: exists"]
    except KeyError:
        pass
    if os.geteuid() != 0:
        return [f"user {USER}: missing; as root: {command}"]
    if plan.dry_run:
        return [f"user {USER}: would run {command}"]
    done = subprocess.run(USERADD, capture_output=True, text=True, check=False)
    if done.returncode:
        raise ServiceError(f"{command}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return [f"user {USER}: created ({command})"]


# --- pyproxyctl --------------------------------------------------------------------------------

def run_install(args) -> list[str]:
    """``pyproxyctl service install [--root DIR] [--dry-run]``."""
    try:
        return install(Plan(Path(args.root), pyproxy_executable(), args.dry_run))
    except ServiceError as e:
        raise SystemExit(f"pyproxyctl: {e}") from None
