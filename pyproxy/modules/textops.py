"""textops: text operations on the message (OpenSER's textops).

Header operations go through the message's recorded edits (``append_hf``, ``remove_hf``,
``is_present_hf``). The regex ones (``search``, ``search_append``, ``replace``, ``subst``) work on
the message text as it would be sent now: the message is serialized, rewritten, and parsed again,
with Content-Length fixed. Regexes are compiled once, at load time, case-insensitive as OpenSER's.
"""

from __future__ import annotations

import re

from ..script.exports import FixupError, Function, ModuleExports, RouteType
from ..script.fixups import format_string, text
from ..script.regex import compile_posix
from ..sip import SIPError, parse_without_content_length

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
    except SIPError:
        return -1           # the rewrite broke the message: keep the old one
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


def subst(ctx, regex, template, count):
    current = _text_of(ctx)
    try:
        new, n = regex.subn(template, current, count=count)
    except (re.error, IndexError):
        return -1
    return _rewrite(ctx, new) if n else -1


def _regex(arg, i):
    pattern = text(arg, i)
    try:
        return compile_posix(pattern, re.IGNORECASE | re.MULTILINE)
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
    """``/regex/replacement/flags`` (any delimiter), flags i (ignore case) and g (every match)."""
    expr = text(args[0], 0)
    if len(expr) < 4:
        raise FixupError("argument 1 must look like /regex/replacement/flags", 0)
    sep = expr[0]
    parts = re.split(rf"(?<!\\){re.escape(sep)}", expr[1:])
    if len(parts) != 3:
        raise FixupError(f"argument 1 must look like {sep}regex{sep}replacement{sep}flags, found '{expr}'", 0)
    pattern, replacement, flags = parts
    if set(flags) - set("ig"):
        raise FixupError(f"argument 1: unknown subst flags '{flags}' (use i and g)", 0)
    try:
        regex = compile_posix(pattern, re.MULTILINE | (re.IGNORECASE if "i" in flags else 0))
    except re.error as e:
        raise FixupError(f'argument 1: bad regular expression "{pattern}": {e}', 0) from None
    replacement = replacement.replace(f"\\{sep}", sep)
    # OpenSER's back-references are one digit: \1192 is group 1 then "192", never group 11
    replacement = re.sub(r"\\(\d)", r"\\g<\1>", replacement)
    return regex, replacement, 0 if "g" in flags else 1


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
