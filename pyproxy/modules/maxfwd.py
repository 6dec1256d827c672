"""maxfwd: Max-Forwards processing (RFC 3261 section 16.6 step 3, 16.3 step 2)."""

from __future__ import annotations

from ..script.exports import Function, ModParam, ModuleExports, RouteType
from ..script.fixups import integer
from ..sip import SIPError


def mf_process_maxfwd_header(ctx, default, limit):
    """Add Max-Forwards if missing (returns 2), decrement it (1) but not above ``limit``
    (modparam max_limit), or -1 when it is 0: the script answers 483. A value that is not a
    number 0..255 is an error (-2)."""
    msg = ctx.msg
    try:
        value = msg.max_forwards
    except SIPError:
        ctx.last_error = (400, "Bad Max-Forwards")
        return -2
    if value is None:
        msg.add_header("Max-Forwards", str(default))
        return 2
    if value == 0:
        return -1
    msg.replace_line("max-forwards", b"Max-Forwards: %d" % min(value - 1, limit))
    return 1


def _max_fixup(args, env):
    limit = env.modparams.get("maxfwd", {}).get("max_limit", 256)
    return integer(args[0], 0, 1, limit, "the Max-Forwards value to add"), limit


EXPORTS = ModuleExports(
    name="maxfwd",
    doc="Max-Forwards processing.",
    params=(ModParam("max_limit", int, 256, "Largest value mf_process_maxfwd_header() may add or "
                                            "leave (a larger one is lowered to it); 256: no limit."),),
    functions=(
        Function("mf_process_maxfwd_header", mf_process_maxfwd_header, (1,),
                 "Decrement Max-Forwards, or add it with the given value; false when it reached 0.",
                 _max_fixup, RouteType.REQUEST | RouteType.FAILURE | RouteType.BRANCH),
    ),
)
