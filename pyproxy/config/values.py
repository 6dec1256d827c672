"""Value types of config parameters: each turns a written ``Value`` into what pyproxy uses.

A type is a small callable object with a ``describe`` text (what is expected, used in error
messages and in the generated parameter reference). Converting raises ``ValueError`` whose text
says what was expected; the caller adds the position.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import os
import re
from dataclasses import dataclass

from .ast import Value, ValueKind

_TRUE = frozenset({"yes", "on", "true", "1", "enable", "enabled"})
_FALSE = frozenset({"no", "off", "false", "0", "disable", "disabled"})


class Bool:
    describe = "yes/no, on/off, 1/0"

    def __call__(self, v: Value) -> bool:
        word = v.text.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"expected {self.describe}, found {v.describe()}")


@dataclass(frozen=True)
class Int:
    low: int | None = None
    high: int | None = None

    @property
    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"a number from {self.low} to {self.high}"
        if self.low is not None:
            return f"a number >= {self.low}"
        return "a number"

    def __call__(self, v: Value) -> int:
        number = v.number
        if number is None and v.kind is ValueKind.STRING:
            try:
                number = int(v.text)
            except ValueError:
                pass
        if number is None:
            raise ValueError(f"expected {self.describe}, found {v.describe()}")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise ValueError(f"expected {self.describe}, found {number}")
        return number


class Str:
    describe = "a string"

    def __call__(self, v: Value) -> str:
        return v.text


@dataclass(frozen=True)
class Choice:
    choices: tuple[str, ...]

    @property
    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)

    def __call__(self, v: Value) -> str:
        for choice in self.choices:
            if v.text.lower() == choice.lower():
                return choice
        raise ValueError(f"expected {self.describe}, found {v.describe()}")


class Proto(enum.Enum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    def __init__(self, text: str) -> None:
        # Plain attributes: Enum's .name and .value are Python-level descriptors, and a
        # forwarded message reads these several times.
        self.text = text                        # "udp", as in a URI's transport parameter
        self.token = text.upper()               # "UDP", as in a Via
        self.default_port = 5061 if text == "tls" else 5060

    # Members are singletons compared by identity; Enum's own __hash__ (hash of the name) is a
    # Python function called on every dict lookup keyed by a Proto.
    __hash__ = object.__hash__


# The members as module globals, for the per-message path: ``Proto.UDP`` is an attribute read
# through Enum's metaclass, several times slower than a global.
UDP, TCP, TLS = Proto.UDP, Proto.TCP, Proto.TLS


@dataclass(frozen=True, slots=True)
class SocketSpec:
    """``[proto:]host[:port]`` as written in listen= or -l; proto/port None where not given."""
    proto: Proto | None
    host: str
    port: int | None

    def __str__(self) -> str:
        text = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.proto.text}:{text}" if self.proto else text


# host: an IPv4 address, an IPv6 reference in brackets, a host name, or '*' (every address)
_HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9_\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9])?\.?")


def parse_host_port(text: str, *, allow_proto: bool) -> SocketSpec:
    proto = None
    head, sep, rest = text.partition(":")
    if allow_proto and sep and head.lower() in ("udp", "tcp", "tls"):
        proto, text = Proto(head.lower()), rest
    elif sep and head.lower() in ("sctp", "ws", "wss"):
        raise ValueError(f"protocol '{head}' is not supported: expected udp, tcp or tls")
    port = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"IPv6 reference {text!r} has no closing ']'")
        host, after = text[:end + 1], text[end + 1:]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host} is not an IPv6 address") from None
        if after:
            if not after.startswith(":"):
                raise ValueError(f"expected ':PORT' after {host}, found {after!r}")
            port = _port(after[1:])
    else:
        host, sep, port_text = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        if not sep:
            host = text
        else:
            port = _port(port_text)
        if host != "*" and not _HOSTNAME.fullmatch(host):
            raise ValueError(f"expected an IP address or host name, found {host!r}")
        if re.fullmatch(r"[\d.]+", host):     # all digits and dots: an address, or a mistake
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{host} is not an IPv4 address") from None
    return SocketSpec(proto, host, port)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, found {text!r}")
    return int(text)


class Socket:
    describe = "[proto:]address[:port], proto one of udp, tcp, tls"

    def __call__(self, v: Value) -> SocketSpec:
        return parse_host_port(v.text, allow_proto=True)


class HostPort:
    describe = "host[:port]"

    def __call__(self, v: Value) -> SocketSpec:
        return parse_host_port(v.text, allow_proto=False)


class AddressPort:
    describe = "address[:port] (an IP address: DNS servers cannot be found by name)"

    def __call__(self, v: Value) -> SocketSpec:
        spec = parse_host_port(v.text, allow_proto=False)
        try:
            ipaddress.ip_address(spec.host.strip("[]"))
        except ValueError:
            raise ValueError(f"expected an IP address, found {spec.host!r}") from None
        return SocketSpec(None, spec.host.strip("[]"), spec.port)


class ListenAddress:
    describe = "address:port (an IP address, IPv6 in brackets)"

    def __call__(self, v: Value) -> SocketSpec:
        spec = AddressPort()(v)
        if spec.port is None:
            raise ValueError(f"expected {self.describe}, found {v.describe()}: the port is missing")
        return spec


_FACILITIES = ("LOG_AUTH", "LOG_AUTHPRIV", "LOG_CRON", "LOG_DAEMON", "LOG_FTP", "LOG_KERN", "LOG_LPR",
               "LOG_MAIL", "LOG_NEWS", "LOG_SYSLOG", "LOG_USER", "LOG_UUCP",
               *(f"LOG_LOCAL{i}" for i in range(8)))
LogFacility = Choice(_FACILITIES)


# OpenSER's log levels (debug=, xlog()) on Python's logging.
NOTICE = 25     # OpenSER's L_NOTICE sits between Python's INFO and WARNING
_OPENSER_LEVELS = {-3: logging.CRITICAL, -2: logging.CRITICAL, -1: logging.ERROR, 0: logging.WARNING,
                   1: logging.WARNING, 2: NOTICE, 3: logging.INFO, 4: logging.DEBUG}


def log_level(openser_level: int) -> int:
    return _OPENSER_LEVELS.get(openser_level, logging.DEBUG)


def config_path(value: str, cfg_dir: str) -> str:
    """A file named in the config: ``CFG_DIR/x`` and relative paths are in the config's folder."""
    if value.startswith("CFG_DIR/"):
        value = value[len("CFG_DIR/"):]
    return value if os.path.isabs(value) else os.path.join(cfg_dir, value)


SYSTEM_STATE_DIR = "/var/lib/pyproxy"


def state_dir(setting: str, cfg_dir: str, environ=os.environ) -> str:
    """Where pyproxy writes its own files (state_dir=): a config in /etc is read-only to the
    service (systemd's ProtectSystem=strict), so its state goes where systemd's StateDirectory=
    says, or to /var/lib/pyproxy (the FHS place); a config elsewhere (a clone, a test) keeps its
    state beside it."""
    if setting:
        return config_path(setting, cfg_dir)
    if environ.get("STATE_DIRECTORY"):
        return environ["STATE_DIRECTORY"].split(":")[0]
    return SYSTEM_STATE_DIR if (cfg_dir.rstrip("/") + "/").startswith("/etc/") else cfg_dir
