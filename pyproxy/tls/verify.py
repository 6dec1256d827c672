"""Peer verification: what OpenSSL decided, who the peer is (RFC 5922), and a summary for the script.

OpenSSL verifies the chain during the handshake (the mode comes from the domain's Context); the
verify callback below only records the first failure per connection, so that the runtime can log
*why* a handshake was refused or a peer is unverified (``verify_error``) and whose certificate it
was (``certificate_names``: subject and issuer). ``matches_sip_domain`` checks the peer's SIP
domain identity after the handshake, which OpenSSL cannot do for us: RFC 5922 rules differ from
HTTPS host name rules. ``peer_summary`` backs the ``$tls_*`` script variables.
"""

from __future__ import annotations

import functools
import ipaddress
import weakref
from typing import NamedTuple

from cryptography import x509
from OpenSSL import SSL, crypto


class Failure(NamedTuple):
    """The first certificate of a connection's chain that OpenSSL refused, and why."""
    depth: int                        # 0: the peer's own certificate; 1: its issuer, ...
    errnum: int                       # X509_V_ERR_*
    subject: str                      # one-line form, /O=x/CN=y
    issuer: str


# Connection -> its first Failure. Recorded during the handshake: a refused peer's certificate is
# gone afterwards (OpenSSL keeps only a verified one), so the log could not name it otherwise.
_FAILURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Connections whose chain OpenSSL ran through the callback at all (a resumed session does not).
_CHECKED: weakref.WeakSet = weakref.WeakSet()

X509_V_OK = 0


