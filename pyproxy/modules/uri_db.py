"""uri_db: is the user a request claims to be the user who authenticated? (OpenSER's uri_db)

``check_to()`` (REGISTER: the To user) and ``check_from()`` (the From user) compare that user
with the user name of the credentials auth_db accepted for this request, and with
``use_uri_table=1`` look the pair up in the ``uri`` table instead (a user allowed several
identities). ``does_uri_exist()`` is true when the Request-URI's user is a subscriber.
"""

from __future__ import annotations

import logging

from ..db import DEFAULT_URL, Database, DatabaseError, check_url, connect, module_url
from ..script.exports import Function, ModParam, ModuleExports, RouteType
from ..sip import SIPError
from .auth_db import _check_identifier
from .sl import send_reply

_db: Database | None = None


def check_to(ctx, params):
    return _check(ctx, params, "to")


def check_from(ctx, params):
    return _check(ctx, params, "from_")


def _check(ctx, params: dict, which: str) -> int:
    state = ctx.auth
    if state is None or state.username is None:
        return -1           # nobody authenticated: nothing to compare with
    try:
        uri = getattr(ctx.msg, which).uri
    except SIPError:
        return -1
    if uri.scheme not in ("sip", "sips") or not uri.user:
        return -1
    if not params["use_uri_table"]:
        same_user = uri.user == state.username
        return 1 if same_user and (not params["use_domain"] or uri.host.lower() == state.realm.lower()) else -1
    sql = "SELECT 1 FROM uri WHERE username = ? AND uri_user = ?"
    args = [state.username, uri.user]
    if params["use_domain"]:
        sql += " AND domain = ?"
        args.append(state.realm)
    return _exists(ctx, sql, args)


def does_uri_exist(ctx, params):
    try:
        uri = ctx.msg.uri
    except SIPError:
        return -1
    if not uri.user:
        return -1
    if params["use_uri_table"]:
        sql, args = "SELECT 1 FROM uri WHERE uri_user = ?", [uri.user]
    else:
        sql = f"SELECT 1 FROM {params['db_table']} WHERE {params['user_column']} = ?"
        args = [uri.user]
    if params["use_domain"]:
        sql += f" AND {'domain' if params['use_uri_table'] else params['domain_column']} = ?"
        args.append(uri.host)
    return _exists(ctx, sql, args)


def _exists(ctx, sql: str, args: list) -> int:
    try:
        return 1 if _db.query(sql, args) else -1
    except DatabaseError as e:
        ctx.runtime.log(logging.ERROR, f"uri_db: {e}")
        send_reply(ctx, 500, "Server Internal Error (subscriber database)")
        return 0


def child_init(index, runtime, config) -> None:
    global _db
    _db = connect(module_url(config, "uri_db"))      # this process's; it connects at its first query


def _params(args, env):
    return (env.modparams.get("uri_db", {}),)


REQUEST = RouteType.REQUEST | RouteType.FAILURE

EXPORTS = ModuleExports(
    name="uri_db",
    doc="Checks of To, From and Request-URI users against the database.",
    child_init=child_init,
    start_params=("db_url",),
    params=(
        ModParam("db_url", str, "", f"The subscribers' database; empty: the default ({DEFAULT_URL}).",
                 check=check_url),
        ModParam("db_table", str, "subscriber", "The subscriber table.", check=_check_identifier),
        ModParam("user_column", str, "username", "Its user name column.", check=_check_identifier),
        ModParam("domain_column", str, "domain", "Its domain column.", check=_check_identifier),
        ModParam("use_uri_table", int, 0, "1: check against the uri table (username, domain, uri_user).", 0, 1),
        ModParam("use_domain", int, 0, "1: compare domains too.", 0, 1),
    ),
    functions=(
        Function("check_to", check_to, (0,), "True when the To user is the authenticated user.", _params, REQUEST),
        Function("check_from", check_from, (0,), "True when the From user is the authenticated user.",
                 _params, REQUEST),
        Function("does_uri_exist", does_uri_exist, (0,), "True when the Request-URI user is a subscriber.",
                 _params, REQUEST),
    ),
)
