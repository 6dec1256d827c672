"""pyproxy.certs called directly: the certificates' contents, the library's refusals, and
autogenerate (tls_autogenerate=yes), judged by cryptography, openssl and real handshakes."""

import datetime
import ipaddress
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pyproxy.certs import CertError, autogenerate, make_root_ca, make_user_cert

from ._tls import handshake, openssl


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(root):
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- make_root_ca / make_user_cert -----------------------------------------------------------

def test_root_ca_extensions(tmp_path):
    cert_path, key_path = make_root_ca(tmp_path / "ca", common_name="Test CA", days=10)
    assert (cert_path, key_path) == (tmp_path / "ca/cacert.pem", tmp_path / "ca/private/cakey.pem")
    cert = _load(cert_path)
    assert cert.subject == cert.issuer
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    _ext(cert, x509.SubjectKeyIdentifier)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=10) <= lifetime < datetime.timedelta(days=10, hours=1)


def test_user_cert_extensions(tmp_path, ca_dir):
    paths = make_user_cert("proxy.example.test", tmp_path / "u", ca_dir=ca_dir,
                           ip_addresses=["192.0.2.1"])
    assert paths == {"cert": tmp_path / "u/cert.pem", "key": tmp_path / "u/privkey.pem",
                     "calist": tmp_path / "u/calist.pem"}
    cert, ca = _load(paths["cert"]), _load(ca_dir / "cacert.pem")
    assert cert.subject.rfc4514_string() == "CN=proxy.example.test"
    assert cert.issuer == ca.subject
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["proxy.example.test"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["sip:proxy.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.1")]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH,
                                                             ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not _ext(cert, x509.BasicConstraints).value.ca
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == _ext(ca, x509.SubjectKeyIdentifier).value.digest
    assert _mode(paths["key"]) == 0o600


def test_user_cert_never_outlives_its_ca(tmp_path):
    make_root_ca(tmp_path / "ca", days=5)
    paths = make_user_cert("a.example.test", tmp_path / "u", ca_dir=tmp_path / "ca", days=825)
    assert _load(paths["cert"]).not_valid_after_utc == \
        _load(tmp_path / "ca/cacert.pem").not_valid_after_utc


def test_rsa_keys_handshake(tmp_path):
    make_root_ca(tmp_path / "ca", key_type="rsa")
    paths = make_user_cert("rsa.example.test", tmp_path / "u", ca_dir=tmp_path / "ca",
                           key_type="rsa")
    assert isinstance(_load(paths["cert"]).public_key(), rsa.RSAPublicKey)
    handshake(paths["cert"], paths["key"], paths["calist"], server_hostname="rsa.example.test")


def test_encrypted_ca_key(tmp_path):
    make_root_ca(tmp_path / "ca", passphrase=b"s3cret")
    key = tmp_path / "ca/private/cakey.pem"
    with pytest.raises(CertError, match=f"^{key}: wrong passphrase for the key$"):
        make_user_cert("a.example.test", tmp_path / "u", ca_dir=tmp_path / "ca",
                       ca_passphrase=b"wrong")
    with pytest.raises(CertError, match=f"^{key}: the key is encrypted; a passphrase is needed$"):
        make_user_cert("a.example.test", tmp_path / "u", ca_dir=tmp_path / "ca")
    make_user_cert("a.example.test", tmp_path / "u", ca_dir=tmp_path / "ca",
                   ca_passphrase=b"s3cret")


def test_ca_key_must_match_its_certificate(tmp_path):
    make_root_ca(tmp_path / "a")
    make_root_ca(tmp_path / "b")
    (tmp_path / "b/private/cakey.pem").unlink()
    (tmp_path / "b/private/cakey.pem").write_bytes((tmp_path / "a/private/cakey.pem").read_bytes())
    with pytest.raises(CertError, match="cakey.pem: does not match the certificate .*cacert.pem"):
        make_user_cert("a.example.test", tmp_path / "u", ca_dir=tmp_path / "b")


