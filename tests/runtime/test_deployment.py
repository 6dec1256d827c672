"""Deployment: the systemd unit (``systemd-analyze verify`` with no complaint), ``pyproxyctl service
install`` into a folder standing for / (and from a wheel installed in a virtualenv), and the
container -- Docker's daemon is not needed: the Dockerfile is read, what it copies must exist,
its config is checked and run as the image would run it (with its HEALTHCHECK and the OPTIONS of
tools/docker-smoke), and the smoke test itself runs where a daemon answers (exit 77 skips).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from pyproxy import service
from pyproxy.config.settings import PARAMS
from ._harness import ROOT, free_port, stop_process, udp_options

UNIT = ROOT / "etc" / "systemd" / "pyproxy.service"
DOCKERFILE = ROOT / "Dockerfile"
SMOKE = ROOT / "tools" / "docker-smoke"
CTL = [sys.executable, "-m", "pyproxy.ctl"]
PYPROXY = [sys.executable, "-m", "pyproxy"]



def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def check_config(path: Path) -> None:
    done = run([*PYPROXY, "-c", "-f", str(path)])
    assert done.returncode == 0 and ": OK: " in done.stdout, done.stdout + done.stderr


# --- the systemd unit ----------------------------------------------------------------------------

def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def verify(unit: Path) -> None:
    """``systemd-analyze verify``: no line about the unit (unknown keys, bad values, a missing
    ExecStart binary are only warnings, with exit status 0)."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: apt-get install -y systemd"
    done = run(["systemd-analyze", "verify", str(unit)])
    about = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0 and not about, "\n".join(about) or done.stderr


def test_shipped_unit_passes_systemd_analyze_verify(tmp_path):
    # verify complains that the shipped /usr/local/bin/pyproxy does not exist here: check a copy
    # naming the real one, and that the copy differs in that path only
    shipped = UNIT.read_text()
    real = service.pyproxy_executable()
    copy = tmp_path / "pyproxy.service"
    copy.write_text(shipped.replace("ExecStart=/usr/local/bin/pyproxy ", f"ExecStart={real} ", 1))
    changed = [(a, b) for a, b in zip(shipped.splitlines(), copy.read_text().splitlines()) if a != b]
    assert changed == [("ExecStart=/usr/local/bin/pyproxy -f /etc/pyproxy/pyproxy.cfg -m 128 -D",
                        f"ExecStart={real} -f /etc/pyproxy/pyproxy.cfg -m 128 -D")]
    verify(copy)


def test_unit_is_a_hardened_notify_service():
    s = unit_settings(UNIT.read_text())
    expected = {
        "Type": "notify", "NotifyAccess": "main", "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure", "User": "pyproxy", "Group": "pyproxy", "KillMode": "mixed",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE", "NoNewPrivileges": "yes",
        "RuntimeDirectory": "pyproxy", "StateDirectory": "pyproxy", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes",
    }
    assert {k: s.get(k, [None])[-1] for k in expected} == expected
    assert 10 <= int(s["WatchdogSec"][0]) <= 120
    # every TCP/TLS connection is a descriptor, and a process has others
    assert int(s["LimitNOFILE"][0]) >= PARAMS["tcp_max_connections"].default + 256


# --- pyproxyctl service install -----------------------------------------------------------------

def install(root: Path, *options, ctl=CTL, cwd=None) -> subprocess.CompletedProcess:
    done = run([*ctl, "service", "install", "--root", str(root), *options], cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done


def test_service_install_lays_out_a_service(tmp_path):
    done = install(tmp_path)
    config = tmp_path / "etc/pyproxy/pyproxy.cfg"
    unit = tmp_path / "etc/systemd/system/pyproxy.service"
    # the shipped config, its management socket where the service can make it (/tmp is private)
    text = config.read_text()
    assert re.findall(r'^mi_socket=.*', text, re.M) == ['mi_socket="/run/pyproxy/mi.sock"']
    assert "/tmp/" not in text
    assert text == service.service_config((ROOT / "etc/pyproxy.cfg").read_text())
    check_config(config)
    # the shipped unit, started with the pyproxy of this Python
    s = unit_settings(unit.read_text())
    assert s["ExecStart"] == [f"{service.pyproxy_executable()} -f /etc/pyproxy/pyproxy.cfg -m 128 -D"]
    assert s["ProtectHome"] == (["read-only"] if service.under_home(service.pyproxy_executable()) else ["yes"])
    verify(unit)
    assert "systemctl daemon-reload && systemctl enable --now pyproxy" in done.stdout
    assert "useradd --system" in done.stdout       # said, not done: --root is another system
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "etc/pyproxy/pyproxy.cfg", "etc/systemd/system/pyproxy.service"]


