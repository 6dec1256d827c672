"""What the running proxy logs about TLS peers: every verification refusal in one line naming the
peer's address, the certificate's subject and issuer and OpenSSL's reason, on both sides (a client
certificate we refuse, a server we refuse, RFC 5922 included); and tls_keylog_file, whose lines
must be the very secrets the peer (Python's ssl, writing its own key log) used."""

import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import stat
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyproxy.certs import load_ca, make_root_ca, make_user_cert
from ._harness import free_port, options_request, read_tcp_message, status_of, udp_socket
from .test_tls import LOOP, accept_request, send_sips, tls_settings

ROOT_CA = "/CN=pyproxy root CA"        # the subject of the conftest pki's CA
DEADLINE = 30.0


@pytest.fixture(scope="module")
def odd_certs(pki, tmp_path_factory):
    """An expired certificate from the trusted CA, and one from a CA nobody trusts; both name
    127.0.0.1, so that nothing but the date or the issuer is wrong with them."""
    d = tmp_path_factory.mktemp("odd")
    make_root_ca(d / "rogue", common_name="rogue CA")
    make_user_cert("rogue.example.com", d / "rogue.example.com", ca_dir=d / "rogue", ip_addresses=[LOOP])
    ca_cert, ca_key = load_ca(pki / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired.example.com")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("expired.example.com"),
                                                        x509.IPAddress(ipaddress.ip_address(LOOP))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "expired.example.com").mkdir()
    (d / "expired.example.com" / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile = d / "expired.example.com" / "privkey.pem"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return d


def wait_for_line(proxy, *parts: str, timeout: float = 2.0) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        for line in proxy.log().splitlines():
            if all(p in line for p in parts):
                return line
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def refused_client(port: int, folder: Path, ca: Path) -> int:
    """A TLS client with the certificate in ``folder`` sends OPTIONS; returns its port. TLS 1.3
    clients hear of the refusal only when they read."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(folder / "cert.pem"), str(folder / "privkey.pem"))
    raw = socket.create_connection((LOOP, port), timeout=10)
    local_port = raw.getsockname()[1]
    with contextlib.suppress(ssl.SSLError, OSError), ctx.wrap_socket(raw) as tls:
        tls.sendall(options_request(port, f"refused-{uuid.uuid4().hex}", "tls", local_port))
        read_tcp_message(tls, time.monotonic() + 10, bytearray())
    raw.close()
    return local_port


def refusal_line(proxy, attempt, *parts: str) -> str:
    """Refusals are logged at most once a second per worker (a flood of them must not fill the
    log): try again until the line of one of the attempts shows."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        local_port = attempt()
        line = wait_for_line(proxy, f"closing tls connection with {LOOP}:{local_port}: ", *parts)
        if line:
            return line
    raise AssertionError(f"no refusal line with {parts}\n" + proxy.tail())


@pytest.mark.parametrize("cert, reason, subject, issuer", [
    ("expired.example.com", "certificate has expired (depth 0)", "/CN=expired.example.com", ROOT_CA),
    ("rogue.example.com", "unable to get local issuer certificate (depth 0)", "/CN=rogue.example.com",
     "/CN=rogue CA"),
], ids=["expired", "unknown CA"])
def test_a_refused_client_certificate_is_named(proxy_factory, pki, odd_certs, cert, reason, subject, issuer):
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port, verify_client=1, require=1))
    line = refusal_line(proxy, lambda: refused_client(port, odd_certs / cert, pki / "ca" / "cacert.pem"),
                        "TLS handshake failed: certificate verify failed: ")
    assert f": {reason}; certificate subject {subject}, issuer {issuer}" in line, line
    assert " NOTICE: " in line, line        # shown at the default debug=2


