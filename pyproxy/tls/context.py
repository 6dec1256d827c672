"""Building one OpenSSL Context from one domain's parameters, in small named steps.

``build_context`` runs the steps in order: options, protocol range, ciphers, key-exchange groups,
own certificate and key, trust (CA list, CA path, CRL), the chain sent with our certificate,
verification mode, key log (opened by the caller). A step that finds a problem reports it through
``Report`` (prefixed with the domain's label, naming the parameter and the file) and the build
goes on, so that one start names every problem of every domain. Building reads files and
nothing else: the same parameters give the same Context, so ``tls_reload`` can simply build again.

Rules worth knowing:
- File names are relative to the config's folder; ``CFG_DIR/`` at the start means that folder.
- Private keys must be unencrypted (nobody is there to type a pass phrase) and, unless
  ``tls_allow_loose_key_permissions``, not readable by group or others.
- TLS 1.0/1.1 need OpenSSL's security level 0 (level 1+ refuses their SHA-1 handshake signatures);
  before allowing them we check by a handshake that this OpenSSL can still negotiate them at all.
- ``tls_ciphers_list`` naming NULL ciphers works (level 0, with a loud warning): the seed offers it for
  testing. TLS 1.3 has no NULL suites, so only TLS <= 1.2 connections go unencrypted.
- Key-exchange groups are Mozilla's intermediate ones unless ``tls_groups`` says otherwise. OpenSSL's
  own default also has X448, secp521r1, SM2, ffdhe2048/3072 and (3.5+) the ML-KEM hybrids, so what a
  peer could negotiate depended on the OpenSSL that cryptography bundles; ``tls_groups`` adds them back.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from ..config.ast import DomainSide, Value, ValueKind
from ..config.errors import Position
from ..config.values import config_path
from ..config.tlsmethod import TLSMethod, TLSMethodType, TLSVersion
from .keylog import KeyLog
from .verify import record_verification

DEFAULT_FILE = "CFG_DIR/cert.pem"

# Mozilla "intermediate" v6.0 (TLS 1.2 part; TLS 1.3 keeps OpenSSL's default suites).
INTERMEDIATE_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
# Added when the domain allows TLS 1.0/1.1, which have no AEAD ciphers (Mozilla "old", without 3DES).
LEGACY_CIPHERS = ("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
                  "ECDHE-RSA-AES256-SHA:AES128-SHA:AES256-SHA")
LOWEST_LEVEL = "@SECLEVEL=0"
# Mozilla "intermediate" v5.x key-exchange groups (its "tls_curves"), most preferred first.
INTERMEDIATE_GROUPS = "X25519:prime256v1:secp384r1"

_OPENSSL_VERSION = {TLSVersion.TLSv1: SSL.TLS1_VERSION, TLSVersion.TLSv1_1: SSL.TLS1_1_VERSION,
                    TLSVersion.TLSv1_2: SSL.TLS1_2_VERSION, TLSVersion.TLSv1_3: SSL.TLS1_3_VERSION}


class TLSConfigError(Exception):
    """Every problem found while building the TLS domains, one message each."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        super().__init__(self.messages)           # args[0] is the list

    def __str__(self) -> str:
        return "\n".join(self.messages)

    def located(self, config_path: str) -> list[str]:
        """Each message as a config error: a domain block's start with its file:line:col, the
        global domain's get the file's name."""
        return [m if m.startswith(f"{config_path}:") else f"{config_path}: TLS: {m}" for m in self.messages]


@dataclass
class Report:
    """Collects the problems of one build; each message starts with the domain's label."""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    label: str = ""

    def error(self, text: str) -> None:
        self.errors.append(f"{self.label}: {text}")

    def warn(self, text: str) -> None:
        self.warnings.append(f"{self.label}: {text}")


def as_method(value: TLSMethod | str) -> TLSMethod:
    """The registry's default is the unconverted text 'SSLv23'; a written value is already converted."""
    if isinstance(value, TLSMethod):
        return value
    return TLSMethodType()(Value(ValueKind.WORD, str(value), Position("<default>", 0, 0)))


