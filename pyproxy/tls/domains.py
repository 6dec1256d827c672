"""TLS domains and how a connection finds its own (the seed's 1.6.13).

A domain is a set of TLS parameters with its built Context. There is always a default server domain
and a default client domain, made of the global ``tls_*`` settings; every ``tls_server_domain[IP:PORT]``
and ``tls_client_domain["name"]`` / ``tls_client_domain[IP:PORT]`` block adds one, its unset
parameters taking the global values.

Lookup order:
- incoming: the domain of the local socket, else the default server domain; then, during the
  handshake, the client's SNI name may move the connection to another server domain of that socket
  whose ``tls_server_name`` matches (exact name first, then a ``*.example.com`` wildcard, one label).
- outgoing: the domain named by the client-domain AVP, else the domain of the destination socket,
  else the default client domain.

``DomainTable.build`` is deterministic and only reads files (but for opening ``tls_keylog_file``, once
per process), so the master builds it before fork and a reload builds a new one and swaps it whole.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from OpenSSL import SSL

from ..config.ast import DomainSide
from ..config.settings import DomainSpec
from ..config.settings import PARAMS
from ..config.values import SocketSpec
from .context import DEFAULT_FILE, Report, TLSConfigError, as_method, build_context
from .keylog import open_keylog
from .verify import record_verification

# Every tls_* parameter a domain carries, global-only ones included (they are simply the global value).
TLS_PARAMS = tuple(name for name, p in PARAMS.items() if p.section == "tls" and name != "tls_verify")
EXTRA_PARAMS = {"tls_allow_loose_key_permissions": False}    # read with a default until registered
# OpenSSL fixes these from the Context a connection starts on, before it sees the SNI name, so the
# domains sharing a socket must agree on them.
SHARED_ON_SOCKET = ("tls_method", "tls_verify_depth")
# OpenSSL also resumes a session (ticket or cache) on the Context a connection starts on, before the
# SNI callback moves it: a session of one domain would be resumed in another without that domain's
# client-certificate checks. Where a socket's domains check clients differently, nothing is resumed.
CLIENT_CHECKS = ("tls_verify_client", "tls_require_client_certificate", "tls_ca_list", "tls_ca_path", "tls_crl")


@dataclass(eq=False)
class TLSDomain:
    side: DomainSide
    label: str                        # 'tls_server_domain[1.2.3.4:5061]', 'default server domain', ...
    name: str | None                  # a name-based client domain's name
    socket: SocketSpec | None
    server_name: str | None           # SNI: selects a server domain / is sent by a client domain
    params: dict                      # every tls_* value in force
    context: SSL.Context
    verify_hostname: bool             # client side: the runtime checks matches_sip_domain() after the handshake
    match_domain_on_reuse: bool

    def __repr__(self) -> str:
        return f"<TLSDomain {self.label}>"


class DomainTable:
    def __init__(self, default_server: TLSDomain, default_client: TLSDomain, server: list[TLSDomain],
                 client: list[TLSDomain], warnings: list[str]) -> None:
        self.default_server = default_server
        self.default_client = default_client
        self.warnings = warnings
        self._all = [default_server, default_client, *server, *client]
        self._by_context = {d.context: d for d in self._all}
        self._server_groups: dict[tuple[str, int], list[TLSDomain]] = {}
        for d in server:
            if d.socket is not None:
                self._server_groups.setdefault(_socket_key(d.socket.host, d.socket.port), []).append(d)
        self._client_by_name = {d.name: d for d in client if d.name is not None}
        self._client_by_socket = {_socket_key(d.socket.host, d.socket.port): d for d in client if d.socket}
        # SNI: each socket's domains choose among themselves; the default server domain among the
        # server domains bound to no socket.
        self._install_sni([default_server, *(d for d in server if d.socket is None)])
        for group in self._server_groups.values():
            self._install_sni(group)

    # --- building -----------------------------------------------------------------------------------

    @classmethod
    def build(cls, settings, specs: list[DomainSpec], cfg_dir: str, serving: bool = False) -> "DomainTable":
        """Builds every domain; raises ``TLSConfigError`` listing every problem of every domain.
        ``serving``: for the processes that make connections, which open ``tls_keylog_file``;
        checks only look at it."""
        report = Report()
        labels = [_label(s) for s in specs]
        keylog = None
        if path := getattr(settings, "tls_keylog_file", ""):
            report.label = "tls_keylog_file"
            keylog = open_keylog(path, cfg_dir, report, getattr(settings, "user", ""), create=serving)
            if keylog is not None:
                report.warnings.append(f"tls_keylog_file {keylog.path}: the secrets of every TLS connection are "
                                       f"written there: anyone who can read it can decrypt their traffic "
                                       f"(for debugging only)")

        def make(side: DomainSide, label: str, spec: DomainSpec | None) -> TLSDomain:
            params, optional = domain_params(settings, side, spec)
            params["tls_method"] = as_method(params["tls_method"])
            report.label = f"{spec.pos}: {label}" if spec is not None and spec.pos is not None else label
            context = build_context(side, params, cfg_dir, report, certificate_optional=optional, keylog=keylog)
            client = side is DomainSide.CLIENT
            return TLSDomain(side, label, spec.name if spec else None, spec.socket if spec else None,
                             params.get("tls_server_name") or None, params, context,
                             verify_hostname=client and params["tls_verify_server"] and params["tls_verify_hostname"],
                             match_domain_on_reuse=client and params["tls_match_domain_on_reuse"])

        default_server = make(DomainSide.SERVER, "default server domain", None)
        default_client = make(DomainSide.CLIENT, "default client domain", None)
        server, client = [], []
        for spec in specs:
            label = _label(spec)
            if labels.count(label) > 1 and spec.params.get("tls_server_name"):
                label += f" (tls_server_name {spec.params['tls_server_name']})"
            (server if spec.side is DomainSide.SERVER else client).append(make(spec.side, label, spec))
        # A socket whose blocks all carry a tls_server_name: clients without (or with another) SNI
        # get the global certificate there, from a context of that socket's own, so that its SNI
        # callback chooses among that socket's domains only.
        for key, group in _groups(server).items():
            if all(d.server_name for d in group):
                first = group[0].socket
                spec = DomainSpec(DomainSide.SERVER, first, None, {})
                server.append(make(DomainSide.SERVER, f"default server domain on {first.host}:{first.port}", spec))
        _check_shared_sockets(server, report)
        if report.errors:
            raise TLSConfigError(report.errors)
        return cls(default_server, default_client, server, client, report.warnings)

    # --- lookup -------------------------------------------------------------------------------------

    def server_domain(self, local_ip: str, local_port: int) -> TLSDomain:
        """The domain of an incoming connection on this local socket (before SNI)."""
        group = self._server_groups.get(_socket_key(local_ip, local_port))
        return _primary(group) if group else self.default_server

    def client_domain(self, avp_name: str | None, ip: str, port: int) -> TLSDomain:
        """The domain of a new outgoing connection: by the AVP's name, else by destination, else default."""
        if avp_name is not None and avp_name in self._client_by_name:
            return self._client_by_name[avp_name]
        return self._client_by_socket.get(_socket_key(ip, port), self.default_client)

    def domain_of_connection(self, conn: SSL.Connection) -> TLSDomain | None:
        """The domain a connection is on now (after the handshake: the one SNI chose); None for a
        context this table did not build (the connection began before a tls_reload)."""
        return self._by_context.get(conn.get_context())

    def domains(self) -> list[TLSDomain]:
        return list(self._all)

    def index_of(self, domain: TLSDomain) -> int:
        """A small number naming the domain in the shared connection table (same in every process:
        every table is built from the same config in the same order)."""
        for i, d in enumerate(self._all):
            if d is domain:
                return min(i, 254)
        return 254

    # --- SNI ----------------------------------------------------------------------------------------

    def _install_sni(self, group: list[TLSDomain]) -> None:
        named = [d for d in group if d.server_name]
        if not named:
            return
        if len({tuple(d.params.get(k) for k in CLIENT_CHECKS) for d in group}) > 1:
            for d in group:
                d.context.set_options(SSL.OP_NO_TICKET)
                d.context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            self.warnings.append(f"{', '.join(d.label for d in group)}: TLS sessions are not resumed there "
                                 "(these domains, chosen by SNI, check client certificates differently)")

        def choose(conn: SSL.Connection) -> None:
            sent = conn.get_servername()
            chosen = select_by_server_name(named, sent.decode("ascii", "replace") if sent else "")
            if chosen is None or chosen.context is conn.get_context():
                return
            conn.set_context(chosen.context)
            # SSL_set_SSL_CTX swaps certificate, trust store and client-CA list, not the verify mode:
            conn.set_verify(chosen.context.get_verify_mode(), record_verification)

        for d in group:
            d.context.set_tlsext_servername_callback(choose)