@pytest.mark.parametrize("where, cert, reason, subject, issuer", [
    ("odd", "expired.example.com", "TLS handshake failed: certificate verify failed: certificate has expired "
     "(depth 0)", "/CN=expired.example.com", ROOT_CA),
    ("odd", "rogue.example.com", "TLS handshake failed: certificate verify failed: unable to get local issuer "
     "certificate (depth 0)", "/CN=rogue.example.com", "/CN=rogue CA"),
    ("pki", "biloxi.example.com", f"TLS server certificate does not match {LOOP} (RFC 5922)",
     "/CN=biloxi.example.com", ROOT_CA),
], ids=["expired", "unknown CA", "wrong host"])
def test_a_refused_server_certificate_is_named(proxy_factory, pki, odd_certs, where, cert, reason, subject,
                                               issuer):
    """The proxy's own connection to a server it refuses: the request is answered 477 and the
    refusal (the first of this proxy: nothing holds it back) names the server's certificate."""
    port, server_port = free_port(), free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port))
    folder = (odd_certs if where == "odd" else pki) / cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(folder / "cert.pem"), str(folder / "privkey.pem"))
    with socket.create_server((LOOP, server_port)) as listener, udp_socket(10.0) as u:
        listener.settimeout(10)
        send_sips(proxy, u, server_port, f"refused-server-{uuid.uuid4().hex}")
        assert accept_request(server_ctx, listener) is None       # nothing reaches that server
        assert status_of(u.recvfrom(65536)[0]) == 477
    line = wait_for_line(proxy, f"closing tls connection with {LOOP}:{server_port}: ", timeout=DEADLINE)
    assert line and f": {reason}; certificate subject {subject}, issuer {issuer}" in line, proxy.tail()


# --- tls_keylog_file ------------------------------------------------------------------------------

def secrets(path: Path) -> set[str]:
    return {line for line in path.read_text().splitlines() if line and not line.startswith("#")}


def test_the_key_log_holds_the_secrets_of_both_sides(proxy_factory, pki, tmp_path):
    port, server_port = free_port(), free_port()
    proxy = proxy_factory(children=2, extra=tls_settings(pki, port, more='tls_keylog_file="keys.log"'))
    keys = proxy.log_path.parent / "keys.log"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    assert wait_for_line(proxy, "WARNING: TLS: tls_keylog_file", str(keys), "decrypt"), proxy.tail()
    seen = {}
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):      # incoming, as a phone would
        ctx = ssl.create_default_context(cafile=str(pki / "ca" / "cacert.pem"))
        ctx.check_hostname = False
        ctx.maximum_version = version
        ctx.keylog_filename = str(tmp_path / f"client-{version.name}.log")
        with socket.create_connection((LOOP, port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(options_request(port, f"keylog-{uuid.uuid4().hex}", "tls", tls.getsockname()[1]))
            assert status_of(read_tcp_message(tls, time.monotonic() + 10, bytearray())) == 200
        seen[version] = secrets(tmp_path / f"client-{version.name}.log")
    # outgoing: the proxy is the client of our server
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(pki / "localhost" / "cert.pem"), str(pki / "localhost" / "privkey.pem"))
    server_ctx.keylog_filename = str(tmp_path / "server.log")
    with socket.create_server((LOOP, server_port)) as listener, udp_socket(10.0) as u:
        listener.settimeout(10)
        send_sips(proxy, u, server_port, f"keylog-out-{uuid.uuid4().hex}")
        assert accept_request(server_ctx, listener) is not None
    seen["outgoing"] = secrets(tmp_path / "server.log")
    logged = secrets(keys)
    labels = {what: {line.split()[0] for line in lines} for what, lines in seen.items()}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0"} <= labels[ssl.TLSVersion.TLSv1_3]
    assert labels[ssl.TLSVersion.TLSv1_2] == {"CLIENT_RANDOM"}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0"} <= labels["outgoing"]
    for what, lines in seen.items():
        assert lines <= logged, (what, lines - logged)
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600


def test_no_key_log_by_default(proxy_factory, pki):
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port))
    ctx = ssl.create_default_context(cafile=str(pki / "ca" / "cacert.pem"))
    ctx.check_hostname = False
    with socket.create_connection((LOOP, port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        tls.sendall(options_request(port, f"no-keylog-{uuid.uuid4().hex}", "tls", tls.getsockname()[1]))
        assert status_of(read_tcp_message(tls, time.monotonic() + 10, bytearray())) == 200
    assert "tls_keylog_file" not in proxy.log()
    for path in proxy.log_path.parent.rglob("*"):
        assert not path.is_file() or b"TRAFFIC_SECRET" not in path.read_bytes(), path
