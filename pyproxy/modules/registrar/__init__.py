"""registrar: REGISTER processing and the lookups that route to registered users (OpenSER's
registrar module): ``save("location")``, ``save_noreply("location")``, ``lookup("location")``,
``registered("location")``.

``save()`` answers the REGISTER itself, 200 with every binding or the error (400, 423 with
Min-Expires, 403 past max_contacts, 500 when the database fails) and, on an error, ends the
script as OpenSER's did (it returns 0). Each binding remembers the socket its REGISTER came in
on and, where the Contact alone would not reach the phone (TCP/TLS, or a NAT between: see
``_received``), the address it came from (``received``); ``lookup()`` then sends requests there
through ``$du``: over the connection, or to the NAT's outside address.
"""

from __future__ import annotations

import ipaddress
import logging
import time

from ...config.values import UDP
from ...db import DatabaseError
from ...script.exports import FixupError, Function, ModParam, ModuleExports, RouteType
from ...script.fixups import integer, text
from ...sip import SIPError
from ...sip.address import STAR, parse_name_addr
from ...sip.uri import host_port
from ...sip.headers import split_list
from .. import usrloc
from ..path import received_of
from ..rr import is_ours
from ..sl import send_reply
from .rules import Limits, Refused, Where, contact_headers, read_register, updated

MEMORY_ONLY = 0x01      # save()'s flags, OpenSER's: the shared file only, not the database
NO_REPLY = 0x02         # do not answer
ONE_DEVICE = 0x04       # the REGISTER's contacts replace the user's others


def save(ctx, table, flags, limits: Limits, use_domain: bool, use_path: bool):
    msg, rcv = ctx.msg, ctx.rcv
    now = int(time.time())
    try:
        if msg.method != "REGISTER":
            raise Refused(400, "save() takes a REGISTER")
        aor = _aor(msg, use_domain)
        req = read_register(msg, limits)
        path = ", ".join(msg.values_to_send("path")) if use_path else ""     # add_path()'s included
        proto = rcv.proto.text
        where = Where(_received(msg, rcv), path or None,
                      f"{proto}:{host_port(rcv.dst_ip, rcv.dst_port)}", (msg.header("user-agent") or "")[:255])

        def update(current):
            new = updated(current, req, now, limits, where, only_these=bool(flags & ONE_DEVICE))
            return new, current if new is None else new

        bindings = usrloc.location().change(aor, now, update, memory_only=bool(flags & MEMORY_ONLY))
    except Refused as e:
        if not flags & NO_REPLY:
            send_reply(ctx, e.status, e.reason, e.headers)
        ctx.runtime.log(logging.INFO, f"save(): REGISTER from {rcv.src_ip}:{rcv.src_port} refused: "
                                      f"{e.status} {e.reason}")
        return 0
    except DatabaseError as e:
        ctx.runtime.log(logging.ERROR, f"save(): {e}")
        if not flags & NO_REPLY:
            send_reply(ctx, 500, "Server Internal Error (location database)")
        return 0
    if not flags & NO_REPLY:
        headers = contact_headers(bindings, now)
        if path:
            headers.append(("Path", path))      # RFC 3327 5.3: the registrar returns the Path it stored
        send_reply(ctx, 200, "OK", headers)
    return 1


def lookup(ctx, table, append_branches: bool, use_domain: bool):
    """The Request-URI becomes the contact with the highest q (the most recent among equals) and
    $du where it registered from; with append_branches, every other contact becomes a branch.
    -1 when the user has no contact."""
    try:
        bindings = _bindings(ctx, use_domain)
    except DatabaseError as e:
        ctx.runtime.log(logging.ERROR, f"lookup(): {e}")
        send_reply(ctx, 500, "Server Internal Error (location database)")
        return 0
    if bindings is None or not bindings:
        return -1
    bindings.sort(key=lambda b: (-b.q, -b.last_modified))
    first = bindings[0]
    try:
        ctx.msg.set_ruri(first.contact)
    except SIPError as e:
        ctx.runtime.log(logging.ERROR, f"lookup(): the stored contact {first.contact!r} is not a URI: {e}")
        return -1
    if first.path:
        try:
            hops = [parse_name_addr(value) for value in split_list(first.path)]
        except SIPError as e:
            ctx.runtime.log(logging.ERROR, f"lookup(): the stored Path {first.path!r} is malformed: {e}")
            return -1
        if is_ours(ctx.runtime, hops[0].uri):     # our own Path: straight where it says the phone is
            received = received_of(hops.pop(0).uri)
        else:
            received = None
        for hop in hops:            # RFC 3327 5.2: the Path becomes the request's route set
            ctx.msg.add_header("Route", str(hop))
        ctx.dst_uri = str(hops[0].uri) if hops else received or first.received
    else:
        ctx.dst_uri = first.received
    if append_branches:
        branches = ctx.branches if ctx.branches is not None else []
        branches.extend((b.contact, b.received) for b in bindings[1:] if not b.path)
        ctx.branches = branches or None
    return 1


def registered(ctx, table, use_domain: bool):
    """True when the Request-URI's user has a contact."""
    try:
        bindings = _bindings(ctx, use_domain)
    except DatabaseError as e:
        ctx.runtime.log(logging.ERROR, f"registered(): {e}")
        return -1
    return 1 if bindings else -1


