"""What a compiled script is at run time: route blocks as Python functions, and the rules of
OpenSER's return values.

A function returns an int: positive is true, negative false, and 0 ends the script (OpenSER).
``exit`` and ``drop`` end it too; ``break`` leaves the current route block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..config.ast import RouteKind


class ScriptExit(Exception):
    """Raised to end the whole script: exit, drop, or a function that returned 0."""


# One instance, raised again and again. Raising an instance that still holds a traceback would
# chain the new frames onto the old ones (and keep every message alive), so it is raised bare.
_EXIT = ScriptExit()


def truth(result: int) -> bool:
    """A function's result used as a condition."""
    if result > 0:
        return True
    if result < 0:
        return False
    raise _EXIT.with_traceback(None)


def end_script():
    raise _EXIT.with_traceback(None)


@dataclass
class Script:
    """The compiled route blocks of a config, keyed by (kind, name)."""
    routes: dict[tuple[RouteKind, str], Callable] = field(default_factory=dict)
    source: str = ""            # the generated Python, for `pyproxy -c -dd` and debugging

    def has(self, kind: RouteKind, name: str = "0") -> bool:
        return (kind, name) in self.routes

    def run(self, kind: RouteKind, name: str, ctx) -> int:
        """Run one route block on a message; returns its result (0 when the script was ended)."""
        route = self.routes.get((kind, name))
        return 1 if route is None else self.call(route, ctx)

    def call(self, route: Callable, ctx) -> int:
        """Run the compiled block ``route`` (one of ``routes``) on a message, as run() does."""
        try:
            return route(ctx)
        except ScriptExit as e:
            e.__traceback__ = None      # let the message's frames go now
            return 0
        except RecursionError:          # route(N) calling itself: OpenSER stopped at 100 levels
            ctx.runtime.log(40, f"route blocks called each other too deep (a route that calls itself?); "
                                f"the script ended for this {getattr(ctx.msg, 'method', 'reply')}")
            return 0

    def run_request(self, ctx) -> int:
        return self.run(RouteKind.REQUEST, "0", ctx)
