"""usrloc: the location service, the bindings of addresses of record to contacts that the
registrar module saves and looks up (OpenSER's usrloc). store.py says where they live per
``db_mode``; this file is the module: its parameters, and its part in the master and workers.
"""

from __future__ import annotations

import logging
import os
import time

from ...db import DEFAULT_URL, DatabaseError, check_url, hand_over, hand_over_files, module_url, parse_url
from ...script.exports import ModParam, ModuleExports, ModuleInitError
from . import store
from .store import Binding, Location

__all__ = ["Binding", "Location", "aor_of", "location"]

_cache_path: str | None = None      # the shared file the master made (inherited by the workers)
_claim: int | None = None           # the descriptor that says the shared file is in use (store.claim)
_location: Location | None = None   # this process's


def location() -> Location:
    """This worker's Location (the registrar's and management commands' way in)."""
    if _location is None:
        raise DatabaseError("usrloc is not started in this process")
    return _location


def aor_of(uri, use_domain: bool) -> tuple[str, str]:
    """The key of an address of record: (user, domain) -- domain "" without use_domain."""
    user = uri.user or ""
    return (user, uri.host.lower()) if use_domain else (user, "")


def _params(config) -> dict:
    return config.modparams.get("usrloc", {})


def db_url_of(config) -> str:
    return module_url(config, "usrloc")


def mod_init(config) -> None:
    global _cache_path, _claim
    params = _params(config)
    mode = params["db_mode"]
    _cache_path = store.new_cache_path() if mode != 3 else None
    url = db_url_of(config)
    try:
        loaded = store.prepare(mode, url, _cache_path, time.time())
        if _cache_path is not None:
            _claim = store.claim(_cache_path)
        if mode:
            hand_over(url, config.settings)
        if _cache_path is not None:
            hand_over_files(store.shared_files(_cache_path), config.settings)
    except (DatabaseError, OSError) as e:
        raise ModuleInitError(str(e)) from None
    if loaded:
        logging.getLogger("pyproxy").info(f"usrloc: {loaded} binding(s) loaded from {parse_url(url)}")


def child_init(index: int, runtime, config) -> None:
    global _location
    params = _params(config)
    _location = Location(params["db_mode"], db_url_of(config), _cache_path)
    if index == 0:      # one worker keeps the table clean (and writes back in db_mode 2)
        interval = params["timer_interval"]

        def tick():
            try:
                _location.expire(time.time())
                _location.flush(time.time())
            except DatabaseError as e:
                runtime.log(logging.WARNING, f"usrloc: {e}")
            runtime.call_later(interval, tick)

        runtime.call_later(interval, tick)


def management_view(config) -> Location:
    """The bindings for the management process (made once there, after fork)."""
    global _location
    if _location is None:
        _location = Location(_params(config)["db_mode"], db_url_of(config), _cache_path)
    return _location


def mod_destroy(config) -> None:
    global _claim
    try:
        if _params(config)["db_mode"] == 2 and _cache_path is not None:
            final = Location(2, db_url_of(config), _cache_path)
            try:
                flushed = final.flush(time.time())
                logging.getLogger("pyproxy").info(f"usrloc: {flushed} address(es) of record written back")
            finally:
                final.close()
    finally:
        store.remove_cache(_cache_path)
        if _claim is not None:
            os.close(_claim)
            _claim = None


EXPORTS = ModuleExports(
    name="usrloc",
    doc="The location service: contacts of registered users.",
    mod_init=mod_init,
    child_init=child_init,
    mod_destroy=mod_destroy,
    start_params=("db_url", "db_mode", "timer_interval", "use_domain"),
    params=(
        ModParam("db_url", str, "", f"The database of the location table; empty: the default database "
                                    f"({DEFAULT_URL}).",
                 check=check_url),
        ModParam("db_mode", int, 0, "0: in memory only; 1: write-through; 2: write-back every "
                                    "timer_interval; 3: database only.", 0, 3),
        ModParam("timer_interval", int, 60, "Seconds between removals of expired contacts (and "
                                            "write-backs in db_mode 2).", 1, 3600),
        ModParam("use_domain", int, 0, "1: the address of record is user@domain; 0: the user alone.", 0, 1),
    ),
)
