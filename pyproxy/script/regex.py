"""OpenSER's regular expressions, compiled with Python's re.

OpenSER compiled a script's regexes (``uri=~``, textops' ``search``, ``replace``, ``subst``) with
POSIX regcomp, extended syntax. Python reads nearly all of them the same way. Character classes
inside brackets are the exception users meet: POSIX ``[[:digit:]]`` matches a digit, but re reads
a set of '[', ':', 'd', 'i', 'g', 't' followed by a literal ']', so ``uri=~"^sip:[[:digit:]]+@"``
would silently never match. Bracket expressions are therefore rewritten before compiling:
``[:name:]`` becomes its ASCII ranges, and '[', '&', '~', '|' become escaped literals (literals
in POSIX; in re they draw a FutureWarning about set operations). Backslash escapes are kept as re
reads them, which is what people who write ``[\\.]`` mean.

textops compiled with REG_NEWLINE, which re.MULTILINE matches for '^' and '$' and re's '.' already
honours, but under which a non-matching list such as ``[^;]`` does not match a newline either:
``newline=True`` adds it, so that ``^From:[^;]*`` stops at the end of its line as in OpenSER.
"""

from __future__ import annotations

import re
import string

POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "0-9a-zA-Z",
    "upper": "A-Z",
    "lower": "a-z",
    "xdigit": "0-9A-Fa-f",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": re.escape(string.punctuation),
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}


def compile_posix(pattern: str, flags: int = 0, newline: bool = False) -> re.Pattern:
    """re.compile() of an OpenSER script regex; raises re.error for what neither can read.
    ``newline``: POSIX REG_NEWLINE (pass re.MULTILINE in ``flags`` too)."""
    return re.compile(translate(pattern, newline), flags)


def translate(pattern: str, newline: bool = False) -> str:
    out = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
        elif ch == "[":
            i = _bracket(pattern, i + 1, out, newline)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _bracket(pattern: str, i: int, out: list, newline: bool) -> int:
    """Copy the bracket expression starting after its '[' at ``i``; returns where it ends."""
    n = len(pattern)
    out.append("[")
    if pattern.startswith("^", i):
        out.append(r"^\n" if newline else "^")
        i += 1
    if pattern.startswith("]", i):         # first, ']' is a member (POSIX and re agree)
        out.append(r"\]")
        i += 1
    while i < n and pattern[i] != "]":
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
        elif pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end == -1:
                raise re.error("'[:' opens a character class that no ':]' closes")
            name = pattern[i + 2:end]
            if name not in POSIX_CLASSES:
                raise re.error(f"unknown character class [:{name}:] (known: "
                               f"{', '.join(sorted(POSIX_CLASSES))})")
            out.append(POSIX_CLASSES[name])
            i = end + 2
        elif ch in "[&~|":
            out.append("\\" + ch)
            i += 1
        else:
            out.append(ch)
            i += 1
    if i < n:
        out.append("]")
    return i + 1        # an unterminated set stays unterminated: re.compile says so
