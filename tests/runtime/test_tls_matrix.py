"""The verification matrix of the TLS manual's section 1.5.4, each cell against a running pyproxy,
with real peers (Python's ssl, openssl s_client) on 127.0.0.1.

Server side (a client connects to pyproxy's listen=tls: socket):
  tls_verify_client=1, tls_require_client_certificate=0: no certificate and a trusted one are
  accepted; an untrusted one (another CA) and an expired one (the trusted CA) are refused.
  tls_verify_client=1, tls_require_client_certificate=1: no certificate and an untrusted one are
  refused; a trusted one is accepted over TLS 1.2 too (test_tls.py covers TLS 1.3).
  tls_verify_client=0: no certificate is even asked for, so an untrusted one gets in.
A refusal must be a refusal, not an accepted-then-silent connection: the client's handshake fails
(TLS 1.2) or the connection ends before any SIP reply (TLS 1.3, where the client finishes first),
and the proxy logs why (OpenSSL's reason) and who (the certificate's subject).

Client side (a UDP request for sips:bob@127.0.0.1:PORT goes out over TLS to a server the test runs):
  tls_verify_server=1: an expired server certificate is refused before anything is sent and the
  sender gets 477; a valid one for 127.0.0.1 gets the request (control).
  tls_verify_server=0: an untrusted server gets the request.
  The seed's old spelling tls_verify=on/off (Example 1-14) does the same, on both sides.

And tls_port_no: the port of a listen=tls: entry written without one.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyproxy.certs import load_ca, make_user_cert

from ._harness import LOOP, free_port, options_request, read_tcp_message, status_of, udp_socket
from .test_tls import client_context, tls_options, tls_server, tls_settings

# the proxy logs at most one "closing ... connection" line per second and worker
LOG_RATE_LIMIT = 1.1


# ------------------------------------------------------------------ certificates

def issue_cert(folder: Path, ca_dir: Path, subject: list[tuple], *, dns=(), uris=(), ips=(),
               expired: bool = False) -> Path:
    """A key and certificate signed by the CA in `ca_dir`, written as `folder`/cert.pem and
    privkey.pem (the layout of pyproxyctl tls userCERT). `subject`: [(NameOID, value), ...] in
    order; `expired`: valid from 30 days ago to yesterday. Returns `folder`."""
    ca_cert, ca_key = load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = ((now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
                             if expired else (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30)))
    sans = ([x509.DNSName(d) for d in dns] + [x509.UniformResourceIdentifier(u) for u in uris]
            + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips])
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in subject]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    folder.mkdir(parents=True)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile = folder / "privkey.pem"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return folder


@pytest.fixture(scope="module")
def certs(pki, tmp_path_factory):
    """Certificates the pki fixture lacks: a client from the untrusted "evil" CA, and expired
    ones (client and 127.0.0.1 server) from the trusted CA. Each a folder usable wherever the pki
    fixture's names are (client_context, tls_server: an absolute folder replaces pki/NAME)."""
    d = tmp_path_factory.mktemp("matrix-certs")
    make_user_cert("mallory.example.com", d / "mallory", ca_dir=pki / "evil")
    return {
        "untrusted": d / "mallory",
        "expired": issue_cert(d / "expired-client", pki / "ca", [(NameOID.COMMON_NAME, "expired.example.com")],
                              dns=["expired.example.com"], expired=True),
        "expired-server": issue_cert(d / "expired-server", pki / "ca", [(NameOID.COMMON_NAME, "localhost")],
                                     dns=["localhost"], ips=[LOOP], expired=True),
    }


# ------------------------------------------------------------------ server side

