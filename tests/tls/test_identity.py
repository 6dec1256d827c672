"""RFC 5922 SIP domain identity and the peer summary behind the $tls_* variables."""

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pyproxy.tls import DomainTable, matches_sip_domain, peer_summary
from pyproxy.tls.context import NO_AUTO_CHAIN

from .net import handshake, peer_context


@pytest.mark.parametrize("who, domain, match", [
    ("atlanta", "atlanta.example.com", True),        # URI SAN
    ("atlanta", "ATLANTA.Example.Com", True),        # case-insensitive
    ("atlanta", "atlanta.example.com.", True),
    ("atlanta", "example.com", False),               # no suffix matching
    ("atlanta", "biloxi.example.com", False),
    ("biloxi", "www.biloxi.example.com", True),      # URI SANs present, none matches: a DNS SAN may
    ("uri_only", "denver.example.com", True),
    ("cn_only", "chicago.example.com", True),        # no subjectAltName at all: the CN
    ("cn_only", "CHICAGO.example.com", True),
    ("local", "chicago.example.com", False),
    ("local", "127.0.0.1", True),                    # IP SAN
    ("local", "127.0.0.2", False),
    ("local", "localhost", True),
    ("wildcard", "www.example.org", False),          # RFC 5922 7.2: no wildcards for SIP domains
    ("wildcard", "*.example.org", True),             # (only the literal name itself)
])
def test_matches_sip_domain(pki, who, domain, match):
    assert matches_sip_domain(getattr(pki, who).cert, domain) is match


def _cert_with(names, cn="ignored.example.com"):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False).sign(key, hashes.SHA256()))


@pytest.mark.parametrize("uri, match", [
    ("sip:example.com", True), ("SIP:Example.COM", True), ("sip:example.com:5061", True),
    ("sip:example.com;transport=tls", True),
    ("sip:alice@example.com", False),                # a user's URI is not a domain identity
    ("sips:example.com", False), ("http://example.com", False),
])
def test_uri_forms(uri, match):
    assert matches_sip_domain(_cert_with([x509.UniformResourceIdentifier(uri)]), "example.com") is match


def test_cn_is_ignored_when_there_is_a_san():
    cert = _cert_with([x509.DNSName("other.example.com")], cn="example.com")
    assert not matches_sip_domain(cert, "example.com")


def test_pyopenssl_certificate_accepted(settings, tmp_path, pki):
    table = DomainTable.build(settings(), [], str(tmp_path))
    hs = handshake(peer_context(cert=pki.atlanta), table.default_client.context)
    assert matches_sip_domain(hs.client.get_peer_certificate(), "atlanta.example.com")


def test_peer_summary_of_client_certificate(settings, tmp_path, pki):
    table = DomainTable.build(settings(tls_method="TLSv1_2"), [], str(tmp_path))
    hs = handshake(table.default_server.context, peer_context(cert=pki.client))
    assert hs.ok
    s = peer_summary(hs.server)
    assert s == {
        "version": "TLSv1.2", "cipher": hs.server.get_cipher_name(), "cipher_bits": hs.server.get_cipher_bits(),
        "subject": "/O=pyproxy tests/CN=client.example.com", "subject_cn": "client.example.com",
        "issuer": "/O=pyproxy tests/CN=pyproxy test CA",
        "san_uri": ["sip:client.example.com"], "san_dns": ["client.example.com"], "verified": True,
        "identities": frozenset({"client.example.com"}),
    }
    assert s["cipher"].startswith("ECDHE-ECDSA-")


def test_peer_summary_lists_every_dns_name(settings, tmp_path, pki):
    table = DomainTable.build(settings(), [], str(tmp_path))
    s = peer_summary(handshake(peer_context(cert=pki.biloxi), table.default_client.context).client)
    assert s["san_dns"] == ["biloxi.example.com", "www.biloxi.example.com"]
    assert s["version"] == "TLSv1.3" and s["cipher"].startswith("TLS_") and s["verified"]


def test_peer_summary_without_certificate(settings, tmp_path):
    table = DomainTable.build(settings(tls_verify_client=False), [], str(tmp_path))
    s = peer_summary(handshake(table.default_server.context, peer_context()).server)
    assert (s["subject"], s["subject_cn"], s["issuer"], s["san_uri"], s["san_dns"], s["verified"]) == \
        ("", "", "", [], [], False)


def _sent_chain(conn) -> list[str]:
    return [c.get_subject().CN for c in conn.get_peer_cert_chain()]


def test_chain_built_once_from_the_ca_list(settings, tmp_path, pki):
    """A certificate file with the certificate alone: the chain OpenSSL would find in the CA list
    at every handshake (an X.509 verification each) is found once, at start, and sent the same."""
    table = DomainTable.build(settings(tls_verify_client=False), [], str(tmp_path))
    for ctx in (table.default_server.context, table.default_client.context):
        assert ctx.set_mode(0) & NO_AUTO_CHAIN
    hs = handshake(table.default_server.context, peer_context())
    assert hs.ok and _sent_chain(hs.client) == ["atlanta.example.com", "pyproxy test CA"]
    hs = handshake(peer_context(cert=pki.local, ca=pki.ca.cert_path), table.default_client.context)
    # (a server's list leaves out the client's own certificate)
    assert hs.ok and hs.server.get_peer_certificate().get_subject().CN == "atlanta.example.com"
    assert _sent_chain(hs.server) == ["pyproxy test CA"]


def test_chain_not_in_the_ca_list_left_to_openssl(settings, tmp_path, pki):
    """A certificate the CA list cannot vouch for goes alone, and OpenSSL keeps its own search."""
    table = DomainTable.build(settings(tls_certificate=pki.untrusted.cert_path, tls_private_key=pki.untrusted.key_path,
                                       tls_verify_client=False), [], str(tmp_path))
    assert not table.default_server.context.set_mode(0) & NO_AUTO_CHAIN
    hs = handshake(table.default_server.context, peer_context())
    assert hs.ok and _sent_chain(hs.client) == ["atlanta.example.com"]


def test_chain_written_in_the_certificate_file_sent_as_written(settings, tmp_path, pki):
    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(open(pki.local.cert_path, "rb").read() + open(pki.ca.cert_path, "rb").read())
    table = DomainTable.build(settings(tls_certificate=str(bundle), tls_private_key=pki.local.key_path,
                                       tls_ca_list=pki.rogue.cert_path, tls_verify_client=False), [], str(tmp_path))
    hs = handshake(table.default_server.context, peer_context())
    assert hs.ok and _sent_chain(hs.client) == ["127.0.0.1", "pyproxy test CA"]