def test_a_user_certificate_is_not_a_ca(tmp_path, ca_dir):
    make_user_cert("a.example.test", tmp_path / "u", ca_dir=ca_dir)
    fake_ca = tmp_path / "fake"
    (fake_ca / "private").mkdir(parents=True)
    (fake_ca / "cacert.pem").write_bytes((tmp_path / "u/cert.pem").read_bytes())
    (fake_ca / "private/cakey.pem").write_bytes((tmp_path / "u/privkey.pem").read_bytes())
    with pytest.raises(CertError, match="cacert.pem: not a CA certificate"):
        make_user_cert("b.example.test", tmp_path / "v", ca_dir=fake_ca)


@pytest.mark.parametrize("name", ["", "bad_name", "-x.example", "a..b", "sip:a.example"])
def test_bad_names(tmp_path, ca_dir, name):
    with pytest.raises(CertError, match="is not a host name or IP address"):
        make_user_cert(name, tmp_path / "u", ca_dir=ca_dir)
    assert not (tmp_path / "u").exists()


# --- autogenerate ----------------------------------------------------------------------------

def test_autogenerate_creates_a_working_set(tmp_path):
    cert, key = tmp_path / "etc/cert.pem", tmp_path / "etc/keys/key.pem"
    created = autogenerate(cert, key)
    etc = tmp_path / "etc"
    assert created == [etc / "ca/cacert.pem", etc / "ca/private/cakey.pem", cert, key,
                       etc / "calist.pem"]
    assert _mode(key) == 0o600 and _mode(etc / "ca/private/cakey.pem") == 0o600
    assert "ENCRYPTED" not in (etc / "ca/private/cakey.pem").read_text()
    openssl("verify", "-CAfile", etc / "calist.pem", cert)
    for name in ("localhost", "127.0.0.1", "::1"):
        handshake(cert, key, etc / "calist.pem", server_hostname=name)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(cert, key, etc / "calist.pem", server_hostname="elsewhere.example.test")


def test_autogenerate_leaves_existing_files_alone(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    autogenerate(cert, key)
    before = _snapshot(tmp_path)
    assert autogenerate(cert, key) == []
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("existing", ["cert.pem", "key.pem"])
def test_autogenerate_refuses_half_a_pair(tmp_path, existing):
    (tmp_path / existing).write_text("mine")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    with pytest.raises(CertError, match=f"{tmp_path}/cert.pem.*{tmp_path}/key.pem|"
                                        f"{tmp_path}/key.pem.*{tmp_path}/cert.pem"):
        autogenerate(cert, key)
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "mine"


def test_autogenerate_one_file_for_certificate_and_key(tmp_path):
    # pyproxy's defaults (as OpenSER's): tls_certificate and tls_private_key are both cert.pem.
    both = tmp_path / "cert.pem"
    created = autogenerate(both, both, hostnames=["proxy.example.test"], ip_addresses=())
    assert both in created and _mode(both) == 0o600
    handshake(both, both, tmp_path / "calist.pem", server_hostname="proxy.example.test")
    assert autogenerate(both, both) == []


def test_autogenerate_keeps_an_existing_ca_list_and_ca(tmp_path):
    (tmp_path / "calist.pem").write_text("the operator's CAs\n")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    created = autogenerate(cert, key)
    assert tmp_path / "calist.pem" not in created
    assert (tmp_path / "calist.pem").read_text() == "the operator's CAs\n"

    # Certificate and key removed: the next start signs new ones with the same throw-away CA,
    # so peers that already trust it keep working.
    ca_before = _snapshot(tmp_path / "ca")
    cert.unlink()
    key.unlink()
    assert autogenerate(cert, key) == [cert, key]
    assert _snapshot(tmp_path / "ca") == ca_before
    handshake(cert, key, tmp_path / "ca/cacert.pem", server_hostname="localhost")


def test_autogenerate_stops_at_a_half_made_ca(tmp_path):
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca/cacert.pem").write_text("mine")
    with pytest.raises(CertError, match=f"^{tmp_path}/ca/cacert.pem: already exists"):
        autogenerate(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert not (tmp_path / "cert.pem").exists() and not (tmp_path / "key.pem").exists()
