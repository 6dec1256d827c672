"""Argument fix-ups shared by the core and modules: turn written arguments into what a function
takes, once, at load time. Each raises FixupError naming the argument and what was expected.
"""

from __future__ import annotations

from ..config.ast import PVar, Value
from ..config.values import SocketSpec, parse_host_port
from ..sip import SIPError, parse_uri
from .exports import FixupError
from .pv import PVError, compile_format


def text(arg, i: int) -> str:
    if isinstance(arg, PVar):
        raise FixupError(f"argument {i + 1} must be a string, not the pseudo-variable {arg.text}", i)
    return str(arg.number) if arg.number is not None else arg.text


def integer(arg, i: int, low: int | None = None, high: int | None = None, what: str = "a number") -> int:
    value = arg.number if isinstance(arg, Value) else None
    if value is None and isinstance(arg, Value):
        try:
            value = int(arg.text)
        except ValueError:
            pass
    if value is None or (low is not None and value < low) or (high is not None and value > high):
        found = arg.text if isinstance(arg, PVar) else arg.describe()
        bounds = f" from {low} to {high}" if low is not None and high is not None else ""
        raise FixupError(f"argument {i + 1} must be {what}{bounds}, found {found}", i)
    return value


def address(arg, i: int, allow_proto: bool = False, what: str = "") -> SocketSpec:
    """``host[:port]`` (``[proto:]host[:port]`` with ``allow_proto``), as forward() and t_relay() take."""
    try:
        return parse_host_port(text(arg, i), allow_proto=allow_proto)
    except ValueError as e:
        raise FixupError(f"argument {i + 1}: {what}{e}", i) from None


def sip_uri(arg, i: int) -> str:
    value = text(arg, i)
    try:
        parse_uri(value)
    except SIPError as e:
        raise FixupError(f"argument {i + 1} is not a valid URI: {e}", i) from None
    return value


def format_string(arg, i: int):
    try:
        return compile_format(text(arg, i))
    except PVError as e:
        raise FixupError(f"argument {i + 1}: {e}", i) from None


def status_code(arg, i: int) -> int:
    return integer(arg, i, 100, 699, "a reply status code")


def each(*converters):
    """A fix-up applying one converter per argument position (extra converters unused)."""
    def fixup(args, env):
        return tuple(conv(a, i) for i, (conv, a) in enumerate(zip(converters, args)))
    return fixup