def build_context(side: DomainSide, params: dict, cfg_dir: str, report: Report, *,
                  certificate_optional: bool = False, keylog: KeyLog | None = None) -> SSL.Context:
    """``keylog``: where the connections' secrets go (tls_keylog_file, opened once for every domain)."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    set_options(ctx)
    method = as_method(params["tls_method"])
    set_protocols(ctx, method, report)
    set_ciphers(ctx, params, method, report)
    set_groups(ctx, params, report)
    certs = load_identity(ctx, params, cfg_dir, report, optional=certificate_optional)
    ca_list = load_trust(ctx, params, cfg_dir, report)
    if len(certs) == 1:
        settle_chain(ctx, certs[0])
    set_verification(ctx, side, params, report, ca_list)
    if keylog is not None:
        ctx.set_keylog_callback(keylog)
    if side is DomainSide.SERVER:
        # needed for session resumption with client certificates; per domain, deterministic
        ctx.set_session_id(hashlib.sha256(report.label.encode()).digest()[:32])
    return ctx


def set_options(ctx: SSL.Context) -> None:
    # No OP_CIPHER_SERVER_PREFERENCE: with only strong ciphers, the client's preference (which knows
    # whether it has AES hardware) is the better one (Mozilla intermediate).
    options = SSL.OP_NO_COMPRESSION | SSL.OP_SINGLE_ECDH_USE | SSL.OP_SINGLE_DH_USE
    options |= getattr(SSL, "OP_NO_RENEGOTIATION", 0)
    ctx.set_options(options)
    # An idle connection gives its 16 KiB read and write buffers back: most SIP connections are
    # idle most of the time (registrations kept open), and memory per connection is what limits them.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)


def set_protocols(ctx: SSL.Context, method: TLSMethod, report: Report) -> None:
    for version in (v for v in TLSVersion if method.low <= v <= method.high):
        if version < TLSVersion.TLSv1_2 and (why := legacy_version_unavailable(version)):
            report.error(f"tls_method {method.spelling}: this OpenSSL ({_openssl_name()}) cannot negotiate "
                         f"{version.label} any more ({why}); use TLSv1_2 or newer")
    ctx.set_min_proto_version(_OPENSSL_VERSION[method.low])
    ctx.set_max_proto_version(_OPENSSL_VERSION[method.high])


def set_ciphers(ctx: SSL.Context, params: dict, method: TLSMethod, report: Report) -> None:
    written = params.get("tls_ciphers_list") or ""
    ciphers = written or (INTERMEDIATE_CIPHERS + (":" + LEGACY_CIPHERS if method.deprecated else ""))
    expanded = _expand(ciphers)
    if expanded is None:
        report.error(f"tls_ciphers_list {written!r}: OpenSSL knows no cipher of that list")
        return
    null = [c for c in expanded if "NULL" in c.split("-")]
    if null:
        report.warn(f"tls_ciphers_list {written!r} allows ciphers without encryption ({', '.join(null[:3])}"
                    f"{', ...' if len(null) > 3 else ''}): for testing only; TLS 1.3 connections stay encrypted")
    if (method.deprecated or null) and "@SECLEVEL" not in ciphers.upper():
        ciphers += ":" + LOWEST_LEVEL
    ctx.set_cipher_list(ciphers.encode())
    if suites := params.get("tls_ciphersuites"):
        try:
            ctx.set_tls13_ciphersuites(suites.encode())
        except SSL.Error:
            report.error(f"tls_ciphersuites {suites!r}: OpenSSL knows no TLS 1.3 cipher suite of that list")


def set_groups(ctx: SSL.Context, params: dict, report: Report) -> None:
    written = params.get("tls_groups") or ""
    if _set_groups(ctx, written or INTERMEDIATE_GROUPS):
        return
    scratch = SSL.Context(SSL.TLS_METHOD)
    unknown = [g for g in written.split(":") if g and not _set_groups(scratch, g)]
    if unknown:
        report.error(f"tls_groups {written!r}: this OpenSSL ({_openssl_name()}) knows no group "
                     f"{', '.join(unknown)}; write names separated by ':' (e.g. {INTERMEDIATE_GROUPS})")
    else:
        report.error(f"tls_groups {written!r}: not an OpenSSL groups list; write names separated by ':' "
                     f"(e.g. {INTERMEDIATE_GROUPS})")


def _set_groups(ctx: SSL.Context, groups: str) -> bool:
    # SSL_CTX_set1_groups_list (its older name, the one cryptography binds) is not public pyOpenSSL
    # API; this is its only use. It fails on a name it does not know and leaves the old list.
    from OpenSSL._util import lib
    ok = lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()) == 1
    if not ok:
        lib.ERR_clear_error()         # else the next pyOpenSSL call would raise this error
    return ok


def _expand(ciphers: str) -> list[str] | None:
    """The cipher names OpenSSL makes of a cipher string, or None if it is no valid string."""
    scratch = SSL.Context(SSL.TLS_METHOD)      # a Context is frozen once a Connection uses it
    try:
        scratch.set_cipher_list(ciphers.encode())
    except SSL.Error:
        return None
    return [c for c in SSL.Connection(scratch).get_cipher_list() if not c.startswith("TLS_")]


def load_identity(ctx: SSL.Context, params: dict, cfg_dir: str, report: Report,
                  *, optional: bool) -> list[x509.Certificate]:
    """Our certificate (and the chain written after it in the file) and key; the certificates
    loaded, none when there are none or they are unusable."""
    cert_path = config_path(params["tls_certificate"], cfg_dir)
    key_path = config_path(params["tls_private_key"], cfg_dir)
    if optional and not os.path.exists(cert_path):
        return []                     # a client domain may go without a certificate of its own
    certs = _read_certificates(cert_path, report)
    key = _read_private_key(key_path, params, report)
    if not certs or key is None:
        return []
    ctx.use_certificate(certs[0])
    for extra in certs[1:]:
        ctx.add_extra_chain_cert(crypto.X509.from_cryptography(extra))
    try:
        ctx.use_privatekey(key)       # OpenSSL refuses a key that does not match the certificate here
        ctx.check_privatekey()
    except SSL.Error:
        report.error(f"tls_private_key {key_path}: does not match the certificate in tls_certificate {cert_path}")
    if certs[0].not_valid_after_utc.timestamp() < _now():
        report.warn(f"tls_certificate {cert_path}: expired on {certs[0].not_valid_after_utc:%Y-%m-%d}; "
                    f"peers that verify it will refuse the connection")
    return certs


NO_AUTO_CHAIN = 0x8     # SSL_MODE_NO_AUTO_CHAIN (OpenSSL's ABI; cryptography does not bind the name)


def settle_chain(ctx: SSL.Context, leaf: x509.Certificate) -> None:
    """A certificate file with no chain after the certificate: OpenSSL sends the chain it builds
    from the trusted CAs (tls_ca_list, tls_ca_path), and builds it again at every handshake, an
    X.509 verification each time (with an EC CA, a signature check: 70 us, a third of the server's
    side of a handshake). The same chain, built once here, is given to OpenSSL to send as it is.
    A chain that cannot be built now is left to OpenSSL's search at each handshake, as before."""
    try:
        chain = crypto.X509StoreContext(ctx.get_cert_store(), crypto.X509.from_cryptography(leaf)) \
            .get_verified_chain()
    except crypto.X509StoreContextError:
        return
    for cert in chain[1:]:
        ctx.add_extra_chain_cert(cert)
    ctx.set_mode(NO_AUTO_CHAIN)         # (a chain of the certificate alone: nothing to search for)


