"""tls_method ranges and ciphers, against pyOpenSSL peers, Python's ssl and the openssl command."""

import socket
import ssl
import subprocess

import pytest

from pyproxy.config.tlsmethod import TLSVersion
from pyproxy.tls import DomainTable, peer_summary
from pyproxy.tls.context import legacy_version_unavailable

from .net import OneShotServer, handshake, peer_context

V = TLSVersion


def server(settings, tmp_path, **params):
    params.setdefault("tls_verify_client", False)
    return DomainTable.build(settings(**params), [], str(tmp_path)).default_server


@pytest.mark.parametrize("method, client_version, accepted", [
    ("SSLv23", V.TLSv1_1, False),
    ("SSLv23", V.TLSv1, False),
    ("SSLv23", V.TLSv1_2, True),
    ("SSLv23", V.TLSv1_3, True),
    ("TLSv1_3", V.TLSv1_2, False),
    ("TLSv1_3", V.TLSv1_3, True),
    ("TLSv1_2+", V.TLSv1_2, True),
    ("TLSv1_2+", V.TLSv1_3, True),
    ("TLSv1_2", V.TLSv1_3, False),
    ("TLSv1", V.TLSv1, True),            # this OpenSSL can still do it, at security level 0
    ("TLSv1_1", V.TLSv1_1, True),
    ("TLSv1-TLSv1_2", V.TLSv1_1, True),
    ("TLSv1", V.TLSv1_2, False),
])
def test_method_ranges(settings, tmp_path, pki, method, client_version, accepted):
    domain = server(settings, tmp_path, tls_method=method)
    hs = handshake(domain.context, peer_context(version=client_version, seclevel0=True))
    assert hs.ok is accepted, hs.error
    if accepted:
        assert peer_summary(hs.server)["version"] == {V.TLSv1: "TLSv1", V.TLSv1_1: "TLSv1.1",
                                                      V.TLSv1_2: "TLSv1.2", V.TLSv1_3: "TLSv1.3"}[client_version]


def test_this_openssl_still_negotiates_tls10_and_11():
    # the decision recorded in pyproxy.tls.context: allowed, at security level 0, after this probe
    assert legacy_version_unavailable(V.TLSv1) is None
    assert legacy_version_unavailable(V.TLSv1_1) is None


def test_missing_legacy_support_is_a_startup_error(settings, tmp_path, monkeypatch):
    from pyproxy.tls import TLSConfigError, context
    monkeypatch.setattr(context, "legacy_version_unavailable", lambda v: "a probe handshake failed: x")
    with pytest.raises(TLSConfigError) as e:
        server(settings, tmp_path, tls_method="TLSv1")
    assert "default server domain: tls_method TLSv1: this OpenSSL" in str(e.value)
    assert "cannot negotiate TLS 1.0" in str(e.value)


def test_default_ciphers_are_mozilla_intermediate(settings, tmp_path):
    hs = handshake(server(settings, tmp_path, tls_method="TLSv1_2").context, peer_context())
    assert hs.ok and peer_summary(hs.server)["cipher"] in (
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305")


def test_cipher_list_and_suites(settings, tmp_path):
    domain = server(settings, tmp_path, tls_method="TLSv1_2", tls_ciphers_list="ECDHE-ECDSA-CHACHA20-POLY1305")
    hs = handshake(domain.context, peer_context())
    assert hs.ok and hs.server.get_cipher_name() == "ECDHE-ECDSA-CHACHA20-POLY1305"
    domain = server(settings, tmp_path, tls_ciphersuites="TLS_CHACHA20_POLY1305_SHA256")
    hs = handshake(domain.context, peer_context())
    assert hs.ok and hs.server.get_cipher_name() == "TLS_CHACHA20_POLY1305_SHA256"


def test_null_ciphers_work_with_a_warning(settings, tmp_path):
    table = DomainTable.build(settings(tls_ciphers_list="NULL", tls_method="TLSv1_2", tls_verify_client=False),
                              [], str(tmp_path))
    assert any("without encryption" in w and "default server domain" in w for w in table.warnings)
    hs = handshake(table.default_server.context, peer_context(ciphers="eNULL:@SECLEVEL=0"))
    assert hs.ok and "NULL" in hs.server.get_cipher_name()


def test_compression_and_renegotiation_off(settings, tmp_path):
    from OpenSSL import SSL
    options = server(settings, tmp_path).context.set_options(0)
    assert options & SSL.OP_NO_COMPRESSION and options & SSL.OP_NO_RENEGOTIATION
    assert not options & SSL.OP_CIPHER_SERVER_PREFERENCE


# --- other implementations ----------------------------------------------------------------------

def python_client(port: int, pki, *, version=None, cert=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca.cert_path)
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    if cert:
        ctx.load_cert_chain(cert.cert_path, cert.key_path)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="atlanta.example.com") as tls:
            tls.sendall(b"ping")
            return tls.version(), tls.recv(4)


def test_python_ssl_client_with_certificate(settings, tmp_path, pki):
    srv = OneShotServer(server(settings, tmp_path, tls_verify_client=True).context)
    assert python_client(srv.port, pki, cert=pki.client) == ("TLSv1.3", b"pong")
    srv.join()
    assert srv.error is None and peer_summary(srv.conn)["subject_cn"] == "client.example.com"


def test_python_ssl_tls12_client_refused_by_tls13_domain(settings, tmp_path, pki):
    srv = OneShotServer(server(settings, tmp_path, tls_method="TLSv1_3").context)
    with pytest.raises(ssl.SSLError):
        python_client(srv.port, pki, version=ssl.TLSVersion.TLSv1_2)
    assert srv.join().error is not None




@pytest.mark.parametrize("flag, accepted", [("-tls1_2", True), ("-tls1_3", True), ("-tls1_1", False)])
def test_openssl_s_client(settings, tmp_path, pki, flag, accepted):
    srv = OneShotServer(server(settings, tmp_path).context)
    run = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", flag,
                          "-CAfile", pki.ca.cert_path, "-verify_return_error", "-servername", "atlanta.example.com",
                          "-cipher", "DEFAULT:@SECLEVEL=0"],
                         input=b"ping\n", capture_output=True, timeout=20)
    srv.join()
    assert (srv.error is None) is accepted, (srv.error, run.stdout[-500:], run.stderr[-500:])
    if accepted:
        assert b"Verify return code: 0 (ok)" in run.stdout


def test_client_domain_against_openssl_s_server(settings, tmp_path, pki):
    from OpenSSL import SSL
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", pki.biloxi.cert_path,
                             "-key", pki.biloxi.key_path, "-naccept", "1", "-quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        domain = DomainTable.build(settings(), [], str(tmp_path)).client_domain(None, "127.0.0.1", port)
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                import time
                time.sleep(0.05)
        sock.settimeout(None)
        conn = SSL.Connection(domain.context, sock)
        conn.set_connect_state()
        conn.set_tlsext_host_name(b"biloxi.example.com")
        conn.do_handshake()
        summary = peer_summary(conn)
        assert summary["verified"] and summary["san_uri"] == ["sip:biloxi.example.com"]
        conn.shutdown()
        sock.close()
    finally:
        proc.kill()
        proc.wait()
