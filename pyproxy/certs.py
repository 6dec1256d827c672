"""Certificates for pyproxy's TLS, made with `cryptography`: a private root CA, certificates signed
by it (OpenSER's ``openserctl tls rootCA`` and ``tls userCERT``), and the throw-away set that
``tls_autogenerate=yes`` makes at start.

Rules: no ``openssl`` subprocess; an existing file is never overwritten (every target is checked
before the first is written, and each is opened with O_EXCL); private keys are written 0600 and the
directories made only for keys 0700; every failure is a `CertError` naming the file.

Layout (the seed's section 1.5, as ``openserctl tls`` made it): one TLS directory holds the CA in
``rootCA/`` (``cacert.pem`` and ``private/cakey.pem``) and each host's files in a directory named
after the host: ``cert.pem``, ``privkey.pem`` and ``calist.pem`` (the CA that signed it), ready for
tls_certificate, tls_private_key and tls_ca_list. `ca_dir_in` and `user_dir_in` say where.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "cacert.pem"
CA_KEY = os.path.join("private", "cakey.pem")
USER_CERT, USER_KEY, USER_CALIST = "cert.pem", "privkey.pem", "calist.pem"
ROOT_CA = "rootCA"      # the CA's directory in a TLS directory, beside the hosts'

# Valid from a few minutes ago, so a peer whose clock is slightly behind still accepts a fresh
# certificate.
_BACKDATE = datetime.timedelta(minutes=5)

# A host name as RFC 1123 spells it, optionally with a leading wildcard label.
_HOSTNAME = re.compile(r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class CertError(Exception):
    """A certificate or key could not be made, read or written; the message names the file."""


# --- keys ------------------------------------------------------------------------------------

def new_key(key_type: str = "ec"):
    """A fresh private key: EC P-256 (small, fast, what modern peers expect) or RSA 2048 (for old
    peers without ECDSA)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CertError(f"unknown key type {key_type!r}: expected 'ec' or 'rsa'")


def _key_pem(key, passphrase: bytes | None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --- files -----------------------------------------------------------------------------------

def _refuse_existing(paths) -> None:
    for path in paths:
        if os.path.lexists(path):
            raise CertError(f"{path}: already exists; not overwriting it")


def _make_dir(path: Path, mode: int) -> None:
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as e:
        raise CertError(f"{path}: cannot create the directory: {e.strerror}") from None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: even a file that appeared since _refuse_existing is never truncated.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise CertError(f"{path}: already exists; not overwriting it") from None
    except OSError as e:
        raise CertError(f"{path}: cannot create: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        path.unlink(missing_ok=True)    # no truncated key or certificate left behind
        raise CertError(f"{path}: cannot write: {e.strerror}") from None


def _write_all(files: list[tuple[Path, bytes, int]]) -> list[Path]:
    """Write every (path, data, mode) or none: a failure part-way removes what this call wrote, so
    a retry does not stop on a half-made set."""
    _refuse_existing(path for path, _, _ in files)
    written = []
    try:
        for path, data, mode in files:
            _write_new(path, data, mode)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertError(f"{path}: no such file (the {what})") from None
    except OSError as e:
        raise CertError(f"{path}: cannot read the {what}: {e.strerror}") from None


# --- certificates ----------------------------------------------------------------------------

def _validity(days: int, not_after_cap: datetime.datetime | None = None):
    if days < 1:
        raise CertError(f"validity must be at least one day, not {days}")
    now = datetime.datetime.now(datetime.timezone.utc)
    not_after = now + datetime.timedelta(days=days)
    if not_after_cap is not None:
        not_after = min(not_after, not_after_cap)
    return now - _BACKDATE, not_after


def _name(common_name: str) -> x509.Name:
    if not 1 <= len(common_name) <= 64:    # the upper bound of X.520 CommonName
        raise CertError(f"{common_name!r}: a common name has 1 to 64 characters")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_certificate(key, common_name: str, days: int) -> x509.Certificate:
    not_before, not_after = _validity(days)
    public = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))


