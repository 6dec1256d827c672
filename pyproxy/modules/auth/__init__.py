"""auth: digest authentication's challenges and checks (OpenSER's auth module):
``www_challenge(realm, qop)``, ``proxy_challenge(realm, qop)``, ``consume_credentials()``, and
``authorize()``, which auth_db's ``www_authorize``/``proxy_authorize`` call with a way to find a
user's HA1.

qop ``"0"`` challenges without qop (the manual's phones need it), ``"1"`` with qop="auth" and its
nonce-count replay protection. Challenges offer the algorithms of ``digest_algorithms``: MD5 by
default, because a SHA-256 challenge makes some phones fail outright (baresip 1.0 answers a 401
that offers SHA-256 and MD5 with "Function not implemented"); "SHA-256,MD5" offers both (RFC 8760),
and SHA-256 credentials are checked whenever a phone sends them. An expired nonce gets ``stale=true`` (the phone retries without asking its
user). Credentials that cannot be read get 400 and end the script.
"""

from __future__ import annotations

import logging
import os
import time

from ...config.values import NOTICE
from ...script.exports import FixupError, Function, ModParam, ModuleExports, RouteType
from ...script.fixups import text
from ...sip import SIPError
from ..sl import send_reply
from .digest import Credentials, Malformed, Nonces, expected_response, parse_credentials

KINDS = {   # which header carries credentials, and how a challenge is made
    "www": ("Authorization", 401, "Unauthorized", "WWW-Authenticate"),
    "proxy": ("Proxy-Authorization", 407, "Proxy Authentication Required", "Proxy-Authenticate"),
}

_nonces: Nonces | None = None
_algorithms: tuple[str, ...] = ("MD5",)


class AuthState:
    """auth's part of one request's context: what authorize() found."""

    __slots__ = ("stale", "username", "realm", "header", "line")

    def __init__(self) -> None:
        self.stale = False
        self.username: str | None = None    # set once authorized ($au)
        self.realm: str | None = None
        self.header: str | None = None      # the credentials' header and line (consume_credentials)
        self.line = 0


def nonces() -> Nonces:
    global _nonces
    if _nonces is None:                     # a process that did not run mod_init (tests)
        _nonces = Nonces(os.urandom(32), 300)
    return _nonces


def realm_of(ctx, realm: str, kind: str) -> str:
    """The realm argument; empty: the host of To (www) or From (proxy), as OpenSER chose it."""
    if realm:
        return realm
    try:
        return (ctx.msg.to if kind == "www" else ctx.msg.from_).uri.host
    except (SIPError, AttributeError):
        return ""


# -- challenges --------------------------------------------------------------------------------
def challenge(ctx, realm: str, qop: bool, kind: str) -> int:
    _, status, reason, header = KINDS[kind]
    realm = realm_of(ctx, realm, kind).replace('"', "")
    nonce = nonces().make(time.time())
    stale = ", stale=true" if ctx.auth is not None and ctx.auth.stale else ""
    qop_param = ', qop="auth"' if qop else ""
    values = []         # (a loop: a comprehension is a function call of its own, in every 401)
    for algorithm in _algorithms:
        values.append((header, f'Digest realm="{realm}", nonce="{nonce}"{qop_param}, algorithm={algorithm}{stale}'))
    return send_reply(ctx, status, reason, values)


def www_challenge(ctx, realm, qop):
    return challenge(ctx, realm, qop, "www")


def proxy_challenge(ctx, realm, qop):
    return challenge(ctx, realm, qop, "proxy")


