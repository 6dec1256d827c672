"""The module registry: ``loadmodule`` finds modules here by name.

Each module is ``pyproxy.modules.<name>`` with an ``EXPORTS`` (``ModuleExports``) declaring its
parameters and script functions. OpenSER spellings are accepted: ``loadmodule "modules/tm/tm.so"``,
``"tm.so"`` and ``"tm"`` all load ``tm``. A module OpenSER had but pyproxy has not written yet is
named as such, so that a config written for OpenSER fails with a clear word, never a stub.
"""

from __future__ import annotations

import importlib
import importlib.util
import re

from ..script.exports import ModuleExports

# OpenSER 1.x modules, and what each did: used to tell "not written yet" from "no such module".
OPENSER_MODULES = {
    "acc": "accounting", "alias_db": "database aliases", "auth": "digest authentication",
    "auth_db": "digest authentication against a database", "auth_diameter": "Diameter authentication",
    "avpops": "AVP operations", "cpl-c": "CPL interpreter", "dbtext": "text-file database",
    "dialog": "dialog tracking", "dispatcher": "load balancing", "diversion": "Diversion header",
    "domain": "multi-domain support", "enum": "ENUM lookups", "exec": "running external programs",
    "group": "group membership", "lcr": "least-cost routing", "mangler": "SDP mangling",
    "maxfwd": "Max-Forwards processing", "mediaproxy": "media relaying", "msilo": "message store",
    "mysql": "MySQL driver", "nathelper": "NAT traversal", "options": "OPTIONS replies",
    "path": "Path headers", "permissions": "access control", "pike": "flood detection",
    "postgres": "PostgreSQL driver", "presence": "presence server", "pua": "presence user agent",
    "registrar": "SIP registrar", "rr": "record-routing", "siptrace": "SIP tracing",
    "sl": "stateless replies", "sms": "SMS gateway", "speeddial": "speed dial",
    "textops": "text operations on messages", "tlsops": "TLS variables", "tm": "transactions",
    "uac": "UAC functions", "uac_redirect": "redirect handling", "uri": "URI checks",
    "uri_db": "URI checks against a database", "usrloc": "location service", "xlog": "formatted logging",
}

# Functions the seed's scripts call, and the module that exports them: for "unknown function" hints.
FUNCTION_HOMES = {
    **dict.fromkeys(("t_relay", "t_relay_to_tls", "t_relay_to_udp", "t_relay_to_tcp", "t_on_reply",
                     "t_on_failure", "t_on_branch", "t_newtran", "t_reply", "t_check_trans",
                     "t_forward_nonack", "t_was_cancelled"), "tm"),
    **dict.fromkeys(("record_route", "loose_route", "record_route_preset", "add_rr_param",
                     "check_route_param", "is_direction"), "rr"),
    **dict.fromkeys(("save", "save_noreply", "lookup", "registered"), "registrar"),
    **dict.fromkeys(("www_challenge", "proxy_challenge", "consume_credentials"), "auth"),
    **dict.fromkeys(("www_authorize", "proxy_authorize"), "auth_db"),
    **dict.fromkeys(("check_to", "check_from", "does_uri_exist"), "uri_db"),
    **dict.fromkeys(("avp_write", "avp_delete", "avp_pushto", "avp_check", "avp_print", "avp_db_load",
                     "avp_db_store"), "avpops"),
    **dict.fromkeys(("append_hf", "remove_hf", "is_present_hf", "search", "search_append", "replace",
                     "subst", "subst_uri", "subst_user", "append_to_reply"), "textops"),
    **dict.fromkeys(("sl_send_reply", "sl_reply_error"), "sl"),
    "mf_process_maxfwd_header": "maxfwd",
    **dict.fromkeys(("xlog", "xdbg"), "xlog"),
    "is_peer_verified": "tlsops",
}


class ModuleNotFound(LookupError):
    pass


def module_name(path: str) -> str:
    """``modules/tm/tm.so`` -> ``tm``; ``tm.so`` -> ``tm``; ``tm`` -> ``tm``."""
    base = path.rstrip("/").rsplit("/", 1)[-1]
    return base[:-3] if base.endswith(".so") else base


def load(path: str) -> ModuleExports:
    name = module_name(path)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
        raise ModuleNotFound(f"'{path}' is not a module name")
    py_name = name.replace("-", "_")
    if py_name.startswith("_") or importlib.util.find_spec(f"{__name__}.{py_name}") is None:
        if name in OPENSER_MODULES:
            raise ModuleNotFound(f"module '{name}' (OpenSER's {OPENSER_MODULES[name]}) is not available "
                                 f"in pyproxy yet")
        raise ModuleNotFound(f"unknown module '{name}': no such OpenSER or pyproxy module")
    return importlib.import_module(f"{__name__}.{py_name}").EXPORTS


def unknown_function_hint(name: str, loaded: set[str], failed: set[str]) -> str | None:
    """Why a function is unknown; None when its module's loadmodule already failed."""
    home = FUNCTION_HOMES.get(name)
    if home in failed:
        return None
    if home is None or home in loaded:
        return ""
    return f" (it is exported by module '{home}', which is not loaded)"
