"""tools/register-floor, the registrar floor tools/bench measures beside pyproxy: a REGISTER gets
the 200 OK a registrar gives."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

FLOOR = Path(__file__).resolve().parents[2] / "tools" / "register-floor"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_floor_answers_a_register():
    port = free_udp_port()
    floor = subprocess.Popen([sys.executable, str(FLOOR), str(port)])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind(("127.0.0.1", 0))
            mine = phone.getsockname()[1]
            register = (f"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{mine};branch=z9hG4bK-1;rport\r\n"
                        f"From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: c1\r\n"
                        f"CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:{mine}>\r\nExpires: 600\r\n"
                        f"Content-Length: 0\r\n\r\n").encode()
            phone.settimeout(0.5)
            deadline = time.monotonic() + 30
            while True:     # (until the floor has bound its socket)
                phone.sendto(register, ("127.0.0.1", port))
                try:
                    reply = phone.recv(65536)
                    break
                except socket.timeout:
                    assert floor.poll() is None and time.monotonic() < deadline, "no answer from the floor"
        head = reply.split(b"\r\n")
        assert head[0] == b"SIP/2.0 200 OK"
        assert f"Via: SIP/2.0/UDP 127.0.0.1:{mine};branch=z9hG4bK-1;rport={mine}".encode() in head
        assert any(line.startswith(b"To: <sip:alice@127.0.0.1>;tag=") for line in head)
        assert f"Contact: <sip:alice@127.0.0.1:{mine}>;expires=600".encode() in head
        assert b"Call-ID: c1" in head and b"CSeq: 1 REGISTER" in head
    finally:
        floor.kill()
        floor.wait()