def _subject_alt_names(names, ip_addresses) -> list[x509.GeneralName]:
    """DNS and sip: URI entries for host names (RFC 5922 section 7.1 reads the URI, many peers the
    DNS name), IP entries for addresses. A name that is an address gets IP and URI, no DNS."""
    sans: list[x509.GeneralName] = []
    ips = [_ip(a) for a in ip_addresses]
    for name in names:
        ip = _ip_or_none(name)
        if ip is None:
            _check_hostname(name)
            sans.append(x509.DNSName(name))
            if not name.startswith("*."):
                sans.append(x509.UniformResourceIdentifier(f"sip:{name}"))
        else:
            ips.insert(0, ip)
            host = f"[{ip}]" if ip.version == 6 else str(ip)
            sans.append(x509.UniformResourceIdentifier(f"sip:{host}"))
    seen = set()
    for ip in ips:
        if ip not in seen:
            seen.add(ip)
            sans.append(x509.IPAddress(ip))
    return sans


def _leaf_certificate(key, names, ip_addresses, ca_cert, ca_key, days: int,
                      client_and_server: bool) -> x509.Certificate:
    sans = _subject_alt_names(names, ip_addresses)
    not_before, not_after = _validity(days, ca_cert.not_valid_after_utc)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_and_server:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    public = key.public_key()
    # RSA key exchange (TLS 1.2 without ECDHE) encrypts with the certificate's key.
    rsa_key = isinstance(public, rsa.RSAPublicKey)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=rsa_key, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))


