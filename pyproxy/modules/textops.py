"""textops: text operations on the message (OpenSER's textops).

Header operations go through the message's recorded edits (``append_hf``, ``remove_hf``,
``is_present_hf``). The regex ones (``search``, ``search_append``, ``replace``, ``subst``) work on
the message text as it would be sent now: the message is serialized, rewritten, and parsed again,
with Content-Length fixed. Regexes are compiled once, at load time, case-insensitive as OpenSER's.
"""

from __future__ import annotations

import logging
import re

from ..script.exports import FixupError, Function, ModuleExports, RouteType
from ..script.fixups import format_string, text
from ..script.regex import compile_posix
from ..sip import Request, SIPError, parse_without_content_length

_HEADER_NAME = re.compile(r"[A-Za-z0-9!%*_+`'~.\-]+")


def append_hf(ctx, render):
    try:
        ctx.msg.add_header_raw(render(ctx))
    except SIPError:
        return -1
    return 1


def remove_hf(ctx, name):
    try:
        return 1 if ctx.msg.remove_header(name) else -1
    except SIPError:
        return -1


def is_present_hf(ctx, name):
    return 1 if ctx.msg.has_header(name) else -1


def _text_of(ctx) -> str:
    return ctx.msg.serialize().decode("utf-8", "surrogateescape")


def search(ctx, regex):
    return 1 if regex.search(_text_of(ctx)) else -1


def _rewrite(ctx, new_text: str) -> int:
    """Make the rewritten text the message: parsed again, Content-Length recomputed."""
    try:
        msg = parse_without_content_length(new_text.encode("utf-8", "surrogateescape"))
    except SIPError as e:   # the rewrite broke the message: keep the old one, and say so
        ctx.runtime.log(logging.WARNING, f"textops: the rewritten message does not parse ({e}); "
                                         "it is left as it was")
        return -1
    ctx.msg = msg
    return 1


def search_append(ctx, regex, render):
    current = _text_of(ctx)
    m = regex.search(current)
    if m is None:
        return -1
    return _rewrite(ctx, current[:m.end()] + render(ctx) + current[m.end():])


def replace(ctx, regex, render):
    current = _text_of(ctx)
    new, n = regex.subn(lambda m: render(ctx), current, count=1)
    return _rewrite(ctx, new) if n else -1


def subst(ctx, regex, parts, count):
    new, n = regex.subn(lambda m: _expand(parts, m, ctx), _text_of(ctx), count=count)
    return _rewrite(ctx, new) if n else -1


def _expand(parts: tuple, m: re.Match, ctx) -> str:
    out = []
    for part in parts:
        if part.__class__ is str:
            out.append(part)
        elif part is _URI:
            out.append(ctx.msg.ruri if isinstance(ctx.msg, Request) else "")
        else:
            out.append(m.group(part) or "")
    return "".join(out)


def _regex(arg, i):
    pattern = text(arg, i)
    try:
        return compile_posix(pattern, re.IGNORECASE | re.MULTILINE, newline=True)
    except re.error as e:
        raise FixupError(f'argument {i + 1}: bad regular expression "{pattern}": {e}', i) from None


def _header_name(arg, i):
    name = text(arg, i)
    if not _HEADER_NAME.fullmatch(name):
        raise FixupError(f"argument {i + 1} must be a header name, found '{name}'", i)
    return name


def _append_fixup(args, env):
    written = text(args[0], 0)
    if not written.endswith("\r\n") and not written.endswith("\n"):
        raise FixupError('argument 1 must end with "\\r\\n" (it is a whole header line)', 0)
    return (format_string(args[0], 0),)


def _subst_fixup(args, env):
    """``/regex/replacement/flags`` (any delimiter) as SER's subst_parser read it: flags i (ignore
    case), g (every match) and s (the regex may span lines: without it, as with REG_NEWLINE,
    '^' and '$' match at each line and neither '.' nor ``[^...]`` matches a newline)."""
    expr = text(args[0], 0)
    if len(expr) < 4:
        raise FixupError("argument 1 must look like /regex/replacement/flags", 0)
    sep = expr[0]
    parts = re.split(rf"(?<!\\){re.escape(sep)}", expr[1:])
    if len(parts) != 3:
        raise FixupError(f"argument 1 must look like {sep}regex{sep}replacement{sep}flags, found '{expr}'", 0)
    pattern, replacement, flags = parts
    if set(flags) - set("igs"):
        raise FixupError(f"argument 1: unknown subst flags '{flags}' (use i, g and s)", 0)
    lines = "s" not in flags
    try:
        regex = compile_posix(pattern, (re.MULTILINE if lines else re.DOTALL) |
                              (re.IGNORECASE if "i" in flags else 0), newline=lines)
    except re.error as e:
        raise FixupError(f'argument 1: bad regular expression "{pattern}": {e}', 0) from None
    parts = _replacement(replacement)
    groups = [p for p in parts if p.__class__ is int and p > regex.groups]
    if groups:
        raise FixupError(f"argument 1: the replacement refers to \\{groups[0]}, but the regex has "
                         f"{regex.groups} group{'s' if regex.groups != 1 else ''}", 0)
    return regex, parts, 0 if "g" in flags else 1


_URI = object()         # \u in a subst replacement: the Request-URI
_CHAR_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def _replacement(text: str) -> tuple:
    """SER's escapes: \\0 (the match) to \\9 (one digit: \\1192 is group 1 then "192"), \\n \\r
    \\t, \\u (the Request-URI); any other escaped character stands for itself (\\\\, \\/)."""
    parts, literal, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 == len(text):
            literal.append(ch)
            i += 1
            continue
        escaped = text[i + 1]
        i += 2
        if escaped.isdigit() or escaped == "u":
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_URI if escaped == "u" else int(escaped))
        else:
            literal.append(_CHAR_ESCAPES.get(escaped, escaped))
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def _two(conv_second):
    return lambda args, env: (_regex(args[0], 0), conv_second(args[1], 1))


REQUEST_LIKE = RouteType.REQUEST | RouteType.FAILURE | RouteType.BRANCH

EXPORTS = ModuleExports(
    name="textops",
    doc="Text operations on messages.",
    functions=(
        Function("append_hf", append_hf, (1,), 'Append a header line: append_hf("P-hint: x\\r\\n").',
                 _append_fixup),
        Function("remove_hf", remove_hf, (1,), "Remove every header with this name.",
                 lambda args, env: (_header_name(args[0], 0),)),
        Function("is_present_hf", is_present_hf, (1,), "True if a header with this name is present.",
                 lambda args, env: (_header_name(args[0], 0),)),
        Function("search", search, (1,), "True if the regular expression matches the message.",
                 lambda args, env: (_regex(args[0], 0),)),
        Function("search_append", search_append, (2,), "Insert text after the first match.",
                 _two(format_string)),
        Function("replace", replace, (2,), "Replace the first match with text.", _two(format_string)),
        Function("subst", subst, (1,), "sed-like substitution: subst('/re/repl/flags').", _subst_fixup),
    ),
)
