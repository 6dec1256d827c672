"""OpenSER's regular expressions, compiled with Python's re.

OpenSER compiled a script's regexes (``uri=~``, textops' ``search``, ``replace``, ``subst``) with
POSIX regcomp, extended syntax. Python reads nearly all of them the same way. Character classes
inside brackets are the exception users meet: POSIX ``[[:digit:]]`` matches a digit, but re reads
a set of '[', ':', 'd', 'i', 'g', 't' followed by a literal ']', so ``uri=~"^sip:[[:digit:]]+@"``
would silently never match. Bracket expressions are therefore rewritten before compiling:
``[:name:]`` becomes its ASCII ranges; '[', '&', '~', '|' and a '-' that is not a range's
operator become escaped literals (literals in POSIX; in re they draw a FutureWarning about set
operations); collating symbols ``[.a.]`` and equivalence classes ``[=a=]`` are refused, and so
are the ranges glibc refused (``[a-c-e]``, ``[+-[:digit:]]``). Backslash escapes are kept as re
reads them, which is what people who write ``[\\.]`` mean, except glibc's word edges ``\\<`` and
``\\>``, which re would read as '<' and '>'.

textops compiled with REG_NEWLINE, which re.MULTILINE matches for '^' and '$' and re's '.' already
honours, but under which a non-matching list such as ``[^;]`` does not match a newline either:
``newline=True`` adds it, so that ``^From:[^;]*`` stops at the end of its line as in OpenSER. It
also takes CRLF as the end of a line: '.', '$' and non-matching lists stop before the CR (in
OpenSER ``.*$`` took the CR in, and a replacement without it left a bare LF behind).
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
    python = translate(pattern, newline)
    try:
        return re.compile(python, flags)
    except re.error as e:
        if python == pattern or e.pos is None:
            raise
        raise re.error(e.msg) from None     # its position is in the rewritten pattern, not the user's
    except (OverflowError, RecursionError) as e:     # a{9999999999}, parentheses nested thousands deep
        raise re.error(str(e)) from None


def translate(pattern: str, newline: bool = False) -> str:
    out = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            out.append(_GNU_WORD_EDGES.get(pattern[i:i + 2], pattern[i:i + 2]))
            i += 2
        elif ch == "[":
            i = _bracket(pattern, i + 1, out, newline)
        else:
            out.append(_LINE_END.get(ch, ch) if newline else ch)
            i += 1
    return "".join(out)


# glibc's word edges, which re would read as a literal '<' and '>'
_GNU_WORD_EDGES = {"\\<": r"\b(?=\w)", "\\>": r"\b(?<=\w)"}

# In newline mode a SIP line ends with CRLF: '.' and '$' stop before its CR, so that
# subst("/^Warning: .*$/.../") replaces the header's value and leaves its line end alone.
_LINE_END = {".": r"[^\r\n]", "$": r"(?=\r?$)"}


def _bracket(pattern: str, i: int, out: list, newline: bool) -> int:
    """Copy the bracket expression starting after its '[' at ``i``; returns where it ends.

    A '-' that is a range's end point, or a member of its own, is written escaped: re warns of
    set differences at any '--', and reads ``[\\--z]`` as POSIX reads ``[--z]``."""
    n = len(pattern)
    out.append("[")
    if pattern.startswith("^", i):
        out.append(r"^\r\n" if newline else "^")
        i += 1
    first = i
    starts_range = False     # the last member written can be the first end point of a range
    if pattern.startswith("]", i):         # first, ']' is a member (POSIX and re agree)
        out.append(r"\]")
        i += 1
        starts_range = True
    ends_range = False      # the member read next is the second end point of a range
    while i < n and pattern[i] != "]":
        ch = pattern[i]
        member = True
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
        elif pattern.startswith("[:", i):
            if ends_range:
                raise re.error("a range cannot end at a character class")
            i = _posix_class(pattern, i, out)
            member = False
        elif pattern.startswith(("[.", "[="), i):
            kind = "collating symbols" if pattern[i + 1] == "." else "equivalence classes"
            raise re.error(f"{kind} such as {pattern[i:i + 2]}a{pattern[i + 1]}] are not supported: "
                           "write the character itself")
        elif ch == "-" and i + 1 < n and pattern[i + 1] != "]" and not ends_range and i != first:
            if not starts_range:    # as glibc's regcomp, which OpenSER used, says (REG_ERANGE)
                raise re.error("a '-' after a range or a character class starts no range: write a "
                               "'-' that is a member first or last in the brackets")
            out.append("-")         # a range
            i += 1
            starts_range, ends_range = False, True
            continue
        else:
            out.append("\\" + ch if ch in "[&~|-" else ch)
            i += 1
        starts_range, ends_range = member and not ends_range, False
    if i < n:
        out.append("]")
    return i + 1        # an unterminated set stays unterminated: re.compile says so


def _posix_class(pattern: str, i: int, out: list) -> int:
    """Write the ranges of the class ``[:name:]`` starting at ``i``; returns where it ends."""
    end = pattern.find(":]", i + 2)
    if end == -1:
        raise re.error("'[:' opens a character class that no ':]' closes")
    name = pattern[i + 2:end]
    if name not in POSIX_CLASSES:
        raise re.error(f"unknown character class [:{name}:] (known: {', '.join(sorted(POSIX_CLASSES))})")
    out.append(POSIX_CLASSES[name])
    return end + 2
