"""``pyproxyctl tls check``: every TLS domain of a config looked at before a start depends on it.

The start's own checks come first and unchanged: `DomainTable.build` reads every domain's files as
the start does (missing or unreadable files, a key that does not match its certificate, an encrypted
key, a key group or others can read, ...). Then, per certificate: the days it has left (a warning
under `EXPIRY_WARNING_DAYS`), whether its chain verifies against the domain's CA list, and whether
the run user (``user=``/``-u``, which a start as root becomes) can read every file.

Each finding is one line for the operator; only errors make the check fail.
"""

from __future__ import annotations

import datetime
import enum
import json
import os
import pwd
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import crypto

from ..certs import autogenerate_pending
from ..config.ast import DomainSide
from ..config.values import config_path
from .context import TLSConfigError
from .domains import DomainTable, _label, domain_params

EXPIRY_WARNING_DAYS = 30


class Severity(enum.Enum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    text: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.text}"


@dataclass
class Files:
    """The files of one or more domains that name the same ones."""
    labels: list[str]
    certificate: str | None         # None: a client domain without a certificate of its own
    private_key: str | None
    ca_list: str | None
    ca_path: str | None
    crl: str | None

    @property
    def label(self) -> str:
        return ", ".join(self.labels)

    def paths(self) -> list[str]:
        return [p for p in (self.certificate, self.private_key, self.ca_list, self.ca_path, self.crl) if p]


def check(settings, specs, cfg_dir: str, run_as: tuple[int, int] | None = None,
          now: datetime.datetime | None = None) -> list[Finding]:
    """The findings about every TLS domain of a config. ``run_as``: the (uid, gid) the server runs
    as, to check it can read the files (only root can look as another user: the caller decides)."""
    if settings.disable_tls:
        return [Finding(Severity.OK, "TLS is disabled (disable_tls=yes): nothing to check")]
    if pending := autogenerate_pending(settings, cfg_dir):
        return [Finding(Severity.OK, f"{pending[0]} and {pending[1]} do not exist yet: tls_autogenerate "
                                     "makes them at the first start")]
    findings = []
    try:
        findings += [Finding(Severity.WARNING, w) for w in DomainTable.build(settings, specs, cfg_dir).warnings]
    except TLSConfigError as e:
        findings += [Finding(Severity.ERROR, m) for m in e.messages]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    for files in domain_files(settings, specs, cfg_dir):
        findings += certificate_findings(files, now)
        if run_as is not None:
            findings += [Finding(Severity.ERROR, f"{files.label}: {path}: the run user (uid {run_as[0]}) cannot "
                                                 f"read it") for path in unreadable_as(run_as, files.paths())]
    return findings


def domain_files(settings, specs, cfg_dir: str) -> list[Files]:
    """The files of every domain, as DomainTable.build resolves them; domains naming the same files
    are one entry."""
    domains = [(DomainSide.SERVER, "default server domain", None), (DomainSide.CLIENT, "default client domain", None)]
    domains += [(s.side, f"{s.pos}: {_label(s)}" if s.pos is not None else _label(s), s) for s in specs]
    merged: dict[tuple, Files] = {}
    for side, label, spec in domains:
        params, optional = domain_params(settings, side, spec)
        path = {name: config_path(params[name], cfg_dir) if params.get(name) else None
                for name in ("tls_certificate", "tls_private_key", "tls_ca_list", "tls_ca_path", "tls_crl")}
        if optional and not os.path.exists(path["tls_certificate"]):
            path["tls_certificate"] = path["tls_private_key"] = None
        key = tuple(path.values())
        if key in merged:
            merged[key].labels.append(label)
        else:
            merged[key] = Files([label], *key)
    return list(merged.values())


def certificate_findings(files: Files, now: datetime.datetime) -> list[Finding]:
    """Days left and the chain against the CA list; a file that does not load is build's to report."""
    if files.certificate is None:
        return []
    try:
        with open(files.certificate, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError):
        return []
    leaf, where = certs[0], f"{files.label}: {files.certificate}"
    findings = []
    expires = leaf.not_valid_after_utc
    days = (expires - now).days
    subject = leaf.subject.rfc4514_string()
    if expires < now:
        findings.append(Finding(Severity.ERROR, f"{where}: {subject} expired on {expires:%Y-%m-%d}"))
    elif days < EXPIRY_WARNING_DAYS:
        findings.append(Finding(Severity.WARNING, f"{where}: {subject} expires in {days} day(s), on "
                                                  f"{expires:%Y-%m-%d}"))
    else:
        findings.append(Finding(Severity.OK, f"{where}: {subject}, expires on {expires:%Y-%m-%d} "
                                             f"(in {days} days)"))
    if files.ca_list or files.ca_path:
        findings.append(_chain(where, certs, files))
    return findings


def _chain(where: str, certs: list[x509.Certificate], files: Files) -> Finding:
    trust = " and ".join(p for p in (files.ca_list, files.ca_path) if p)
    store = crypto.X509Store()
    try:
        store.load_locations(files.ca_list, files.ca_path)
    except crypto.Error:
        return Finding(Severity.OK, f"{where}: chain not checked: {trust} does not load")   # build said why
    chain = [crypto.X509.from_cryptography(c) for c in certs[1:]]
    try:
        crypto.X509StoreContext(store, crypto.X509.from_cryptography(certs[0]), chain).verify_certificate()
    except crypto.X509StoreContextError as e:
        return Finding(Severity.ERROR, f"{where}: does not verify against {trust}: {e}; peers that trust "
                                       f"only these CAs will refuse it")
    return Finding(Severity.OK, f"{where}: chain verifies against {trust}")


def unreadable_as(ids: tuple[int, int], paths: list[str]) -> list[str]:
    """The paths user ``ids`` (uid, gid, with the user's groups) cannot read (folders: list and
    enter), asked of the kernel by a child that becomes that user: ACLs and every parent folder
    count. Only root can do this."""
    uid, gid = ids
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: become the user, ask, report, leave without cleanup handlers
        status = 1
        try:
            os.close(read_end)
            try:
                os.initgroups(pwd.getpwuid(uid).pw_name, gid)
            except KeyError:
                os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            found = [p for p in paths if not os.access(p, os.R_OK | (os.X_OK if os.path.isdir(p) else 0))]
            os.write(write_end, json.dumps(found).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else list(paths)
