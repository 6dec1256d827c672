"""Which hosts and ports are this proxy ("myself" in the script).

Every listen address, every alias (on any port when it names none, as in OpenSER), and the
host's own names: for sockets bound to every address, all of them (names and addresses); for a
socket bound to one address, the host's names that resolve to it (``localhost`` for a loopback
address), as OpenSER's automatic aliases did. A port of ``None`` means "any of our ports"
(``src_ip==myself``).
"""

from __future__ import annotations

import socket

from .config.values import SocketSpec


def _norm(host: str) -> str:
    host = host.lower().rstrip(".")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class Myself:
    def __init__(self, sockets: list[SocketSpec], aliases: list[SocketSpec] = (), default_port: int = 5060):
        self.ports: dict[str, set[int]] = {}
        self.normalized: dict[str, str] = {}    # host as written -> _norm(host), for the hosts asked most
        wildcard_ports = set()
        for s in sockets:
            port = s.port or (s.proto.default_port if s.proto else default_port)
            if s.host in ("*", "0.0.0.0", "[::]", "::"):
                wildcard_ports.add(port)
            else:
                self.ports.setdefault(_norm(s.host), set()).add(port)
        names = _local_names()
        for host in names if wildcard_ports else ():
            self.ports.setdefault(host, set()).update(wildcard_ports)
        for ip, ports in list(self.ports.items()):
            for name in names.get(ip, ()):
                self.ports.setdefault(name, set()).update(ports)
        # an alias without a port is this proxy on any port, as in OpenSER: the domain of
        # sip:alice@example.com, whose DNS SRV records may name any port, is ours
        self.any_port = {_norm(a.host) for a in aliases if not a.port}
        for a in aliases:
            if a.port:
                self.ports.setdefault(_norm(a.host), set()).add(a.port)

    def __call__(self, host: str, port: int | None = None, proto=None) -> bool:
        name = self.normalized.get(host)     # (asked of every reply's top Via)
        if name is None:
            name = _norm(host)
            if len(self.normalized) < 1024:
                self.normalized[host] = name
        if name in self.any_port:
            return True
        ports = self.ports.get(name)
        if ports is None:
            return False
        return port is None or port in ports


def _local_names() -> dict[str, set[str]]:
    """The host's names and addresses, each address with the names that resolve to it."""
    names = {"127.0.0.1": {"localhost"}, "::1": {"localhost"}, "localhost": set()}
    try:
        hostname = socket.gethostname().lower()
        for name in {hostname, socket.getfqdn().lower()}:
            names.setdefault(name, set())
            for info in socket.getaddrinfo(name, None):
                names.setdefault(_norm(info[4][0]), set()).add(name)
    except OSError:
        pass
    return names