# -- checking credentials ----------------------------------------------------------------------
def authorize(ctx, realm: str, kind: str, find_ha1) -> int:
    """1 when the request carries valid credentials for ``realm``; -1 when it does not (none,
    wrong, stale, replayed: the script challenges); 0 after answering 400 (unreadable credentials).
    ``find_ha1(username, realm, algorithm)`` -> the user's HA1 hex, or None for no such user; it
    may raise DatabaseError, which the caller answers."""
    header = KINDS[kind][0]
    msg = ctx.msg
    realm = realm_of(ctx, realm, kind)
    state = ctx.auth = AuthState()
    try:
        found = _credentials_for(msg, header, realm)
    except Malformed as e:
        ctx.runtime.log(logging.INFO, f"{header} from {ctx.rcv.src_ip}: {e}")
        send_reply(ctx, 400, f"Bad {header} header ({e})"[:100])
        return 0
    if found is None:
        return -1
    line, creds = found
    verdict = nonces().check(creds.nonce, time.time())
    if verdict != "ok":
        state.stale = verdict == "stale"
        return -1
    ha1 = find_ha1(creds.username, realm, creds.algorithm)
    if ha1 is None or expected_response(creds, ha1, msg.method) != creds.response:
        # at the default level (debug=2): what fail2ban and the operator watch for
        ctx.runtime.log(NOTICE, f"authorization of {creds.username}@{realm} from {ctx.rcv.src_ip} "
                                f"failed: {'no such user' if ha1 is None else 'wrong password'}")
        return -1
    if creds.qop:
        counted = nonces().count(creds.nonce, creds.nc)
        if counted != "ok":
            state.stale = counted == "stale"
            ctx.runtime.log(logging.INFO, f"authorization of {creds.username}@{realm}: nonce-count "
                                          f"{creds.nc} {counted}")
            return -1
    state.username, state.realm, state.header, state.line = creds.username, realm, header, line
    return 1


def _credentials_for(msg, header: str, realm: str) -> tuple[int, Credentials] | None:
    for line, value in enumerate(msg.header_values(header)):
        creds = parse_credentials(value)
        if creds is not None and creds.realm == realm:
            return line, creds
    return None


def consume_credentials(ctx):
    """Remove the credentials authorize() accepted: they are not for the next hop."""
    state = ctx.auth
    if state is None or state.header is None:
        return -1
    return 1 if ctx.msg.remove_header_line(state.header, state.line) else -1


# -- load time ---------------------------------------------------------------------------------
def _qop(arg, i: int) -> bool:
    value = text(arg, i)
    if value not in ("0", "1"):
        raise FixupError(f'expected the qop "0" (none) or "1" (qop=auth), found "{value}"', i)
    return value == "1"


def _challenge_fixup(args, env):
    return text(args[0], 0), _qop(args[1], 1)


def mod_init(config) -> None:
    global _nonces, _algorithms
    params = config.modparams.get("auth", {})
    secret = params.get("secret", "")
    _nonces = Nonces(secret.encode() if secret else os.urandom(32), params.get("nonce_expire", 300))
    _algorithms = tuple(a.strip().upper() for a in params.get("digest_algorithms", "MD5").split(","))


def child_init(index: int, runtime, config) -> None:
    nonces().for_worker(index, max(1, config.settings.children if config.settings.fork else 1))


def _check_algorithms(value: str) -> None:
    names = [a.strip().upper() for a in value.split(",")]
    if any(a not in ("MD5", "SHA-256") for a in names) or len(set(names)) != len(names):
        raise ValueError(f'expected "SHA-256,MD5", "MD5,SHA-256", "MD5" or "SHA-256", found "{value}"')


REQUEST = RouteType.REQUEST | RouteType.FAILURE

EXPORTS = ModuleExports(
    name="auth",
    doc="Digest authentication: challenges and credential checks.",
    mod_init=mod_init,
    child_init=child_init,
    start_params=("secret", "nonce_expire", "digest_algorithms"),
    params=(
        ModParam("secret", str, "", "The key nonces are signed with; empty: a random one made at start "
                                    "(set the same on proxies that share their users' nonces)."),
        ModParam("nonce_expire", int, 300, "Seconds a nonce is good for; then the phone is told stale=true.",
                 10, 86400),
        ModParam("digest_algorithms", str, "MD5", "The challenges each 401/407 offers, in order of "
                                                  "preference: \"SHA-256,MD5\" adds RFC 8760's SHA-256.",
                 check=_check_algorithms),
    ),
    functions=(
        Function("www_challenge", www_challenge, (2,), "Answer 401 with a digest challenge: (realm, qop).",
                 _challenge_fixup, REQUEST),
        Function("proxy_challenge", proxy_challenge, (2,), "Answer 407 with a digest challenge: (realm, qop).",
                 _challenge_fixup, REQUEST),
        Function("consume_credentials", consume_credentials, (0,), "Remove the credentials that were "
                 "checked before the request is relayed.", None, REQUEST),
    ),
)