def test_service_install_keeps_the_administrators_config(tmp_path):
    config = tmp_path / "etc/pyproxy/pyproxy.cfg"
    config.parent.mkdir(parents=True)
    config.write_text("# mine\n")
    unit = tmp_path / "etc/systemd/system/pyproxy.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/old/venv/bin/pyproxy\n")
    done = install(tmp_path)
    assert config.read_text() == "# mine\n" and "exists, left as it is" in done.stdout
    assert "replaced" in done.stdout and "ExecStart=/old/" not in unit.read_text()
    assert "unchanged" in install(tmp_path).stdout


def test_service_install_dry_run_writes_nothing(tmp_path):
    done = install(tmp_path, "--dry-run")
    assert "would be written" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_service_install_from_a_wheel_in_a_virtualenv(tmp_path):
    """A wheel carries the shipped files as data (share/pyproxy); installed in a virtualenv, its
    pyproxyctl finds them there and names the virtualenv's pyproxy in ExecStart."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".git", "bench-results", ".hypothesis", "tls", "*.db*"))
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"),
                str(source)], timeout=300)
    assert done.returncode == 0, done.stderr
    wheel, = (tmp_path / "wheel").glob("pyproxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split(".data/data/", 1)[-1] for n in names if ".data/data/" in n} == {
        "share/pyproxy/pyproxy.cfg", "share/pyproxy/systemd/pyproxy.service"}
    assert any(".dist-info/" in n and n.endswith("/LICENSE") for n in names)
    # the dependencies from this Python's site-packages, pyproxy from the wheel
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)]).returncode == 0
    done = run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--no-deps",
                "--no-index", "-q", str(wheel)], timeout=300)
    assert done.returncode == 0, done.stderr
    where = run([str(venv / "bin/python"), "-c", "import pyproxy; print(pyproxy.__file__)"], cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    root = tmp_path / "root"
    install(root, ctl=[str(venv / "bin/pyproxyctl")], cwd=tmp_path)
    assert (root / "etc/pyproxy/pyproxy.cfg").read_text() == service.service_config(
        (ROOT / "etc/pyproxy.cfg").read_text())
    unit = root / "etc/systemd/system/pyproxy.service"
    assert unit_settings(unit.read_text())["ExecStart"][0].startswith(f"{venv}/bin/pyproxy ")
    verify(unit)


def test_installed_service_runs_as_systemd_runs_it(tmp_path, reaper):
    """The installed unit's ExecStart on the installed config (ports and /run/pyproxy moved), with
    the environment systemd gives it: READY=1 and watchdog pings on NOTIFY_SOCKET, its files in
    STATE_DIRECTORY and nothing beside the config (read-only there), ExecReload reloads, SIGTERM
    stops it cleanly."""
    root = tmp_path / "root"
    install(root)
    port = free_port(span=2)
    run_dir, state_dir = tmp_path / "run", tmp_path / "state"
    run_dir.mkdir()
    state_dir.mkdir()
    cfg = root / "etc/pyproxy/pyproxy.cfg"
    text = cfg.read_text().replace("/run/pyproxy", str(run_dir))
    cfg.write_text(re.sub(r"^(listen=\w+:127\.0\.0\.1):506([01])$",
                          lambda m: f"{m.group(1)}:{port + int(m.group(2))}", text, flags=re.M))
    unit = unit_settings((root / "etc/systemd/system/pyproxy.service").read_text())
    argv = shlex.split(unit["ExecStart"][0])
    argv[argv.index("-f") + 1] = str(cfg)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), STATE_DIRECTORY=str(state_dir),
               RUNTIME_DIRECTORY=str(run_dir), WATCHDOG_USEC="2000000")
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proxy = reaper.popen([*argv, "-E"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)

    def expect(field: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            notify.settimeout(left)
            try:
                if field in notify.recv(4096).decode().splitlines():
                    return
            except socket.timeout:
                break
        raise AssertionError(f"no {field} on NOTIFY_SOCKET within {timeout} s (exit {proxy.poll()})\n"
                             + log.read_text())

    try:
        expect("READY=1")
        expect("WATCHDOG=1")
        assert udp_options(port, timeout=1.0, tries=5) == 200, log.read_text()
        assert run([*CTL, "mi", "-s", str(run_dir / "mi.sock"), "uptime"], timeout=30).returncode == 0
        assert (state_dir / "tls" / "cert.pem").is_file() and (state_dir / "pyproxy.db").is_file()
        assert [p.name for p in cfg.parent.iterdir()] == ["pyproxy.cfg"]
        reload = shlex.split(unit["ExecReload"][0].replace("$MAINPID", str(proxy.pid)))
        assert run(reload).returncode == 0
        expect("RELOADING=1")
        expect("READY=1")
        proxy.send_signal(signal.SIGTERM)
        expect("STOPPING=1")
        assert proxy.wait(30) == 0, log.read_text()
    finally:
        notify.close()
        stop_process(proxy)


# --- the container -------------------------------------------------------------------------------

def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def args_of(text: str) -> list[str]:
    return json.loads(text) if text.startswith("[") else shlex.split(text)


def copies() -> list[tuple[list[str], str]]:
    out = []
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:     # (not from a build stage)
            *sources, dest = [a for a in args_of(rest) if not a.startswith("--")]
            out.append((sources, dest))
    return out


def source_of(image_path: str) -> Path:
    """The file of this tree that the image has at `image_path` (the last COPY to it wins)."""
    found = None
    for sources, dest in copies():
        for src in sources:
            local = ROOT / src
            if local.is_dir() and dest.endswith("/") and image_path.startswith(dest):
                candidate = local / image_path[len(dest):]
                found = candidate if candidate.is_file() else found
            elif image_path in (dest, dest + Path(src).name):
                found = local
    assert found, f"no COPY in the Dockerfile puts {image_path} in the image"
    return found


def command() -> list[str]:
    (cmd,) = [args_of(rest) for word, rest in instructions() if word == "CMD"]
    return cmd


def healthcheck() -> list[str]:
    (rest,) = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    return args_of(rest.split(" CMD ", 1)[1].strip())


def container_config(tmp_path: Path, port: int | None = None) -> Path:
    """The image's config with its volume and run folders in tmp_path (and its ports moved)."""
    text = source_of(command()[command().index("-f") + 1]).read_text()
    for folder in ("/var/lib/pyproxy", "/run/pyproxy"):
        here = tmp_path / folder.strip("/").replace("/", "-")
        here.mkdir(exist_ok=True)
        text = text.replace(folder, str(here))
    if port:
        text = re.sub(r"^(listen=\w+:[^:\n]+):5060$", rf"\g<1>:{port}", text, flags=re.M)
        text = re.sub(r"^(listen=\w+:[^:\n]+):5061$", rf"\g<1>:{port + 1}", text, flags=re.M)
    cfg = tmp_path / "pyproxy.cfg"
    cfg.write_text(text)
    return cfg


