"""A real phone: two headless baresip instances (Debian's baresip, no sound card: a 440 Hz sine as
the microphone, a file as the speaker, ctrl_tcp to drive them) against the shipped
etc/pyproxy.cfg. alice registers over TLS and bob over UDP, both with digest authentication;
bob calls alice, who answers by herself; the call is established and hung up.

baresip is installed by .ci/run (apt-get install baresip); without it the test fails, saying so.
"""

import json
import re
import shutil
import socket
import subprocess
import sys
import time


from ._harness import ROOT, Proxy, Reaper, free_port


CONFIG = """\
poll_method		epoll
sip_listen		127.0.0.1:{sip}
sip_cafile		{cafile}
net_interface		127.0.0.1
audio_player		aufile,{folder}/played.wav
audio_source		ausine,440
audio_alert		aufile,{folder}/alert.wav
rtp_ports		{rtp}-{rtp_end}
module_path		/usr/lib/baresip/modules
module			opus.so
module			ausine.so
module			aufile.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{ctrl}
"""


class Baresip:
    def __init__(self, reaper: Reaper, folder, account: str, cafile):
        folder.mkdir()
        self.folder, self.ctrl_port = folder, free_port()
        sip = free_port(span=2)         # baresip listens on UDP and TCP there, TLS one above
        rtp = free_port(span=10)
        (folder / "config").write_text(CONFIG.format(sip=sip, cafile=cafile, folder=folder, rtp=rtp,
                                                     rtp_end=rtp + 9, ctrl=self.ctrl_port))
        (folder / "accounts").write_text(account + "\n")
        self.log_path = folder / "baresip.log"
        with open(self.log_path, "wb") as log:
            self.popen = reaper.popen(["baresip", "-4", "-f", str(folder)], stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        self.ctrl = None
        self.buf = b""

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def wait_log(self, pattern: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log()):
            assert self.popen.poll() is None, f"baresip exited\n{self.log()}"
            assert time.monotonic() < deadline, f"baresip never logged {pattern!r}\n{self.log()}"
            time.sleep(0.1)

    def connect(self) -> None:
        deadline = time.monotonic() + 10
        while self.ctrl is None:
            try:
                self.ctrl = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.1)

    def command(self, command: str, params: str = "") -> None:
        data = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.ctrl.sendall(str(len(data)).encode() + b":" + data + b",")

    def wait_event(self, kind: str, timeout: float = 15.0) -> None:
        """Read ctrl_tcp's netstrings until an event of this type."""
        deadline = time.monotonic() + timeout
        while True:
            while b":" in self.buf:
                size, rest = self.buf.split(b":", 1)
                if len(rest) < int(size) + 1:
                    break
                message, self.buf = json.loads(rest[:int(size)]), rest[int(size) + 1:]
                if message.get("event") and message.get("type") == kind:
                    return
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind} event\n{self.log()}"
            self.ctrl.settimeout(left)
            try:
                chunk = self.ctrl.recv(65536)
            except TimeoutError:
                continue
            assert chunk, f"ctrl_tcp closed\n{self.log()}"
            self.buf += chunk


def test_baresip_over_tls_and_udp_register_and_call_through_the_shipped_config(tmp_path):
    assert shutil.which("baresip"), "baresip is not installed: apt-get install baresip (.ci/run does)"
    reaper = Reaper()
    try:
        port, tls_port = free_port(), free_port()
        etc = tmp_path / "etc"
        etc.mkdir()
        text = (ROOT / "etc" / "pyproxy.cfg").read_text().replace(":5060", f":{port}").replace(":5061", f":{tls_port}")
        text = text.replace("/tmp/pyproxy_mi.sock", str(tmp_path / "mi.sock"))
        cfg = etc / "pyproxy.cfg"
        cfg.write_text(text)
        with open(tmp_path / "proxy.log", "wb") as log:
            popen = reaper.popen([sys.executable, "-m", "pyproxy", "-f", str(cfg), "-D", "-E"], cwd=tmp_path,
                                 stdout=log, stderr=subprocess.STDOUT)
        proxy = Proxy(popen, port, tmp_path / "proxy.log", 2)
        proxy.wait_ready()
        for user in ("alice", "bob"):
            done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "-f", str(cfg), "add", user, f"{user}-pw"],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
        cafile = etc / "tls" / "calist.pem"         # made by tls_autogenerate at first start
        alice = Baresip(reaper, tmp_path / "alice", f'<sip:alice@localhost;transport=tls>;auth_pass=alice-pw;'
                        f'outbound="sip:127.0.0.1:{tls_port};transport=tls";regint=600;answermode=auto', cafile)
        bob = Baresip(reaper, tmp_path / "bob", f'<sip:bob@localhost>;auth_pass=bob-pw;'
                      f'outbound="sip:127.0.0.1:{port}";regint=600', cafile)
        alice.wait_log(r"alice@localhost: \{0/TLS/v4\} 200 OK")
        bob.wait_log(r"bob@localhost: \{0/UDP/v4\} 200 OK")
        alice.connect()
        bob.connect()
        bob.command("dial", "sip:alice@localhost")
        bob.wait_event("CALL_ESTABLISHED")
        alice.wait_event("CALL_ESTABLISHED")
        bob.command("hangup")
        bob.wait_event("CALL_CLOSED")
        alice.wait_event("CALL_CLOSED")
        assert proxy.alive(), proxy.tail()
        assert not [ln for ln in proxy.log().splitlines() if " ERROR: " in ln or "CRITICAL" in ln], proxy.tail()
    finally:
        reaper.stop_all()
