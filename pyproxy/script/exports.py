"""How the core and modules declare what a script may use: parameters, functions, init hooks.

Exports are data. The script compiler checks every call against them when the config loads
(name, number of arguments, argument types through the fix-up, the route types it may be called
from), so a running worker never meets an unknown function or a malformed argument.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config.ast import RouteKind


class RouteType(enum.Flag):
    REQUEST = enum.auto()
    ONREPLY = enum.auto()
    FAILURE = enum.auto()
    BRANCH = enum.auto()
    ANY = REQUEST | ONREPLY | FAILURE | BRANCH
    REQUEST_LIKE = REQUEST | FAILURE | BRANCH


ROUTE_TYPE_OF = {RouteKind.REQUEST: RouteType.REQUEST, RouteKind.ONREPLY: RouteType.ONREPLY,
                 RouteKind.FAILURE: RouteType.FAILURE, RouteKind.BRANCH: RouteType.BRANCH}


class ModuleInitError(Exception):
    """A module cannot start (its database is unreachable, a file cannot be made): the master
    stops with this text."""


class FixupError(ValueError):
    """An argument that cannot work; the text says what was expected. Optionally which argument."""

    def __init__(self, message: str, arg_index: int | None = None):
        super().__init__(message)
        self.arg_index = arg_index


@dataclass(frozen=True)
class Function:
    """A script function: ``impl(ctx, *fixed_args) -> int`` (OpenSER return rules).

    ``arities`` lists the accepted argument counts. ``fixup`` turns the written arguments
    (``Value``/``PVar`` nodes) into what ``impl`` takes, once at load time, raising FixupError;
    without one, arguments are passed as their text.
    """
    name: str
    impl: Callable[..., int]
    arities: tuple[int, ...]
    doc: str
    fixup: Callable[[tuple, "LoadEnv"], tuple] | None = None
    route_types: RouteType = RouteType.ANY


@dataclass(frozen=True)
class ModParam:
    name: str
    type: type            # int or str
    default: Any
    doc: str
    low: int | None = None      # bounds of a number
    high: int | None = None
    check: Callable[[str], None] | None = None     # a string's check: ValueError says what is expected


@dataclass(frozen=True)
class ModuleExports:
    name: str
    doc: str
    params: tuple[ModParam, ...] = ()
    functions: tuple[Function, ...] = ()
    depends: tuple[str, ...] = ()
    per_call_state: bool = False    # keeps state per call/transaction: needs call affinity
    # parameters read once, by mod_init or child_init: a reload (SIGHUP) leaves them as they were;
    # the others are read by the functions' fixups, which a reload runs again
    start_params: tuple[str, ...] = ()
    # mod_init(config) runs in the master before fork (ModuleInitError stops the start);
    # child_init(index, runtime, config) in each worker after it, and may return the MessageHooks
    # the worker is to call; mod_destroy(config) in the master once the children have stopped
    mod_init: Callable | None = None
    child_init: Callable | None = None
    mod_destroy: Callable | None = None


@dataclass(frozen=True)
class MessageHooks:
    """What a module that keeps per-call state plugs into the worker's message path."""
    request: Callable           # (ctx) -> True when it took the request (the script does not run)
    after_request: Callable     # (ctx) after the script ran on a request (even one that failed)
    reply: Callable             # (ctx) -> True when it took the reply (it is not forwarded by Via)


@dataclass
class LoadEnv:
    """What a fix-up may consult while the script loads: settings and the modules' parameters."""
    settings: Any
    modparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    routes: set = field(default_factory=set)    # (RouteKind, name) of every route block