def test_dockerfile_copies_what_exists_and_is_not_ignored():
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".git", "venv", ".venv", "build", "dist"} <= set(ignored)
    for sources, _ in copies():
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile: COPY {src}: no such file"
            assert src.strip("/").split("/")[0] not in ignored, f"COPY {src}: excluded by .dockerignore"
    # everything `pip install` needs to build the package, with its data files
    sent = {s.strip("/") for sources, _ in copies() for s in sources}
    assert {"pyproject.toml", "setup.cfg", "README.rst", "LICENSE", "pyproxy", "etc", "tools/pyproxy_build.py"} <= sent


def test_container_config_listens_on_every_address_and_writes_to_the_volume(tmp_path):
    cfg = source_of("/etc/pyproxy/pyproxy.cfg")
    assert cfg == ROOT / "etc/docker/pyproxy.cfg"
    text = cfg.read_text()
    assert re.findall(r"^listen=.*", text, re.M) == [
        "listen=udp:0.0.0.0:5060", "listen=tcp:0.0.0.0:5060", "listen=tls:0.0.0.0:5061"]
    assert "VOLUME /var/lib/pyproxy" in [f"{w} {r}" for w, r in instructions()]
    assert re.search(r'^tls_certificate="/var/lib/pyproxy/', text, re.M)
    assert re.search(r'"sqlite:///var/lib/pyproxy/', text)
    assert re.search(r'^mi_socket="/run/pyproxy/', text, re.M)
    # the rest is the shipped config's: the same statements once the container's are set aside
    own = re.compile(r'^(listen=|tls_certificate=|tls_private_key=|mi_socket=|modparam\("\w+", "db_url")')

    def statements(t):
        return [line for line in t.splitlines() if line.strip() and not line.startswith("#") and not own.match(line)]
    assert statements(text) == statements((ROOT / "etc/pyproxy.cfg").read_text())
    check_config(container_config(tmp_path))


