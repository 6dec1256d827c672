"""The shipped etc/pyproxy.cfg, started as README.rst says, serves OPTIONS on 127.0.0.1:5060 over
UDP and TCP, and over TLS on 127.0.0.1:5061 with the certificate it generates at first start.

The command is README.rst's literal block that runs `pyproxy -f etc/pyproxy.cfg` without -c (the
part after the last `&&`, today `pyproxy -f etc/pyproxy.cfg -D -E`), run with the installed
`pyproxy` script from a temporary folder holding a copy of etc/pyproxy.cfg, as a fresh clone has
it: the certificate is generated there (etc/tls/), never in the repository's etc/. Should
README.rst lose that command, the tests fall back to `pyproxy -f etc/pyproxy.cfg -D -E` and say so
in their output. One proxy serves every test of this module; the last one stops it."""

import os
import re
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import sys

import pytest
from ._harness import LOOP, ROOT, Proxy, Reaper, port_in_use, status_of
from ._phones import Phone, challenges, credentials
from .test_tls import tls_options

FALLBACK = "pyproxy -f etc/pyproxy.cfg -D -E"
PORT, TLS_PORT = 5060, 5061


def readme_run_command() -> str | None:
    readme = (ROOT / "README.rst").read_text()
    for block in re.findall(r"::\n\n((?:(?:    .*)?\n)+)", readme):
        for line in block.splitlines():
            for part in reversed(line.split("&&")):
                words = shlex.split(part.strip()) if part.strip() else []
                if words[:1] == ["pyproxy"] and "-c" not in words and "etc/pyproxy.cfg" in words:
                    return part.strip()
    return None


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """(the running Proxy, the folder it runs in, the command) for README's run command."""
    command = readme_run_command()
    if command is None:
        print(f"README.rst has no run command for etc/pyproxy.cfg yet; using: {FALLBACK}")
        command = FALLBACK
    busy = [f"{kind} {port}" for kind, k, port in (("UDP", socket.SOCK_DGRAM, PORT), ("TCP", socket.SOCK_STREAM, PORT),
                                                   ("TCP", socket.SOCK_STREAM, TLS_PORT)) if port_in_use(port, k)]
    if busy:
        pytest.fail(f"127.0.0.1 {', '.join(busy)} already in use on this machine: stop whatever listens there "
                    f"(ss -lntup | grep 506); the shipped config listens on {PORT} and {TLS_PORT}")
    words = shlex.split(command)
    if "-D" not in words:
        pytest.fail(f"README.rst's run command `{command}` does not stay in the foreground (-D): a daemon "
                    f"would escape this test's clean-up, so it is not started")
    folder = tmp_path_factory.mktemp("shipped")
    (folder / "etc").mkdir()
    shutil.copy(ROOT / "etc" / "pyproxy.cfg", folder / "etc" / "pyproxy.cfg")
    argv = ([shutil.which("pyproxy")] if shutil.which("pyproxy") else [sys.executable, "-m", "pyproxy"]) + words[1:]
    log_path = folder / "proxy.log"
    reaper = Reaper()
    try:
        with open(log_path, "wb") as log:
            popen = reaper.popen(argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        proxy = Proxy(popen, PORT, log_path, children=2)
        proxy.wait_ready(timeout=10)
        yield proxy, folder, command
    finally:
        reaper.stop_all()


def test_shipped_config_serves_options_on_5060(shipped):
    proxy, _, _ = shipped
    assert proxy.answers() == (200, 200)


def test_shipped_config_serves_tls_on_5061_with_its_generated_certificate(shipped):
    """At first start the config's tls_autogenerate made etc/tls/cert.pem and privkey.pem beside it
    (the private keys, its own and the throw-away CA's, mode 0600), said so in a warning naming
    them, and serves that certificate on 5061: a
    Python ssl client trusting the generated calist.pem, checking the name localhost, gets OPTIONS
    answered 200."""
    proxy, folder, _ = shipped
    tls = folder / "etc" / "tls"
    cert, key = tls / "cert.pem", tls / "privkey.pem"
    assert cert.is_file() and key.is_file(), sorted(p.name for p in folder.rglob("*"))
    keys = {str(p.relative_to(tls)): stat.S_IMODE(os.stat(p).st_mode) for p in tls.rglob("*key*.pem")}
    assert len(keys) == 2 and set(keys.values()) == {0o600}, keys       # privkey.pem and the CA's
    warnings = [ln for ln in proxy.log().splitlines() if " WARNING: " in ln and "tls_autogenerate" in ln]
    assert len(warnings) == 1, proxy.tail()
    named = {(folder / p).resolve() for p in warnings[0].rsplit("): ", 1)[-1].split(", ")}
    assert {cert, key} <= named, warnings[0]
    ctx = ssl.create_default_context(cafile=str(tls / "calist.pem"))
    assert tls_options(TLS_PORT, ctx, "localhost") == (200, "localhost")
    served = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((LOOP, TLS_PORT), timeout=5))
    assert served == ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_phones_register_with_their_password_and_call_each_other(shipped):
    """The database was made at first start (etc/pyproxy.db); pyproxyctl adds users to it; alice
    registers over TLS, bob over UDP, both with digest (qop=auth), and bob's call reaches alice
    over her TLS connection."""
    proxy, folder, _ = shipped
    cfg = folder / "etc" / "pyproxy.cfg"
    assert (folder / "etc" / "pyproxy.db").is_file()
    for user in ("alice", "bob"):
        done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "-f", str(cfg), "add", user, f"{user}-pw"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and f"{user}@localhost added" in done.stdout, done.stderr
    alice, bob = Phone(TLS_PORT, "tls", "alice", "localhost"), Phone(PORT, "udp", "bob", "localhost")
    try:
        for phone, port in ((alice, TLS_PORT), (bob, PORT)):
            first = phone.register(expires=600)
            assert status_of(first) == 401, first
            auth = credentials(challenges(first)[0], "REGISTER", "sip:localhost", phone.user, f"{phone.user}-pw")
            assert status_of(phone.register(expires=600, headers=auth)) == 200
        bob.send(bob.request("INVITE", "sip:alice@localhost", to="sip:alice@localhost", call_id="shipped-1"))
        challenge = bob.final()
        assert status_of(challenge) == 407
        auth = credentials(challenges(challenge, "Proxy-Authenticate")[0], "INVITE", "sip:alice@localhost",
                           "bob", "bob-pw", header="Proxy-Authorization")
        bob.send(bob.request("INVITE", "sip:alice@localhost", auth, to="sip:alice@localhost", call_id="shipped-1"))
        invite = alice.expect_request("INVITE")
        assert invite is not None, proxy.tail()
        alice.answer(invite, 486, "Busy Here")
        assert status_of(bob.final()) == 486
    finally:
        alice.close()
        bob.close()


def test_shipped_config_stops_with_status_0_on_sigterm(shipped):
    """Runs last: it stops the module's proxy."""
    proxy, _, command = shipped
    assert proxy.stop() == 0, f"`{command}` did not exit 0 on SIGTERM\n{proxy.tail()}"
