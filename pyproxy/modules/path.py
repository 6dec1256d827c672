"""path: RFC 3327 Path headers (Kamailio's path module): ``add_path()`` and
``add_path_received()`` put a Path value naming this proxy on top of a REGISTER's, so that the
registrar routes requests for that contact through this proxy.

With ``add_path_received()`` the value also carries where the REGISTER came from (a
``received`` parameter): when the request comes back along that Path, ``loose_route()`` sends it
there, over the connection the phone keeps open. That is how several registrars sharing one
database (usrloc ``db_mode=3``) reach a phone connected to only one of them: the registrar saves
the Path (``modparam("registrar", "use_path", 1)``), another one's ``lookup()`` routes through it.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from ..script.exports import Function, ModuleExports, RouteType
from ..sip.uri import host_port


def add_path(ctx):
    return _add(ctx, None)


def add_path_received(ctx):
    rcv = ctx.rcv
    return _add(ctx, f"sip:{host_port(rcv.src_ip, rcv.src_port)};transport={rcv.proto.text}")


def _add(ctx, received: str | None) -> int:
    rcv = ctx.rcv
    here = ctx.runtime.received_on(rcv)
    param = f";received={quote(received, safe=':')}" if received else ""
    ctx.msg.add_header("Path", f"<sip:{here};transport={rcv.proto.text};lr{param}>", first=True)
    return 1


def received_of(uri) -> str | None:
    """The address a Path value of ours carries (add_path_received), or None."""
    value = uri.params.get("received")
    return unquote(value) if value else None


EXPORTS = ModuleExports(
    name="path",
    doc="RFC 3327 Path headers on REGISTERs.",
    functions=(
        Function("add_path", add_path, (0,), "Add a Path header naming this proxy.", None, RouteType.REQUEST),
        Function("add_path_received", add_path_received, (0,), "Add a Path header naming this proxy and "
                 "where the REGISTER came from.", None, RouteType.REQUEST),
    ),
)
