"""avpops: AVP operations. ``avp_write(value, "$avp(i:N)")`` adds a value to an AVP; the value is
a pseudo-variable (``"$fd"``), ``"i:NUMBER"``, ``"s:TEXT"`` or plain text.
"""

from __future__ import annotations

from ..script.exports import FixupError, Function, ModuleExports
from ..script.fixups import text
from ..script.pv import PVError, avp_add, avp_name, parse_pv_text


def avp_write(ctx, get_value, name):
    value = get_value(ctx)
    if value is None:
        return -1
    avp_add(ctx, name, value)
    return 1


def avp_delete(ctx, name):
    return 1 if ctx.avps.pop(name, None) is not None else -1


def _value_getter(arg_text: str):
    if arg_text.startswith("$"):
        try:
            return parse_pv_text(arg_text).get
        except PVError as e:
            raise FixupError(f"argument 1: {e}", 0) from None
    kind, sep, rest = arg_text.partition(":")
    if sep and kind == "i":
        if not rest.lstrip("-").isdigit():
            raise FixupError(f"argument 1: i: needs a number, found '{rest}'", 0)
        value = int(rest)
    else:
        value = rest if sep and kind == "s" else arg_text
    return lambda ctx: value


def _avp(arg, i) -> int | str:
    written = text(arg, i)
    if not (written.startswith("$avp(") and written.endswith(")")):
        raise FixupError(f"argument {i + 1} must name an AVP, e.g. \"$avp(i:400)\", found '{written}'", i)
    try:
        return avp_name(written[5:-1])
    except PVError as e:
        raise FixupError(f"argument {i + 1}: {e}", i) from None


EXPORTS = ModuleExports(
    name="avpops",
    doc="AVP operations.",
    functions=(
        Function("avp_write", avp_write, (2,), 'Add a value to an AVP: avp_write("$fd", "$avp(i:400)").',
                 lambda args, env: (_value_getter(text(args[0], 0)), _avp(args[1], 1))),
        Function("avp_delete", avp_delete, (1,), "Delete every value of an AVP.",
                 lambda args, env: (_avp(args[0], 0),)),
    ),
)
