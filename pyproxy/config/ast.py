"""The syntax tree of a config: what the parser builds and the checker and compiler read.

Nodes are plain frozen dataclasses; every node has the position it was written at.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import Position


class ValueKind(enum.Enum):
    NUMBER = "number"
    STRING = "string"
    WORD = "word"        # unquoted text glued from adjacent tokens: yes, tlsv1, udp:1.2.3.4:5060


@dataclass(frozen=True, slots=True)
class Value:
    kind: ValueKind
    text: str                   # the word or string as written (strings decoded)
    pos: Position
    number: int | None = None   # set for NUMBER

    def describe(self) -> str:
        return f'"{self.text}"' if self.kind is ValueKind.STRING else self.text


@dataclass(frozen=True, slots=True)
class PVar:
    """A pseudo-variable reference such as ``$ru`` or ``$avp(i:400)``."""
    name: str                   # 'ru', 'avp'
    arg: str | None             # 'i:400' for $avp(i:400)
    pos: Position

    @property
    def text(self) -> str:
        return f"${self.name}" if self.arg is None else f"${self.name}({self.arg})"


# --- top level -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Assign:
    """``name = value`` for a core or TLS parameter."""
    name: str
    value: Value
    pos: Position


@dataclass(frozen=True, slots=True)
class LoadModule:
    path: str
    pos: Position


@dataclass(frozen=True, slots=True)
class ModParam:
    module: Value
    param: Value
    value: Value
    pos: Position


class DomainSide(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class TLSDomain:
    """``tls_server_domain[IP:PORT] {...}`` or ``tls_client_domain["name"|IP:PORT] {...}``."""
    side: DomainSide
    selector: Value             # WORD: a socket "ip:port"; STRING: a client domain name
    params: tuple[Assign, ...]
    pos: Position


def route_name(text: str) -> str:
    """How route blocks are keyed: a number by its value (route[01] is route(1), route[0x2] is
    route(2)), a name as written."""
    if text.isdigit():
        return str(int(text))
    if text[:2].lower() == "0x" and len(text) > 2 and all(c in "0123456789abcdefABCDEF" for c in text[2:]):
        return str(int(text, 16))
    return text


class RouteKind(enum.Enum):
    REQUEST = "route"
    ONREPLY = "onreply_route"
    FAILURE = "failure_route"
    BRANCH = "branch_route"


@dataclass(frozen=True, slots=True)
class RouteBlock:
    kind: RouteKind
    name: str                   # "0"/"" for the main route{}; the N of route[N]
    body: tuple
    pos: Position


# --- statements --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class If:
    cond: object
    then: tuple
    orelse: tuple | None
    pos: Position


@dataclass(frozen=True, slots=True)
class Call:
    """A function call, as a statement or inside a condition."""
    name: str
    args: tuple                 # of Value | PVar
    pos: Position


class Stop(enum.Enum):
    BREAK = "break"
    EXIT = "exit"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Control:
    """``break``, ``exit`` or ``drop``."""
    what: Stop
    pos: Position


@dataclass(frozen=True, slots=True)
class Return:
    value: int
    pos: Position


@dataclass(frozen=True, slots=True)
class RouteCall:
    target: str
    pos: Position


@dataclass(frozen=True, slots=True)
class SetPV:
    """``$ru = "sip:..."``, ``$avp(i:1) = $fd``."""
    target: PVar
    value: object               # Value | PVar
    pos: Position


# --- conditions --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Not:
    expr: object
    pos: Position


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str                     # '&&' or '||'
    left: object
    right: object
    pos: Position


@dataclass(frozen=True, slots=True)
class Keyword:
    """A message property on the left of a comparison: method, uri, src_ip, proto..."""
    name: str
    pos: Position


@dataclass(frozen=True, slots=True)
class Myself:
    pos: Position


@dataclass(frozen=True, slots=True)
class Compare:
    left: object                # Keyword | PVar
    op: str                     # == != =~ !~ > < >= <=
    right: object               # Value | PVar | Myself
    pos: Position


@dataclass(frozen=True, slots=True)
class Config:
    file: str
    items: tuple = field(default=())
    included: tuple = field(default=())     # (path, text) of every include_file, in order