def _ip_or_none(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _ip(text) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = _ip_or_none(str(text))
    if ip is None:
        raise CertError(f"{text!r} is not an IP address")
    return ip


def _check_hostname(name: str) -> None:
    if len(name) > 253 or not _HOSTNAME.fullmatch(name):
        raise CertError(f"{name!r} is not a host name or IP address")


# --- the layout ------------------------------------------------------------------------------

def ca_dir_in(tls_dir) -> Path:
    """Where the CA of a TLS directory is (``openserctl tls rootCA DIR``: ``DIR/rootCA``)."""
    return Path(tls_dir) / ROOT_CA


def user_dir_in(tls_dir, name: str) -> Path:
    """Where host `name`'s files are in a TLS directory (``openserctl tls userCERT NAME DIR``)."""
    return Path(tls_dir) / name


# --- the CA ----------------------------------------------------------------------------------

def make_root_ca(directory, *, common_name: str = "pyproxy root CA", days: int = 3650,
                 passphrase: bytes | None = None, key_type: str = "ec") -> tuple[Path, Path]:
    """Make a root CA in `directory`: ``cacert.pem`` and ``private/cakey.pem`` (encrypted with
    `passphrase` when given). Returns (cert_path, key_path)."""
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    _refuse_existing([cert_path, key_path])
    key = new_key(key_type)
    cert = _ca_certificate(key, common_name, days)
    _make_dir(directory, 0o755)
    _make_dir(key_path.parent, 0o700)
    _write_all([(key_path, _key_pem(key, passphrase), 0o600),
                (cert_path, _cert_pem(cert), 0o644)])
    return cert_path, key_path


def load_ca(ca_dir, passphrase: bytes | None = None):
    """The (certificate, key) of the CA in `ca_dir`, checked to be a CA and to match."""
    ca_dir = Path(ca_dir)
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if not ca_dir.is_dir():
        raise CertError(f"{ca_dir}: no such CA directory (looked for {cert_path} and {key_path})")
    try:
        cert = x509.load_pem_x509_certificate(_read(cert_path, "CA certificate"))
    except ValueError:
        raise CertError(f"{cert_path}: not a PEM certificate") from None
    key = _load_key(key_path, _read(key_path, "CA private key"), passphrase)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise CertError(f"{key_path}: does not match the certificate {cert_path}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertError(f"{cert_path}: not a CA certificate (no BasicConstraints CA:TRUE)")
    return cert, key


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_key(path: Path, data: bytes, passphrase: bytes | None):
    # cryptography says "wrong passphrase" and "not a key" with the same ValueError; tell them
    # apart by whether the PEM is encrypted, so the message points at the real problem.
    encrypted = b"ENCRYPTED" in data.split(b"-----END", 1)[0]
    if encrypted and not passphrase:
        raise CertError(f"{path}: the key is encrypted; a passphrase is needed")
    if passphrase and not encrypted:
        raise CertError(f"{path}: a passphrase was given but the key is not encrypted")
    try:
        return serialization.load_pem_private_key(data, passphrase or None)
    except (ValueError, TypeError):
        if encrypted:
            raise CertError(f"{path}: wrong passphrase for the key") from None
        raise CertError(f"{path}: not a PEM private key") from None


# --- user certificates -----------------------------------------------------------------------

def make_user_cert(name: str, directory, *, ca_dir, ca_passphrase: bytes | None = None,
                   days: int = 825, ip_addresses=(), client_and_server: bool = True,
                   key_type: str = "ec") -> dict[str, Path]:
    """Make a key and a certificate for host `name` signed by the CA in `ca_dir`, in `directory`:
    ``cert.pem``, ``privkey.pem`` (unencrypted: the server reads it at start) and ``calist.pem``.
    Returns {"cert": ..., "key": ..., "calist": ...}."""
    directory = Path(directory)
    paths = {"cert": directory / USER_CERT, "key": directory / USER_KEY,
             "calist": directory / USER_CALIST}
    _refuse_existing(paths.values())
    ca_cert, ca_key = load_ca(ca_dir, ca_passphrase)
    key = new_key(key_type)
    cert = _leaf_certificate(key, [name], ip_addresses, ca_cert, ca_key, days, client_and_server)
    _make_dir(directory, 0o755)
    _write_all([(paths["key"], _key_pem(key, None), 0o600),
                (paths["cert"], _cert_pem(cert), 0o644),
                (paths["calist"], _cert_pem(ca_cert), 0o644)])
    return paths


# --- tls_autogenerate ------------------------------------------------------------------------

def autogenerate_pending(settings, cfg_dir: str) -> tuple[str, str] | None:
    """With tls_autogenerate=yes and the configured certificate or key missing: their paths, which
    the start fills in (so -c cannot check them yet). None otherwise."""
    from .config.values import config_path
    cert, key = (config_path(p, cfg_dir) for p in (settings.tls_certificate, settings.tls_private_key))
    if settings.tls_autogenerate and not (os.path.exists(cert) and os.path.exists(key)):
        return cert, key
    return None


def autogenerate(cert_path, key_path, *, hostnames=("localhost",),
                 ip_addresses=("127.0.0.1", "::1"), days: int = 825) -> list[Path]:
    """For ``tls_autogenerate=yes``: when neither `cert_path` nor `key_path` exists, make a
    throw-away CA in ``ca/`` beside the certificate (reused if a previous run left one) and a
    server certificate and key at exactly those paths, plus ``calist.pem`` beside the certificate
    unless one is there already. `cert_path` and `key_path` may be the same file (pyproxy's default,
    as in OpenSER): it then holds the certificate followed by the key, mode 0600.

    Returns the paths created, [] when both files already exist. Raises CertError when only one
    of the two exists."""
    cert_path, key_path = Path(cert_path), Path(key_path)
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if have_cert and have_key:
        return []
    if have_cert or have_key:
        raise CertError(f"{cert_path if have_cert else key_path} exists but "
                        f"{key_path if have_cert else cert_path} does not; tls_autogenerate "
                        f"makes both or neither")
    if not hostnames:
        raise CertError("tls_autogenerate needs at least one host name")
    created: list[Path] = []
    ca_cert, ca_key = _throwaway_ca(cert_path.parent / "ca", created)
    key = new_key()
    cert = _leaf_certificate(key, list(hostnames), ip_addresses, ca_cert, ca_key, days, True)
    created += _write_server_files(cert_path, key_path, cert, key)
    calist = cert_path.parent / USER_CALIST
    if not os.path.lexists(calist):
        created += _write_all([(calist, _cert_pem(ca_cert), 0o644)])
    return created


def _throwaway_ca(ca_dir: Path, created: list[Path]):
    if (ca_dir / CA_CERT).exists() and (ca_dir / CA_KEY).exists():
        return load_ca(ca_dir)
    created += make_root_ca(ca_dir, common_name="pyproxy throw-away CA (tls_autogenerate)")
    return load_ca(ca_dir)


def _write_server_files(cert_path: Path, key_path: Path, cert, key) -> list[Path]:
    _make_dir(cert_path.parent, 0o755)
    if cert_path == key_path:
        return _write_all([(cert_path, _cert_pem(cert) + _key_pem(key, None), 0o600)])
    _make_dir(key_path.parent, 0o700)
    return _write_all([(cert_path, _cert_pem(cert), 0o644),
                       (key_path, _key_pem(key, None), 0o600)])