def test_container_runs_the_units_command():
    """CMD is the unit's ExecStart, logging to standard error, under tini; as the unit, not root."""
    words = dict(instructions())
    assert words["FROM"].startswith("python:3.1")
    assert args_of(words["ENTRYPOINT"])[0].endswith("tini") and words["STOPSIGNAL"] == "SIGTERM"
    assert words["USER"] == "pyproxy"
    assert set(words["EXPOSE"].split()) == {"5060/udp", "5060/tcp", "5061/tcp"}
    unit = shlex.split(unit_settings(UNIT.read_text())["ExecStart"][0])
    cmd = command()

    def without_config(args):
        i = args.index("-f")
        return args[:i] + args[i + 2:]
    assert without_config([a for a in cmd if a != "-E"]) == without_config(unit)
    assert "-E" in cmd and cmd[cmd.index("-f") + 1] == "/etc/pyproxy/pyproxy.cfg"


def test_container_command_serves_and_its_healthcheck_answers(tmp_path, reaper):
    """The image's CMD on the image's config (folders and ports moved): OPTIONS as tools/docker-smoke
    sends it is answered 200, the HEALTHCHECK command exits 0, and SIGTERM stops it cleanly."""
    port = free_port(span=2)
    cfg = container_config(tmp_path, port)
    cmd = command()
    assert cmd[0] == "/usr/local/bin/pyproxy"
    argv = [*PYPROXY, *cmd[1:]]
    argv[argv.index("-f") + 1] = str(cfg)
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proxy = reaper.popen(argv, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)

    def waited(what, check, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proxy.poll() is None, f"pyproxy exited with {proxy.returncode}\n{log.read_text()}"
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"{what} within {timeout} s\n{log.read_text()}")

    waited("no 200 to OPTIONS", lambda: udp_options(port, timeout=0.5, tries=2) == 200)
    smoke = SMOKE.read_text()
    start = smoke.index("\n", smoke.index("<<'PY'")) + 1
    client = smoke[start:smoke.index("\nPY\n", start)]
    done = run(["python3", "-", str(port)], input=client, timeout=60)
    assert done.returncode == 0 and "SIP/2.0 200 OK" in done.stdout, done.stdout + done.stderr

    health = healthcheck()
    assert health[0] == "pyproxyctl"
    health = [*CTL, *(a.replace("/run/pyproxy", str(tmp_path / "run-pyproxy")) for a in health[1:])]
    waited("the HEALTHCHECK command did not succeed", lambda: run(health, timeout=30).returncode == 0)

    proxy.send_signal(signal.SIGTERM)
    try:
        assert proxy.wait(30) == 0, log.read_text()
    finally:
        stop_process(proxy)


def test_docker_smoke():
    """Build, run, health, OPTIONS, stop: only where a Docker daemon answers."""
    assert SMOKE.stat().st_mode & 0o111, "tools/docker-smoke must be executable"
    done = run([str(SMOKE)], timeout=1200)
    if done.returncode == 77:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout + done.stderr
