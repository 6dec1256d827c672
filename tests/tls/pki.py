"""A throw-away PKI for the TLS tests, made with ``cryptography``.

``PKI(folder)`` writes, at construction, two CAs (``ca`` trusted, ``rogue`` not), and leaf
certificates signed by them; each leaf is an ``Issued`` with its certificate and key files. Keys are
EC P-256 (fast to make) and written with mode 0600, as pyproxy demands.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: str
    key_path: str


def _name(cn: str | None) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pyproxy tests")] +
                     ([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))


def _key_pem(key, password: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class PKI:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.ca = self.authority("pyproxy test CA")
        self.rogue = self.authority("rogue CA")
        self.atlanta = self.leaf("atlanta", "atlanta.example.com", dns=["atlanta.example.com"],
                                 uri=["sip:atlanta.example.com"])
        self.biloxi = self.leaf("biloxi", "biloxi.example.com", dns=["biloxi.example.com", "www.biloxi.example.com"],
                                uri=["sip:biloxi.example.com"])
        self.local = self.leaf("local", "127.0.0.1", ips=["127.0.0.1"], dns=["localhost"])
        self.client = self.leaf("client", "client.example.com", dns=["client.example.com"],
                                uri=["sip:client.example.com"], client=True)
        self.untrusted = self.leaf("untrusted", "atlanta.example.com", dns=["atlanta.example.com"],
                                   uri=["sip:atlanta.example.com"], issuer=self.rogue, client=True)
        self.expired = self.leaf("expired", "atlanta.example.com", dns=["atlanta.example.com"],
                                 uri=["sip:atlanta.example.com"], client=True,
                                 not_before=NOW - 30 * DAY, not_after=NOW - DAY)
        self.cn_only = self.leaf("cn_only", "chicago.example.com")
        self.wildcard = self.leaf("wildcard", "*.example.org", dns=["*.example.org"])
        self.uri_only = self.leaf("uri_only", "denver.example.com", uri=["sip:denver.example.com"])
        self.revoked = self.leaf("revoked", "revoked.example.com", dns=["revoked.example.com"], client=True)
        self.crl_path = self.write("crl.pem", self.crl([self.revoked]).public_bytes(serialization.Encoding.PEM))
        self.empty_crl_path = self.write("crl-empty.pem", self.crl([]).public_bytes(serialization.Encoding.PEM))
        # a bundle of certificate and key, as the seed's default CFG_DIR/cert.pem holds
        self.bundle_path = self.write("bundle.pem", _pem(self.atlanta.cert) + _key_pem(self.atlanta.key))
        os.chmod(self.bundle_path, 0o600)
        self.encrypted_key_path = self.write("encrypted.key", _key_pem(self.atlanta.key, b"secret"), 0o600)

    def write(self, name: str, data: bytes, mode: int = 0o644) -> str:
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def authority(self, cn: str) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - DAY).not_valid_after(NOW + 3650 * DAY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        slug = cn.replace(" ", "_")
        return Issued(cert, key, self.write(f"{slug}.crt", _pem(cert)), self.write(f"{slug}.key", _key_pem(key), 0o600))

    def leaf(self, slug: str, cn: str | None, *, dns=(), uri=(), ips=(), issuer: Issued | None = None,
             client: bool = False, not_before=None, not_after=None) -> Issued:
        issuer = issuer or self.ca
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or NOW - DAY).not_valid_after(not_after or NOW + 365 * DAY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                                  critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        names = ([x509.UniformResourceIdentifier(u) for u in uri] + [x509.DNSName(d) for d in dns] +
                 [x509.IPAddress(ipaddress.ip_address(i)) for i in ips])
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(issuer.key, hashes.SHA256())
        return Issued(cert, key, self.write(f"{slug}.crt", _pem(cert)), self.write(f"{slug}.key", _key_pem(key), 0o600))

    def crl(self, revoked: list[Issued]) -> x509.CertificateRevocationList:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.ca.cert.subject)
                   .last_update(NOW - DAY).next_update(NOW + 30 * DAY))
        for r in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(r.cert.serial_number).revocation_date(NOW - DAY).build())
        return builder.sign(self.ca.key, hashes.SHA256())
