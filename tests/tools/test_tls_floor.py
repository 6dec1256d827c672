"""tools/tls-floor, the TLS handshake floor measured beside the proxies: a full handshake, an
OPTIONS answered 200 with its Via, From, To (tagged), Call-ID and CSeq, connection after connection,
with pyOpenSSL and with Python's ssl module."""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

FLOOR = Path(__file__).resolve().parents[2] / "tools" / "tls-floor"


def self_signed(folder: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "floor.pem", folder / "floor.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def options_over_tls(port: int, n: int, deadline: float) -> bytes:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    while True:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except ConnectionRefusedError:      # (until the floor listens)
            assert time.monotonic() < deadline, "the floor never listened"
            time.sleep(0.05)
    with client.wrap_socket(raw) as tls:
        tls.sendall((f"OPTIONS sip:127.0.0.1:{port};transport=tls SIP/2.0\r\n"
                     f"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-{n}\r\nFrom: <sip:b@127.0.0.1>;tag={n}\r\n"
                     f"To: <sip:127.0.0.1>\r\nCall-ID: floor-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                     f"Content-Length: 0\r\n\r\n").encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = tls.recv(65536)
            assert chunk, "the floor closed without an answer"
            reply += chunk
        return reply


@pytest.mark.parametrize("library", ["pyopenssl", "stdlib"])
def test_the_floor_answers_options_over_tls(tmp_path, library):
    cert, key = self_signed(tmp_path)
    port = free_tcp_port()
    floor = subprocess.Popen([sys.executable, str(FLOOR), cert, key, "--port", str(port),
                              *(["--stdlib"] if library == "stdlib" else [])])
    try:
        deadline = time.monotonic() + 30
        for n in range(3):      # connection after connection
            head = options_over_tls(port, n, deadline).split(b"\r\n")
            assert head[0] == b"SIP/2.0 200 OK"
            assert f"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-{n}".encode() in head
            assert any(line.startswith(b"To: <sip:127.0.0.1>;tag=") for line in head)
            assert f"Call-ID: floor-{n}".encode() in head and b"CSeq: 1 OPTIONS" in head
        assert floor.poll() is None
    finally:
        floor.kill()
        floor.wait()