def tls_client(pki, cert=None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """client_context (trusts the pki CA) presenting `cert` (a pki name or a folder), pinned to one
    TLS `version` if given."""
    ctx = client_context(pki, cert=cert)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


@dataclass
class Attempt:
    outcome: str        # "handshake failed", "closed" (before any SIP reply), "answered", "silent"
    detail: object      # the exception, the bytes read, or the status
    local_port: int     # the client's port: the proxy's log names the peer by it


def attempt(port: int, ctx: ssl.SSLContext, timeout: float = 5.0) -> Attempt:
    """Connect, handshake, send an OPTIONS and read the answer, telling apart a handshake that
    fails, a connection closed before any SIP reply, an answer, and silence until `timeout`."""
    raw = socket.create_connection((LOOP, port), timeout=timeout)
    local_port = raw.getsockname()[1]
    try:
        s = ctx.wrap_socket(raw)
    except (ssl.SSLError, ConnectionError) as e:
        raw.close()
        return Attempt("handshake failed", e, local_port)
    deadline = time.monotonic() + timeout
    with s:
        try:
            s.sendall(options_request(port, f"matrix-{uuid.uuid4().hex}", "tls", local_port))
            reply = read_tcp_message(s, deadline, bytearray())
        except (ssl.SSLError, ConnectionError) as e:     # e.g. the alert telling why, TLS 1.3
            return Attempt("closed", e, local_port)
    if reply is not None:
        return Attempt("answered", status_of(reply), local_port)
    return Attempt("closed" if time.monotonic() < deadline else "silent", b"", local_port)


def log_line(proxy, needle: str, timeout: float = 3.0) -> str:
    """The first proxy log line containing `needle`, waiting for it up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = [ln for ln in proxy.log().splitlines() if needle in ln]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {needle!r} within {timeout} s\n" + proxy.tail())
        time.sleep(0.05)


def refusal_line(proxy, peer_port: int) -> str:
    """The proxy's line closing the TLS connection with 127.0.0.1:`peer_port` for a failed handshake."""
    return log_line(proxy, f"closing tls connection with {LOOP}:{peer_port}: TLS handshake failed: ")


# proxy pid -> when it last refused a handshake (its next refusal must come after the rate limit)
_last_refusal: dict[int, float] = {}


def after_rate_limit(proxy) -> None:
    """Wait until a new refusal by `proxy` is sure to be logged (the log is rate-limited)."""
    left = _last_refusal.get(proxy.pid, 0.0) + LOG_RATE_LIMIT - time.monotonic()
    if left > 0:
        time.sleep(left)


def assert_answered(port: int, ctx: ssl.SSLContext) -> None:
    got = attempt(port, ctx)
    assert (got.outcome, got.detail) == ("answered", 200), got


def assert_refused(proxy, port: int, ctx: ssl.SSLContext, *, expect_handshake_error: bool,
                   reason: str, subject_cn: str | None) -> None:
    """The client is refused (see `attempt`: never "answered" nor "silent") and the proxy's log
    names `reason` and, when the client presented a certificate, its CN."""
    after_rate_limit(proxy)
    got = attempt(port, ctx)
    _last_refusal[proxy.pid] = time.monotonic()
    if expect_handshake_error:
        assert got.outcome == "handshake failed", got
    else:
        assert got.outcome in ("handshake failed", "closed"), got
    line = refusal_line(proxy, got.local_port)
    assert reason in line, line
    if subject_cn is not None:
        assert f"CN={subject_cn}" in line, line


def s_client(port: int, *args: str) -> str:
    """openssl s_client with -msg (every handshake message, decrypted ones included), stdin closed."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"{LOOP}:{port}", "-msg", *args],
                       input=b"", capture_output=True, timeout=20)
    return (r.stdout + r.stderr).decode(errors="replace")


TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def test_verify_client_without_require_accepts_no_certificate_and_a_trusted_one(proxy_factory, pki):
    port = free_port()
    proxy_factory(children=1, extra=tls_settings(pki, port, verify_client=1, require=0))
    for version in (TLS12, TLS13):
        assert_answered(port, tls_client(pki, version=version))
        assert_answered(port, tls_client(pki, "client.example.com", version))
    # the proxy did ask: the client without a certificate was free not to give one
    assert "CertificateRequest" in s_client(port, "-tls1_3")


@pytest.mark.parametrize("cert, reason, cn", [
    ("untrusted", "unable to get local issuer certificate", "mallory.example.com"),
    ("expired", "certificate has expired", "expired.example.com"),
], ids=["untrusted", "expired"])
def test_verify_client_without_require_refuses_a_bad_certificate(proxy_factory, pki, certs, cert, reason, cn):
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port, verify_client=1, require=0))
    assert_refused(proxy, port, tls_client(pki, certs[cert], TLS12), expect_handshake_error=True,
                   reason=reason, subject_cn=cn)
    assert_refused(proxy, port, tls_client(pki, certs[cert], TLS13), expect_handshake_error=False,
                   reason=reason, subject_cn=cn)
    assert proxy.alive()


def test_require_client_certificate_refuses_none_and_an_untrusted_one(proxy_factory, pki, certs):
    """What test_tls.py::test_client_certificate_required leaves out: the refusal is the handshake's
    (TLS 1.2) and is logged with its reason, an untrusted certificate is refused too, and a trusted
    one gets in over TLS 1.2 as well."""
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port, verify_client=1, require=1))
    assert_answered(port, tls_client(pki, "client.example.com", TLS12))
    assert_refused(proxy, port, tls_client(pki, version=TLS12), expect_handshake_error=True,
                   reason="peer did not return a certificate", subject_cn=None)
    assert_refused(proxy, port, tls_client(pki, version=TLS13), expect_handshake_error=False,
                   reason="peer did not return a certificate", subject_cn=None)
    assert_refused(proxy, port, tls_client(pki, certs["untrusted"], TLS13), expect_handshake_error=False,
                   reason="unable to get local issuer certificate", subject_cn="mallory.example.com")


def test_verify_client_off_asks_for_no_certificate_and_lets_an_untrusted_one_in(proxy_factory, pki, certs):
    """tls_require_client_certificate=1 is set too: the seed uses it only with tls_verify_client=1."""
    port = free_port()
    proxy_factory(children=1, extra=tls_settings(pki, port, verify_client=0, require=1))
    for version in (TLS12, TLS13):
        assert_answered(port, tls_client(pki, certs["untrusted"], version))
    untrusted = certs["untrusted"]
    out = s_client(port, "-cert", str(untrusted / "cert.pem"), "-key", str(untrusted / "privkey.pem"))
    assert "ServerHello" in out and "CertificateRequest" not in out, out


# ------------------------------------------------------------------ client side

@dataclass
class Relay:
    server_port: int
    status: int | None      # what the UDP sender heard (None: nothing, when the server got the request)
    received: bytes         # the SIP bytes the TLS server got
    handshake_error: Exception | None   # why the server's handshake failed, if it did


def relay_to_tls_server(proxy, pki, cert, timeout: float = 5.0) -> Relay:
    """A UDP OPTIONS for sips:bob@127.0.0.1:PORT sent to the proxy; our TLS server on PORT
    (certificate `cert`, a pki name or folder) accepts the proxy's connection and reads one
    message. The sender's answer is waited for only when the server got nothing."""
    server_port = free_port()
    server_ctx, listener = tls_server(pki, cert, server_port)
    received, error, status = b"", None, None
    with listener, udp_socket(timeout) as u:
        u.sendto(options_request(proxy.port, f"relay-{uuid.uuid4().hex}", "udp", u.getsockname()[1],
                                 ruri=f"sips:bob@{LOOP}:{server_port}"), (LOOP, proxy.port))
        conn, _ = listener.accept()
        conn.settimeout(timeout)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                received = read_tcp_message(tls, time.monotonic() + timeout, bytearray()) or b""
        except (ssl.SSLError, OSError) as e:
            error = e
        if not received:
            try:
                status = status_of(u.recvfrom(65536)[0])
            except TimeoutError:
                pass
    return Relay(server_port, status, received, error)


def assert_delivered(relay: Relay) -> None:
    assert relay.received.startswith(b"OPTIONS sips:bob@"), relay
    assert re.search(rb"\r\nVia: SIP/2\.0/TLS ", relay.received), relay.received


def assert_refused_477(proxy, relay: Relay, reason: str, subject_cn: str) -> None:
    """Refused before anything was sent, the sender told 477 (not left waiting), the reason and the
    server certificate's subject logged."""
    assert relay.received == b"" and relay.status == 477, relay
    line = refusal_line(proxy, relay.server_port)
    _last_refusal[proxy.pid] = time.monotonic()
    assert reason in line and f"CN={subject_cn}" in line, line


def test_verify_server_refuses_an_expired_certificate_with_477(proxy_factory, pki, certs):
    proxy = proxy_factory(children=1, extra=tls_settings(pki, free_port(), more="tls_verify_server=1"))
    relay = relay_to_tls_server(proxy, pki, certs["expired-server"])
    assert_refused_477(proxy, relay, "certificate has expired", "localhost")


def test_verify_server_off_delivers_to_an_untrusted_server(proxy_factory, pki):
    proxy = proxy_factory(children=1, extra=tls_settings(pki, free_port(), more="tls_verify_server=0"))
    assert_delivered(relay_to_tls_server(proxy, pki, "impostor"))


def test_verify_server_on_delivers_to_a_valid_server(proxy_factory, pki):
    """The control of the two tests above: the same path with a certificate that verifies and names
    127.0.0.1."""
    proxy = proxy_factory(children=1, extra=tls_settings(pki, free_port(), more="tls_verify_server=1"))
    assert_delivered(relay_to_tls_server(proxy, pki, "localhost"))


def example_1_14(pki, port: int, verify: str) -> str:
    """The TLS lines of the seed's Example 1-14, with its old spelling tls_verify=."""
    return (f"disable_tls=no\nlisten=tls:{LOOP}:{port}\n"
            f'tls_certificate="{pki}/localhost/cert.pem"\ntls_private_key="{pki}/localhost/privkey.pem"\n'
            f'tls_ca_list="{pki}/ca/cacert.pem"\ntls_verify={verify}\ntls_require_client_certificate=on\n')


def test_old_spelling_tls_verify_on_verifies_both_sides(proxy_factory, pki):
    port = free_port()
    proxy = proxy_factory(children=1, extra=example_1_14(pki, port, "on"))
    assert_refused_477(proxy, relay_to_tls_server(proxy, pki, "impostor"), "unable to get local issuer certificate",
                       "localhost")
    # server side: tls_verify_client=on, and with tls_require_client_certificate=on none is refused
    assert_refused(proxy, port, tls_client(pki, version=TLS12), expect_handshake_error=True,
                   reason="peer did not return a certificate", subject_cn=None)


def test_old_spelling_tls_verify_off_verifies_neither_side(proxy_factory, pki):
    port = free_port()
    proxy = proxy_factory(children=1, extra=example_1_14(pki, port, "off"))
    assert_delivered(relay_to_tls_server(proxy, pki, "impostor"))
    # server side: tls_verify_client=off, so tls_require_client_certificate=on does not apply
    assert_answered(port, tls_client(pki, version=TLS12))


# ------------------------------------------------------------------ tls_port_no

def test_tls_port_no_is_the_port_of_a_tls_listen_without_one(proxy_factory, pki):
    port = free_port()
    extra = tls_settings(pki, port).replace(f"listen=tls:{LOOP}:{port}\n", f"listen=tls:{LOOP}\n")
    assert f"listen=tls:{LOOP}\n" in extra
    proxy_factory(children=1, extra=extra + f"tls_port_no={port}\n")
    assert tls_options(port, client_context(pki)) == (200, "localhost")