def _read_certificates(path: str, report: Report) -> list[x509.Certificate]:
    data = _read(path, "tls_certificate", report)
    if data is None:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        report.error(f"tls_certificate {path}: holds no PEM certificate")
        return []


def _read_private_key(path: str, params: dict, report: Report):
    data = _read(path, "tls_private_key", report)
    if data is None:
        return None
    mode = os.stat(path).st_mode
    if mode & 0o077 and not params.get("tls_allow_loose_key_permissions", False):
        report.error(f"tls_private_key {path}: is readable by group or others (mode "
                     f"{stat.S_IMODE(mode):04o}); chmod 600 it (or set tls_allow_loose_key_permissions)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        report.error(f"tls_private_key {path}: the key is encrypted; pyproxy cannot ask for a pass phrase: "
                     f"store it unencrypted with mode 600 (openssl pkey -in KEY -out NEWKEY)")
    except (ValueError, crypto.Error):
        report.error(f"tls_private_key {path}: holds no PEM private key")
    except Exception as e:  # pragma: no cover - e.g. an unsupported key type
        report.error(f"tls_private_key {path}: cannot load the key: {e}")
    return None


def load_trust(ctx: SSL.Context, params: dict, cfg_dir: str, report: Report) -> str | None:
    """Loads the CA list, CA path and CRL; returns the CA list's path if it loaded."""
    loaded = None
    if ca_list := params.get("tls_ca_list"):
        path = config_path(ca_list, cfg_dir)
        if os.path.isdir(path):
            report.error(f"tls_ca_list {path}: is a folder; it must be a file (use tls_ca_path for a folder)")
        elif _read(path, "tls_ca_list", report) is not None:
            try:
                ctx.load_verify_locations(path)
                loaded = path
            except SSL.Error:
                report.error(f"tls_ca_list {path}: holds no PEM CA certificate")
    if ca_path := params.get("tls_ca_path"):
        path = config_path(ca_path, cfg_dir)
        if not os.path.isdir(path):
            report.error(f"tls_ca_path {path}: is not a folder")
        elif not os.access(path, os.R_OK | os.X_OK):
            report.error(f"tls_ca_path {path}: cannot read the folder: permission denied")
        else:
            ctx.load_verify_locations(None, path)
    if crl := params.get("tls_crl"):
        load_crl(ctx, config_path(crl, cfg_dir), report)
    return loaded


