"""The registry of global parameters: name, type, default, documentation.

Every ``name = value`` at the top of a config resolves against this table; an unknown name is an
error with its position. TLS parameters carry a scope saying whether they may also appear inside a
``tls_server_domain``/``tls_client_domain`` block. The README's parameter reference is generated
from this table (``python -m pyproxy.config.settings``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable

from .ast import Assign, DomainSide
from .errors import ErrorList, Position
from .tlsmethod import TLSMethodType, deprecation_warning
from .values import AddressPort, Bool, Choice, HostPort, Int, ListenAddress, LogFacility, Socket, SocketSpec, Str


class Scope(enum.Flag):
    GLOBAL = enum.auto()
    SERVER_DOMAIN = enum.auto()
    CLIENT_DOMAIN = enum.auto()
    DOMAIN = SERVER_DOMAIN | CLIENT_DOMAIN
    ANYWHERE = GLOBAL | SERVER_DOMAIN | CLIENT_DOMAIN


@dataclass(frozen=True)
class Param:
    name: str
    type: Callable
    default: Any
    doc: str
    section: str = "core"
    repeat: bool = False                   # listen=, alias=: every assignment adds one
    scope: Scope = Scope.GLOBAL
    warn: Callable[[Any], str | None] | None = None   # a warning to print for an accepted value


_NO_EFFECT = ("{} = yes has no effect: pyproxy adds received= whenever the top Via's host is not the "
              "source address, without DNS lookups (see README)")


def _params(section: str, *params: Param) -> list[Param]:
    return [Param(p.name, p.type, p.default, p.doc, section, p.repeat, p.scope, p.warn) for p in params]


CORE = _params(
    "core",
    Param("debug", Int(-3, 9), 2,
          "Log level: -3 alert, -2 critical, -1 error, 1 warning, 2 notice, 3 info, 4 and above debug."),
    Param("fork", Bool(), True,
          "yes: a master process forks the workers and the TCP supervisor; no: one process does "
          "everything (debugging)."),
    Param("log_stderror", Bool(), False, "Log to standard error instead of syslog (also -E)."),
    Param("log_facility", LogFacility, "LOG_DAEMON", "Syslog facility for log lines."),
    Param("listen", Socket(), (),
          "A socket to listen on, [proto:]addr[:port]; repeat for more. Without any, pyproxy listens on "
          "127.0.0.1 with UDP and TCP on 'port'.", repeat=True),
    Param("port", Int(1, 65535), 5060, "Default port for listen entries without one."),
    Param("alias", HostPort(), (),
          "Another name of this proxy, host[:port], so that 'myself' matches it; repeat for more.",
          repeat=True),
    Param("children", Int(1, 1024), 8, "Number of worker processes (also -n)."),
    Param("call_affinity", Choice(("auto", "yes", "no")), "auto",
          "yes: every message of a call is processed by worker crc32(Call-ID) % children (a worker "
          "that reads a message of another worker's call hands it over), which transaction state "
          "needs; no: the worker that reads a message processes it; auto: yes when a loaded module "
          "keeps per-call state, no for stateless scripts (the hand-off costs CPU for nothing)."),
    Param("tcp_children", Int(0, 1024), 0,
          "Accepted for compatibility: TCP/TLS connections are served by the same workers as UDP "
          "(0 = children)."),
    Param("check_via", Bool(), False,
          "Accepted for compatibility: pyproxy always checks that the top Via of a reply names it and "
          "drops the reply otherwise (OpenSER's check_via=1)."),
    Param("dns", Bool(), False,
          "Accepted for compatibility, no effect: received= is added whenever the top Via's host is not "
          "the source address (as with dns=no; RFC 3261 18.2.1 allows it), never after a DNS lookup "
          "per request.", warn=lambda on: _NO_EFFECT.format("dns") if on else None),
    Param("rev_dns", Bool(), False,
          "Accepted for compatibility, no effect, as dns.",
          warn=lambda on: _NO_EFFECT.format("rev_dns") if on else None),
    Param("mhomed", Bool(), False,
          "With several UDP sockets, send from the one bound to the address the kernel routes the "
          "destination by. Without it, as in OpenSER, a UDP message leaves from the socket it came "
          "in on when that has the destination's address family, else from the first socket of "
          "that family, else from the first. For a host name the socket is chosen once DNS has "
          "answered for it. A socket bound to every address (0.0.0.0, ::) always names the "
          "kernel's source address in its Via. TCP and TLS connections are opened from the "
          "address the kernel chooses."),
    Param("dns_server", AddressPort(), (),
          "A DNS server pyproxy asks (RFC 3263: SRV, then A/AAAA), address[:port]; repeat for more, "
          "asked in order when one does not answer. Without any, the servers of /etc/resolv.conf.",
          repeat=True),
    Param("disable_tcp", Bool(), False, "Do not listen on or open TCP connections."),
    Param("tcp_connection_lifetime", Int(1), 120, "Seconds an idle TCP/TLS connection is kept open."),
    Param("tcp_max_connections", Int(1), 2048, "Most TCP/TLS connections open at once."),
    Param("tcp_send_timeout", Int(1), 10, "Seconds a TCP send may wait for a peer that does not read."),
    Param("fifo", Str(), "", "Path of the management FIFO (OpenSER's text protocol); empty: none."),
    Param("fifo_mode", Int(0, 0o777), 0o600, "Permissions of the FIFO, octal (0600)."),
    Param("fifo_dir", Str(), "/tmp", "Folder of the reply FIFOs named in FIFO requests."),
    Param("mi_socket", Str(), "",
          "Path of the management Unix socket (JSON-RPC 2.0; `pyproxyctl mi`); empty: none."),
    Param("mi_socket_mode", Int(0, 0o777), 0o600, "Permissions of the management socket, octal."),
    Param("metrics_listen", ListenAddress(), None,
          "Serve Prometheus metrics (GET /metrics, plain HTTP) on this TCP address:port, e.g. "
          "127.0.0.1:9090, from the mi process; unset: none. Anyone who reaches it reads them."),
    Param("user", Str(), "", "Drop privileges to this user after binding the sockets (also -u)."),
    Param("group", Str(), "", "Drop privileges to this group after binding the sockets (also -g)."),
    Param("server_signature", Bool(), True,
          "Add a Server header to replies pyproxy makes, and a Warning with sip_warning."),
    Param("server_header", Str(), "Server: pyproxy", "The Server header added with server_signature."),
    Param("user_agent_header", Str(), "User-Agent: pyproxy",
          "The User-Agent header of requests pyproxy makes itself."),
    Param("sip_warning", Bool(), False,
          "Add OpenSER's Warning header (392: the proxy's address and pid, the request's source, URIs "
          "and Via count) to the replies sl makes; for debugging, as it shows internals to the world."),
    Param("max_message_size", Int(1024, 1 << 20), 65536,
          "Largest SIP message accepted, in bytes; larger ones are answered 513."),
    Param("reply_to_via", Bool(), False,
          "Send stateless replies to the top Via's address instead of the request's source."),
    Param("mpath", Str(), "", "Accepted for compatibility: modules are Python packages, found by name."),
    Param("wdir", Str(), "", "Working directory of the processes after start (empty: where pyproxy was "
          "started)."),
    Param("disable_core_dump", Bool(), False, "Accepted for compatibility (Python processes)."),
    Param("open_files_limit", Int(0), 0,
          "Raise the open file limit to this many at start (0: leave it); above the hard limit "
          "only as root."),
    Param("heartbeat_timeout", Int(0, 3600), 10,
          "Seconds a worker's loop may stay without turning (a script stuck in a regex, SIGSTOP, a "
          "blocking call) before the master logs what it was doing, kills it and starts another; "
          "0: never. The systemd watchdog is fed only while every worker's loop turned within its "
          "last three beats (a beat each second, or each quarter of this time when shorter)."),
    Param("state_dir", Str(), "",
          "Where pyproxy writes its files (tls_autogenerate's certificates, SQLite databases named "
          "by a relative path). Empty: $STATE_DIRECTORY when systemd sets it, /var/lib/pyproxy for "
          "a config under /etc, else the config's folder."),
)

TLS = _params(
    "tls",
    Param("disable_tls", Bool(), True,
          "Disables TLS: no TLS listener, no outgoing TLS. Default 1 as in OpenSER; the shipped "
          "pyproxy.cfg enables TLS."),
    Param("tls_port_no", Int(1, 65535), 5061, "Default port of listen=tls: entries without one."),
    Param("tls_method", TLSMethodType(), "SSLv23",
          "Protocol versions: SSLv23 negotiates TLS 1.2 or 1.3 (the default); TLSv1, TLSv1_1 (deprecated, "
          "RFC 8996: a warning at start), TLSv1_2, TLSv1_3, or a range TLSv1_2+ / TLSv1_2-TLSv1_3. SSLv2 and "
          "SSLv3 are refused.", scope=Scope.ANYWHERE, warn=deprecation_warning),
    Param("tls_certificate", Str(), "CFG_DIR/cert.pem",
          "Certificate (PEM, chain allowed) presented to peers.", scope=Scope.ANYWHERE),
    Param("tls_private_key", Str(), "CFG_DIR/cert.pem",
          "Private key of the certificate (PEM, unencrypted, not readable by group or others).",
          scope=Scope.ANYWHERE),
    Param("tls_ca_list", Str(), "", "File of trusted CA certificates (PEM).", scope=Scope.ANYWHERE),
    Param("tls_ca_path", Str(), "", "Directory of trusted CA certificates (c_rehash layout).",
          scope=Scope.ANYWHERE),
    Param("tls_crl", Str(), "", "Certificate revocation list file (PEM).", scope=Scope.ANYWHERE),
    Param("tls_ciphers_list", Str(), "",
          "OpenSSL cipher string for TLS 1.2 and older; empty: ECDHE with AEAD ciphers (Mozilla "
          "intermediate).", scope=Scope.ANYWHERE),
    Param("tls_ciphersuites", Str(), "", "TLS 1.3 cipher suites; empty: OpenSSL's defaults.",
          scope=Scope.ANYWHERE),
    Param("tls_groups", Str(), "",
          "Key-exchange groups (OpenSSL groups list, most preferred first, e.g. X25519:prime256v1:secp384r1); "
          "empty: X25519, prime256v1 and secp384r1 (Mozilla intermediate).", scope=Scope.ANYWHERE),
    Param("tls_verify_client", Bool(), True,
          "Server side: ask the client for a certificate and verify it (SSL_VERIFY_PEER).",
          scope=Scope.GLOBAL | Scope.SERVER_DOMAIN),
    Param("tls_require_client_certificate", Bool(), True,
          "Server side, with tls_verify_client: refuse clients without a certificate "
          "(SSL_VERIFY_FAIL_IF_NO_PEER_CERT).", scope=Scope.GLOBAL | Scope.SERVER_DOMAIN),
    Param("tls_verify_server", Bool(), True,
          "Client side: verify the server's certificate and close the connection if it fails.",
          scope=Scope.GLOBAL | Scope.CLIENT_DOMAIN),
    Param("tls_verify", Bool(), None,
          "Old spelling (OpenSER's TLS manual, Example 1-14): sets both tls_verify_client and "
          "tls_verify_server."),
    Param("tls_verify_hostname", Bool(), True,
          "Client side, with tls_verify_server: the certificate must name the target (RFC 5922).",
          scope=Scope.GLOBAL | Scope.CLIENT_DOMAIN),
    Param("tls_verify_depth", Int(0, 100), 9, "Longest certificate chain accepted.", scope=Scope.ANYWHERE),
    Param("tls_server_name", Str(), "",
          "Server domain: the SNI name (or a ``*.example.com`` wildcard) that selects this domain's certificate; client "
          "domain: the SNI name sent.", scope=Scope.DOMAIN),
    Param("tls_match_domain_on_reuse", Bool(), False,
          "Client domain: reuse an existing connection only if it was opened with this domain.",
          scope=Scope.GLOBAL | Scope.CLIENT_DOMAIN),
    Param("tls_handshake_timeout", Int(1), 30, "Seconds a TLS handshake may take."),
    Param("tls_send_timeout", Int(1), 30, "Seconds a TLS send may wait for a peer that does not read."),
    Param("tls_client_domain_avp", Int(0), 0,
          "Integer AVP whose value names the TLS client domain of a new connection; 0: off."),
    Param("tls_allow_loose_key_permissions", Bool(), False,
          "Accept a private key file that group or others can read (refused by default: the key "
          "must be kept with tight permissions).", scope=Scope.ANYWHERE),
    Param("tls_autogenerate", Bool(), False,
          "At start, create a throw-away CA and server certificate when tls_certificate and "
          "tls_private_key do not exist (never over existing files)."),
    Param("tls_keylog_file", Str(), "",
          "For debugging: append the secrets of every TLS connection to this file (a relative path is in "
          "the state folder, state_dir; NSS key log format, as SSLKEYLOGFILE; created with mode 0600, "
          "refused when another user owns it) so that Wireshark can decrypt a capture; anyone who reads "
          "the file can. Empty: off. Takes effect at a restart, not at a reload."),
)

PARAMS: dict[str, Param] = {p.name: p for p in CORE + TLS}


class Settings:
    """The resolved global parameters, as attributes (``settings.children``)."""

    def __init__(self) -> None:
        for p in PARAMS.values():
            setattr(self, p.name, list(p.default) if p.repeat else p.default)
        self.explicit: set[str] = set()    # names the config assigned

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{n}={getattr(self, n)!r}' for n in PARAMS)})"


def resolve(assigns: list[Assign], errors: ErrorList, warnings: list) -> Settings:
    settings = Settings()
    for a in assigns:
        param = PARAMS.get(a.name)
        if param is None:
            errors.add(a.pos, f"unknown parameter '{a.name}'{_did_you_mean(a.name)}")
            continue
        value = convert(param, a, errors, warnings)
        if value is None and param.default is not None:
            continue
        if param.repeat:
            getattr(settings, param.name).append(value)
        else:
            setattr(settings, param.name, value)
        settings.explicit.add(param.name)
    if settings.tls_verify is not None:
        for name in ("tls_verify_client", "tls_verify_server"):
            if name not in settings.explicit:
                setattr(settings, name, settings.tls_verify)
    return settings


def convert(param: Param, a: Assign, errors: ErrorList, warnings: list):
    try:
        value = param.type(a.value)
    except ValueError as e:
        errors.add(a.value.pos, f"{a.name}: {e}")
        return None
    if param.warn and (text := param.warn(value)):
        warnings.append((a.pos, text))
    return value


def _did_you_mean(name: str) -> str:
    import difflib
    close = difflib.get_close_matches(name, PARAMS, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def reference_rst() -> str:
    """The parameter reference section of README.rst, generated from the registry."""
    out = []
    for section, title in (("core", "Core parameters"), ("tls", "TLS parameters")):
        out += [title, "-" * len(title), ""]
        for p in PARAMS.values():
            if p.section != section:
                continue
            default = _show_default(p)
            where = " (also in TLS domain blocks)" if p.scope & Scope.DOMAIN else ""
            out += [f"``{p.name}`` = {p.type.describe}; default {default}{where}",
                    f"    {p.doc}", ""]
    return "\n".join(out)


def _show_default(p: Param) -> str:
    if p.repeat:
        return "none"
    if p.default is None:
        return "unset"
    if isinstance(p.default, bool):
        return "yes" if p.default else "no"
    if p.name.endswith("_mode"):
        return f"0{p.default:o}"
    if p.default == "":
        return '""'
    return f"``{p.default}``"


if __name__ == "__main__":
    print(reference_rst())


@dataclass
class DomainSpec:
    """A tls_server_domain / tls_client_domain block: its selector and what it sets itself."""
    side: DomainSide
    socket: SocketSpec | None        # server domains, and socket-based client domains
    name: str | None                 # name-based client domains
    params: dict = field(default_factory=dict)
    pos: Position | None = None

    @property
    def label(self) -> str:
        selector = f'"{self.name}"' if self.name is not None else f"{self.socket.host}:{self.socket.port}"
        return f"tls_{self.side.value}_domain[{selector}]"

    @property
    def key(self) -> tuple:
        """What must be unique: server domains may share a socket when their SNI names differ."""
        return self.label, str(self.params.get("tls_server_name", "")).lower()
