"""Header parameters (";name=value" lists after a name-addr, a Via sent-by, ...).

Shared by address.py and via.py; URI parameters have their own, stricter grammar in uri.py.
"""

from __future__ import annotations

from . import grammar
from .errors import RemoteSIPError
from .headers import split_list


def parse_generic_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )``; names are lowercased, a flag's value is None.

    Values keep their wire form (a quoted-string keeps its quotes). An empty parameter (";;")
    is an error: RFC 4475 3.1.2.1 badinv01 must be rejected.
    """
    text = text.strip()
    if not text:
        return {}
    if text[0] != ";":
        raise RemoteSIPError(f"bad {what}: unexpected {text[:30]!r}")
    params: dict[str, str | None] = {}
    for piece in split_list(text[1:], ";"):
        # generic-param = token [ EQUAL gen-value ] ; EQUAL = SWS "=" SWS
        name, eq, value = piece.partition("=")
        name = name.rstrip()
        if not grammar.PARAM_NAME.fullmatch(name):
            raise RemoteSIPError(f"bad {what}: bad parameter {piece[:30]!r}")
        if eq:
            value = value.lstrip()
            if not grammar.GEN_VALUE.fullmatch(value):
                raise RemoteSIPError(f"bad {what}: bad value for parameter {name[:30]!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params.items())