def select_by_server_name(domains: list[TLSDomain], sni: str) -> TLSDomain | None:
    """The domain whose ``tls_server_name`` matches ``sni``: exact (case-insensitive) first, then
    ``*.suffix`` matching exactly one more label."""
    sni = sni.strip().lower().rstrip(".")
    if not sni:
        return None
    for d in domains:
        if d.server_name.lower().rstrip(".") == sni:
            return d
    first, dot, rest = sni.partition(".")
    if first and dot:
        for d in domains:
            pattern = d.server_name.lower().rstrip(".")
            if pattern.startswith("*.") and pattern[2:] == rest:
                return d
    return None


def domain_params(settings, side: DomainSide, spec: DomainSpec | None) -> tuple[dict, bool]:
    """A domain's parameters (the global ones, its block's over them), and whether its
    certificate may be missing: a client needs none of its own, so an untouched default that
    does not exist is fine."""
    params = {name: getattr(settings, name) for name in TLS_PARAMS}
    params.update({name: getattr(settings, name, default) for name, default in EXTRA_PARAMS.items()})
    params.update(spec.params if spec else {})
    written = set(getattr(settings, "explicit", ())) | set(spec.params if spec else ())
    optional = (side is DomainSide.CLIENT and params["tls_certificate"] == DEFAULT_FILE
                and "tls_certificate" not in written)
    return params, optional