def record_verification(conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    """The verify callback of every pyproxy Context: keeps OpenSSL's verdict, remembers the first error."""
    _CHECKED.add(conn)
    if not ok and conn not in _FAILURES:
        c = cert.to_cryptography()
        _FAILURES[conn] = Failure(depth, errnum, _oneline(c.subject), _oneline(c.issuer))
    return bool(ok)


def verify_error(conn: SSL.Connection) -> str | None:
    """Why the peer's certificate did not verify (for the log), or None if it did or none was checked.

    After a refused handshake (``SSL.Error``) this says e.g. ``certificate has expired (depth 0)``;
    the ``SSL.Error`` itself only says "certificate verify failed". ``certificate_names`` says
    whose certificate it was.
    """
    failure = _FAILURES.get(conn)
    if failure is None:
        code = _verify_result(conn)
        return None if code in (None, X509_V_OK) else _error_text(code)
    return f"{_error_text(failure.errnum)} (depth {failure.depth})"


def certificate_names(conn: SSL.Connection) -> str | None:
    """For a refusal's log line: subject and issuer of the certificate that failed verification
    (the first one, at any depth), else of the peer's certificate, e.g. ``certificate subject
    /O=x/CN=atlanta.example.com, issuer /O=x/CN=Example CA``; None without one."""
    failure = _FAILURES.get(conn)
    if failure is not None:
        return f"certificate subject {failure.subject or '(empty)'}, issuer {failure.issuer or '(empty)'}"
    try:
        cert = conn.get_peer_certificate(as_cryptography=True)
    except SSL.Error:                 # pragma: no cover - nothing to read on a broken connection
        cert = None
    if cert is None:
        return None
    return f"certificate subject {_oneline(cert.subject) or '(empty)'}, issuer {_oneline(cert.issuer) or '(empty)'}"


def is_verified(conn: SSL.Connection) -> bool:
    """A certificate was presented and OpenSSL verified it against the domain's trust settings."""
    if conn.get_peer_certificate() is None:
        return False
    code = _verify_result(conn)
    if code is not None:              # authoritative, also for resumed sessions
        return code == X509_V_OK
    return conn in _CHECKED and conn not in _FAILURES


def _verify_result(conn: SSL.Connection) -> int | None:
    # SSL_get_verify_result is not public pyOpenSSL API; this is its only use, with a fallback.
    try:
        from OpenSSL._util import lib
        return int(lib.SSL_get_verify_result(conn._ssl))
    except Exception:                 # pragma: no cover - a pyOpenSSL without the binding
        return None


def _error_text(code: int) -> str:
    try:
        from OpenSSL._util import ffi, lib
        return ffi.string(lib.X509_verify_cert_error_string(code)).decode()
    except Exception:                 # pragma: no cover
        return f"certificate verify error {code}"


# --- RFC 5922: the SIP domain identity of a certificate ---------------------------------------------

def matches_sip_domain(cert: x509.Certificate | crypto.X509, domain: str) -> bool:
    """Whether ``cert`` identifies the SIP domain (or IP address) ``domain``, per RFC 5922.

    RFC 5922 7.1 (extracting the identity), the rules implemented, in order:
      URI: "If the scheme of the URI is not 'sip', then the implementation MUST NOT accept the value
           as a SIP domain identity. If the scheme of the URI value is 'sip', and the URI value that
           matches the target SIP domain contains a user part, the implementation MUST NOT accept the
           URI as a SIP domain identity."
      DNS: "An implementation MUST accept a domain name system identifier as a SIP domain identity if
           and only if no other identity is found that matches the 'sip' URI type described above."
           So a certificate whose URI SANs name other domains can still match by a DNS SAN: the DNS
           entry is refused only when a sip URI already matched (and then the answer is yes anyway).
      CN:  "If and only if the subjectAltName does not appear in the certificate, the implementation
           MAY examine the CN field of the certificate." We do.
    RFC 5922 7.2 (comparing): case-insensitive, whole names ("Implementations MUST NOT match
      suffixes"), and "Implementations MUST NOT match any form of wildcard, such as a leading '.' or
      '*.' with any other DNS label or sequence of labels": a ``*.example.com`` certificate does NOT
      identify the SIP domain ``atlanta.example.com``.
    An IP address target (no SIP domain to speak of) matches an IP SAN, a ``sip:IP`` URI SAN, or,
    without any SAN, the CN.
    """
    target = canonical_host(domain)
    return target != "" and target in sip_identities(cert)


def sip_identities(cert: x509.Certificate | crypto.X509) -> frozenset[str]:
    """Every SIP domain and address ``cert`` identifies by the rules above, in canonical form: the
    hosts of its sip: URIs, its DNS names (not those written as addresses: an address is
    identified by an IP SAN or a sip: URI) and IP addresses; its CN when it has no SAN."""
    cert = _as_cryptography(cert)
    sans = _sans(cert)
    if sans is None:
        cn = canonical_host(_subject_cn(cert))
        return frozenset((cn,) if cn else ())
    found = {h for u in sans.get_values_for_type(x509.UniformResourceIdentifier) if (h := _sip_uri_host(u))}
    found.update(str(a) for a in sans.get_values_for_type(x509.IPAddress))
    found.update(h for d in sans.get_values_for_type(x509.DNSName) if _ip(h := canonical_host(d)) is None)
    return frozenset(found)


def _sip_uri_host(uri: str) -> str | None:
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() != "sip":
        return None
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    if "@" in rest:                   # sip:user@domain names a user, not a domain (RFC 5922 7.1)
        return None
    if rest.startswith("["):
        return canonical_host(rest[:rest.find("]") + 1])
    return canonical_host(rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest)


@functools.lru_cache(maxsize=4096)
def canonical_host(host: str | None) -> str:
    """``host`` as names compare: lower case, no final dot or brackets, an address in its
    shortest form. (Cached: RFC 5922's check on reuse asks it for every request sent over a TLS
    connection, and parsing an address costs microseconds.)"""
    host = (host or "").strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ip = _ip(host)
    return str(ip) if ip is not None else host


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# --- peer summary ---------------------------------------------------------------------------------

def peer_summary(conn: SSL.Connection) -> dict:
    """What the ``$tls_*`` script variables show, after the handshake."""
    peer = conn.get_peer_certificate()
    summary = {"version": conn.get_protocol_version_name(), "cipher": conn.get_cipher_name() or "",
               "cipher_bits": conn.get_cipher_bits() or 0, "subject": "", "subject_cn": "", "issuer": "",
               "san_uri": [], "san_dns": [], "verified": is_verified(conn), "identities": frozenset()}
    if peer is None:
        return summary
    cert = peer.to_cryptography()
    sans = _sans(cert)
    summary.update(subject=_oneline(cert.subject), issuer=_oneline(cert.issuer),
                   subject_cn=_subject_cn(cert) or "",
                   san_uri=sans.get_values_for_type(x509.UniformResourceIdentifier) if sans else [],
                   san_dns=sans.get_values_for_type(x509.DNSName) if sans else [],
                   identities=sip_identities(cert))
    return summary


def identifies(summary: dict | None, host: str) -> bool:
    """Whether a peer (its ``peer_summary``) presented a verified certificate naming ``host``."""
    return bool(summary) and summary["verified"] and canonical_host(host) in summary["identities"]


def _oneline(name: x509.Name) -> str:
    """OpenSSL's one-line form, ``/C=AT/O=Example/CN=host``, as OpenSER's variables showed it."""
    return "".join(f"/{a.rfc4514_attribute_name}={a.value}" for rdn in name.rdns for a in rdn)


def _subject_cn(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[-1].value) if names else None      # the most specific CN


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _as_cryptography(cert: x509.Certificate | crypto.X509) -> x509.Certificate:
    return cert.to_cryptography() if isinstance(cert, crypto.X509) else cert
