"""What a configuration reload (SIGHUP) changes in a running pyproxy, and what it cannot.

A reload happens in place, in every process, as OpenSIPS's ``reload_routes`` does: the route
blocks are compiled again and swapped, the TLS domains are built again from the new parameters
and files (new handshakes use them), and the log level follows ``debug``. Connections,
transactions, registrations and nonces stay where they are: nothing a worker holds is lost.

Module parameters that the script's functions read (through their fixups, compiled again) take
effect too. What was set up once at start -- sockets, processes, shared memory, the module
parameters that mod_init or child_init read (``start_params``: databases, tm's timers, usrloc,
auth's secret) -- keeps its old value until the next restart: ``hold_back`` puts the running
value back before the new script is compiled, and names each such change for the log. A different set of modules is refused as a whole: the new
script may call what the old modules do not have.
"""

from __future__ import annotations

import copy

from ..config.errors import ConfigErrors
from ..config.settings import PARAMS

# Applied by a reload: the log level and the TLS parameters (the contexts are built again).
LIVE = {"debug"} | {p.name for p in PARAMS.values() if p.section == "tls"} - {
    "disable_tls", "tls_autogenerate", "tls_keylog_file"}


class Refusal(Exception):
    """Why the config file, read again, cannot replace the running config: ``reason``, and the
    file's errors (file:line:col each; none for a refusal of another kind)."""

    def __init__(self, reason: str, errors: list[str] = ()) -> None:
        super().__init__(reason)
        self.reason, self.errors = reason, list(errors)


def load_new(load, running):
    """The config file read again by ``load`` (the command line's) and checked against
    ``running``; Refusal when a reload would not take it. (The TLS files are left to the caller.)"""
    try:
        new = load(running)
    except ConfigErrors as e:
        raise Refusal(f"{len(e.errors)} error(s) in {running.path}; the running configuration stays",
                      [str(error) for error in e.errors]) from None
    if problem := refused(running, new):
        raise Refusal(problem)
    return new


def refused(old, new) -> str | None:
    """Why ``new`` cannot replace ``old`` in place at all, or None."""
    if set(old.modules) != set(new.modules):
        added, removed = sorted(set(new.modules) - set(old.modules)), sorted(set(old.modules) - set(new.modules))
        change = "; ".join(filter(None, (added and "loads " + ", ".join(added),
                                         removed and "no longer loads " + ", ".join(removed))))
        return f"the new configuration {change}: modules are set up at start; restart pyproxy"
    return None


def hold_back(running, settings, modparams: dict) -> list[str]:
    """Before a reload's script is compiled: the values that cannot change without a restart put
    back to the running ones (so the script, whose fixups read them, matches what the processes
    hold); the changes so held back, one line each, for the log."""
    held = []
    for name in PARAMS:
        old, new = getattr(running.settings, name), getattr(settings, name)
        if name not in LIVE and old != new:
            held.append(f"{name} ({_show(old)} -> {_show(new)})")
            setattr(settings, name, copy.copy(old))
    for module, params in modparams.items():
        if module not in running.modules:
            continue            # refused() says it
        for param in running.modules[module].start_params:
            old = running.modparams[module][param]
            if params[param] != old:
                held.append(f'modparam("{module}", "{param}") ({old!r} -> {params[param]!r})')
                params[param] = old
    return held


def apply(old, new) -> None:
    """Make ``old`` -- the object every part of this process holds -- what ``new`` says. ``new``
    was loaded against ``old`` (``hold_back``): what may not change already has its old value."""
    old.script.routes = new.script.routes
    old.script.source = new.script.source
    old.tls_domains[:] = new.tls_domains
    for module, params in new.modparams.items():
        old.modparams[module].update(params)
    for name in PARAMS:
        setattr(old.settings, name, getattr(new.settings, name))
    old.digest = new.digest


def _show(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)