def load_crl(ctx: SSL.Context, path: str, report: Report) -> None:
    data = _read(path, "tls_crl", report)
    if data is None:
        return
    blocks = [b"-----BEGIN X509 CRL-----" + b for b in data.split(b"-----BEGIN X509 CRL-----")[1:]]
    try:
        crls = [x509.load_pem_x509_crl(b) for b in blocks] if blocks else [x509.load_der_x509_crl(data)]
    except ValueError:
        report.error(f"tls_crl {path}: holds no readable certificate revocation list (PEM or DER)")
        return
    store = ctx.get_cert_store()
    for crl in crls:
        store.add_crl(crl)
    # The peer's own certificate is checked (CRL_CHECK); its issuers are not (that would be CRL_CHECK_ALL
    # and need a CRL for every CA in the chain).
    store.set_flags(crypto.X509StoreFlags.CRL_CHECK)


def set_verification(ctx: SSL.Context, side: DomainSide, params: dict, report: Report,
                     ca_list: str | None) -> None:
    ctx.set_verify_depth(params["tls_verify_depth"])
    has_trust = bool(params.get("tls_ca_list") or params.get("tls_ca_path"))
    if side is DomainSide.SERVER:
        mode = SSL.VERIFY_NONE
        if params["tls_verify_client"]:
            mode = SSL.VERIFY_PEER
            if params["tls_require_client_certificate"]:
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            if ca_list:               # also sent as the list of CAs the client may choose from
                ctx.load_client_ca(ca_list.encode())
            if not has_trust:
                report.warn("tls_verify_client is on but neither tls_ca_list nor tls_ca_path is set: "
                            "every client certificate will be refused")
    else:
        mode = SSL.VERIFY_PEER if params["tls_verify_server"] else SSL.VERIFY_NONE
        if params["tls_verify_server"] and not has_trust:
            ctx.set_default_verify_paths()      # the system's trusted CAs
    ctx.set_verify(mode, record_verification)


def _read(path: str, param: str, report: Report) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        report.error(f"{param} {path}: cannot read: {e.strerror}")
        return None


@functools.cache
def legacy_version_unavailable(version: TLSVersion) -> str | None:
    """None if this OpenSSL completes a handshake at ``version`` (at security level 0), else why not.

    Anonymous ECDH ciphers keep the probe free of certificates; it runs once per process and version.
    """
    ends = []
    for _ in range(2):
        ctx = SSL.Context(SSL.TLS_METHOD)
        try:
            ctx.set_min_proto_version(_OPENSSL_VERSION[version])
            ctx.set_max_proto_version(_OPENSSL_VERSION[version])
            ctx.set_cipher_list(b"aNULL:" + LOWEST_LEVEL.encode())
        except SSL.Error as e:
            return f"cannot configure it: {e}"
        ends.append(SSL.Connection(ctx, None))
    server, client = ends
    server.set_accept_state()
    client.set_connect_state()
    try:
        for _ in range(10):
            for me, peer in ((client, server), (server, client)):
                try:
                    me.do_handshake()
                except SSL.WantReadError:
                    pass
                try:
                    peer.bio_write(me.bio_read(1 << 16))
                except SSL.WantReadError:
                    pass
        if server.get_protocol_version() == _OPENSSL_VERSION[version] and client.get_cipher_name():
            return None
        return "the probe handshake did not complete"
    except SSL.Error as e:
        return f"a probe handshake failed: {e}"


def _openssl_name() -> str:
    return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()


def _now() -> float:
    import time
    return time.time()