def _bindings(ctx, use_domain: bool):
    try:
        uri = ctx.msg.uri
    except SIPError:
        return None
    if uri.scheme not in ("sip", "sips"):
        return None
    return usrloc.location().lookup(usrloc.aor_of(uri, use_domain), time.time())


def _received(msg, rcv) -> str | None:
    """Where requests for the REGISTER's contacts go instead of the Contact itself: over TCP and
    TLS, the connection it came on (a phone accepts no connection of ours); over UDP, the
    address it came from when a NAT stands between -- its top Via names another address than
    the one it came from, or a Contact names a private one that it did not come from (the test
    OpenSER scripts made with nathelper's nat_uac_test() before fix_nated_register()). None:
    the Contact as registered (RFC 3261 16.5), as for a phone that sends from another port than
    it listens on, or a REGISTER made on another device's behalf."""
    if rcv.proto is UDP and not _behind_nat(msg, rcv):
        return None
    return f"sip:{host_port(rcv.src_ip, rcv.src_port)};transport={rcv.proto.text}"


def _behind_nat(msg, rcv) -> bool:
    via = msg.top_via
    if via.host.strip("[]") != rcv.src_ip or (via.port or 5060) != rcv.src_port:
        return True
    for value in msg.contacts:        # (parsed and checked by read_register() already)
        host = "" if value is STAR else (value.uri.host or "").strip("[]")
        if host != rcv.src_ip and _is_private(host):
            return True
    return False


def _is_private(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False                # a name: not a NAT's inside address
    return address.is_private or address in _SHARED_NAT


_SHARED_NAT = ipaddress.ip_network("100.64.0.0/10")        # RFC 6598: carrier-grade NAT


def _aor(msg, use_domain: bool) -> tuple[str, str]:
    try:
        uri = msg.to.uri
    except SIPError:
        raise Refused(400, "Bad To header") from None
    if uri.scheme not in ("sip", "sips") or not uri.user:
        raise Refused(400, "Bad To URI: the address of record needs a user")
    return usrloc.aor_of(uri, use_domain)


# -- load time ---------------------------------------------------------------------------------
def _table(arg, i: int) -> str:
    name = text(arg, i)
    if name != "location":
        raise FixupError(f"the usrloc table must be \"location\" (pyproxy keeps one location table), "
                         f"found \"{name}\"", i)
    return name


def _use_domain(env) -> bool:
    return bool(env.modparams.get("usrloc", {}).get("use_domain", 0))


def _limits(env) -> Limits:
    p = env.modparams.get("registrar", {})
    q = p.get("default_q", -1)
    return Limits(p.get("default_expires", 3600), p.get("min_expires", 60), p.get("max_expires", 0),
                  p.get("max_contacts", 0), 1.0 if q < 0 else q / 1000)


def _save_fixup(no_reply: bool):
    def fixup(args, env):
        flags = integer(args[1], 1, 0, 0xFF, "the save() flags") if len(args) > 1 else 0
        params = env.modparams.get("registrar", {})
        return (_table(args[0], 0), flags | (NO_REPLY if no_reply else 0), _limits(env), _use_domain(env),
                bool(params.get("use_path", 0)))
    return fixup


def _lookup_fixup(args, env):
    return _table(args[0], 0), bool(env.modparams.get("registrar", {}).get("append_branches", 1)), _use_domain(env)


REQUEST = RouteType.REQUEST | RouteType.FAILURE

EXPORTS = ModuleExports(
    name="registrar",
    doc="SIP registrar: saves REGISTERed contacts, routes to them.",
    depends=("usrloc",),
    params=(
        ModParam("default_expires", int, 3600, "Seconds a contact lasts when the REGISTER gives no expiry.",
                 1, 2 ** 31 - 1),
        ModParam("min_expires", int, 60, "A shorter non-zero expiry gets 423 Interval Too Brief; 0: any.",
                 0, 2 ** 31 - 1),
        ModParam("max_expires", int, 0, "A longer expiry is lowered to this; 0: no limit.", 0, 2 ** 31 - 1),
        ModParam("max_contacts", int, 0, "Contacts one address of record may have (more: 403); 0: no limit.",
                 0, 100000),
        ModParam("default_q", int, -1, "q (in thousandths) of a contact that gives none; -1: 1.0.", -1, 1000),
        ModParam("append_branches", int, 1, "lookup() forks to every contact (1) or only the best (0).", 0, 1),
        ModParam("use_path", int, 0, "Store the REGISTER's Path headers (RFC 3327) and route by them.", 0, 1),
    ),
    functions=(
        Function("save", save, (1, 2),
                 "Save the REGISTER's contacts and answer it: save(\"location\"[, flags]).",
                 _save_fixup(False), REQUEST),
        Function("save_noreply", save, (1,),
                 "Save the REGISTER's contacts without answering it.", _save_fixup(True), REQUEST),
        Function("lookup", lookup, (1,), "Route to the Request-URI user's contacts; false when it has none.",
                 _lookup_fixup, REQUEST),
        Function("registered", registered, (1,), "True when the Request-URI user has a contact.",
                 lambda args, env: (_table(args[0], 0), _use_domain(env)), RouteType.ANY),
    ),
)
