"""xlog: formatted logging with pseudo-variables: ``xlog([level,] "text $rm from $si\\n")``."""

from __future__ import annotations

import logging

from ..config.values import NOTICE
from ..script.exports import FixupError, Function, ModuleExports
from ..script.fixups import format_string, text

LEVELS = {"L_ALERT": logging.CRITICAL, "L_CRIT": logging.CRITICAL, "L_ERR": logging.ERROR,
          "L_WARN": logging.WARNING, "L_NOTICE": NOTICE, "L_INFO": logging.INFO, "L_DBG": logging.DEBUG}


def xlog(ctx, level, render):
    ctx.runtime.log(level, render(ctx).rstrip("\n"))
    return 1


def _xlog_fixup(args, env):
    if len(args) == 1:
        return logging.ERROR, format_string(args[0], 0)      # OpenSER's xlog default: L_ERR
    name = text(args[0], 0).upper()
    if name not in LEVELS:
        raise FixupError(f"argument 1 must be a log level ({', '.join(LEVELS)}), found {name}", 0)
    return LEVELS[name], format_string(args[1], 1)


EXPORTS = ModuleExports(
    name="xlog",
    doc="Formatted logging.",
    functions=(
        Function("xlog", xlog, (1, 2), "Log text with $variables expanded: xlog([level,] text).",
                 _xlog_fixup),
        Function("xdbg", xlog, (1,), "xlog at L_DBG.",
                 lambda args, env: (logging.DEBUG, format_string(args[0], 0))),
    ),
)
