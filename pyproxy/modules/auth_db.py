"""auth_db: digest authentication against the subscriber table (OpenSER's auth_db module):
``www_authorize(realm, table)`` and ``proxy_authorize(realm, table)``.

With ``calculate_ha1=1`` the HA1 is computed from the clear-text ``password_column`` (as the
manual's Example 1-14 has it); otherwise it is read: ``password_column`` (``ha1``) for MD5,
``password_column_2`` (``ha1b``) for user names holding a domain, ``sha256_column``
(``ha1_sha256``) for SHA-256. A database that fails answers 500 and ends the script.
"""

from __future__ import annotations

import logging
import re

from ..db import DEFAULT_URL, Database, DatabaseError, check_url, connect, hand_over, module_url
from ..script.exports import FixupError, Function, ModParam, ModuleExports, ModuleInitError, RouteType
from ..script.fixups import text
from .auth import authorize
from .auth.digest import ha1
from .sl import send_reply

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

_db: Database | None = None
_queries: dict[tuple, str] = {}     # (table, column, user column, domain column) -> the SELECT of an HA1


def _check_identifier(value: str) -> None:
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(f"expected a table or column name (letters, digits, _), found \"{value}\"")


def www_authorize(ctx, realm, table, params):
    return _authorize(ctx, realm, table, params, "www")


def proxy_authorize(ctx, realm, table, params):
    return _authorize(ctx, realm, table, params, "proxy")


def _authorize(ctx, realm, table, params, kind):
    try:
        return authorize(ctx, realm, kind, lambda user, r, algorithm: find_ha1(table, params, user, r, algorithm, ctx))
    except DatabaseError as e:
        ctx.runtime.log(logging.ERROR, f"{kind}_authorize(): {e}")
        send_reply(ctx, 500, "Server Internal Error (subscriber database)")
        return 0


def find_ha1(table: str, params: dict, user: str, realm: str, algorithm: str, ctx) -> str | None:
    if params["calculate_ha1"]:
        column = params["password_column"]
    elif algorithm == "SHA-256":
        column = params["sha256_column"]
    else:
        column = params["password_column_2"] if "@" in user else params["password_column"]
    use_domain = params["use_domain"]
    key = (table, column, params["user_column"], params["domain_column"] if use_domain else None)
    sql = _queries.get(key)
    if sql is None:
        sql = _queries[key] = f"SELECT {column} FROM {table} WHERE {key[2]} = ?" + \
            (f" AND {key[3]} = ?" if use_domain else "")
    rows = _db.query(sql, (user, realm) if use_domain else (user,))
    if not rows:
        return None
    value = rows[0][0] or ""
    if not value:
        missing = (f"clear-text password in {column}, which calculate_ha1=1 needs (pyproxyctl passwd --plaintext "
                   f"keeps one)" if params["calculate_ha1"] else
                   f"{column} for {algorithm} (pyproxyctl passwd sets every HA1)")
        ctx.runtime.log(logging.WARNING, f"subscriber {user}: no {missing}")
        return None
    if params["calculate_ha1"]:
        return ha1(algorithm, user, realm, value)
    return value.lower()


def mod_init(config) -> None:
    from ..db import schema
    url = module_url(config, "auth_db")
    try:
        db = connect(url)
        try:
            if db.url.scheme == "sqlite":
                schema.create(db)       # the embedded database is made on first start
            schema.require(db, ["subscriber"])
        finally:
            db.close()
        hand_over(url, config.settings)
    except (DatabaseError, OSError) as e:
        raise ModuleInitError(str(e)) from None


def child_init(index, runtime, config) -> None:
    global _db
    _db = connect(module_url(config, "auth_db"))     # this process's; it connects at its first query


def _fixup(args, env):
    table = text(args[1], 1)
    if not IDENTIFIER.fullmatch(table):
        raise FixupError(f'expected a table name, found "{table}"', 1)
    return text(args[0], 0), table, env.modparams.get("auth_db", {})


REQUEST = RouteType.REQUEST | RouteType.FAILURE

EXPORTS = ModuleExports(
    name="auth_db",
    doc="Digest authentication against a database of subscribers.",
    depends=("auth",),
    mod_init=mod_init,
    child_init=child_init,
    start_params=("db_url",),
    params=(
        ModParam("db_url", str, "", f"The subscribers' database; empty: the default ({DEFAULT_URL}).",
                 check=check_url),
        ModParam("user_column", str, "username", "The user name column.", check=_check_identifier),
        ModParam("domain_column", str, "domain", "The domain (realm) column.", check=_check_identifier),
        ModParam("password_column", str, "ha1", "The HA1 column, or the password column with calculate_ha1=1.",
                 check=_check_identifier),
        ModParam("password_column_2", str, "ha1b", "The HA1 of user names that hold a domain (user@domain).",
                 check=_check_identifier),
        ModParam("sha256_column", str, "ha1_sha256", "The SHA-256 HA1 column (RFC 7616).",
                 check=_check_identifier),
        ModParam("calculate_ha1", int, 0, "1: password_column holds clear-text passwords.", 0, 1),
        ModParam("use_domain", int, 0, "1: match the realm against domain_column too.", 0, 1),
    ),
    functions=(
        Function("www_authorize", www_authorize, (2,), "Check the REGISTER's credentials: (realm, table).",
                 _fixup, REQUEST),
        Function("proxy_authorize", proxy_authorize, (2,), "Check a request's proxy credentials: (realm, table).",
                 _fixup, REQUEST),
    ),
)