def _label(spec: DomainSpec) -> str:
    if spec.side is DomainSide.SERVER and spec.socket is None:      # selected by SNI only
        return f"tls_server_domain[tls_server_name {spec.params.get('tls_server_name', '')}]"
    return spec.label


def _primary(group: list[TLSDomain]) -> TLSDomain:
    """The domain a socket's connections start on: its block without a server name (build() adds
    one, with the global parameters, when the config has none)."""
    return next(d for d in group if not d.server_name)


def _groups(server: list[TLSDomain]) -> dict[tuple[str, int], list[TLSDomain]]:
    groups: dict[tuple[str, int], list[TLSDomain]] = {}
    for d in server:
        if d.socket is not None:
            groups.setdefault(_socket_key(d.socket.host, d.socket.port), []).append(d)
    return groups


def _check_shared_sockets(server: list[TLSDomain], report: Report) -> None:
    for group in _groups(server).values():
        first = group[0]
        names: dict[str, TLSDomain] = {}
        for d in group[1:]:
            report.label = d.label
            for param in SHARED_ON_SOCKET:
                if d.params[param] != first.params[param]:
                    report.error(f"{param} differs from {first.label} on the same socket; OpenSSL settles it "
                                 f"before the SNI name is known, so domains sharing a socket must agree")
        for d in group:
            key = (d.server_name or "").lower()
            if key in names:
                report.label = d.label
                report.error(f"shares its socket and tls_server_name {d.server_name or '(none)'!r} with "
                             f"{names[key].label}")
            names[key] = d


@functools.lru_cache(maxsize=4096)      # asked for every TLS connection; ipaddress is slow
def _socket_key(host: str, port: int) -> tuple[str, int]:
    host = host.strip().strip("[]").lower()
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return host, int(port)
