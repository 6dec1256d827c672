"""Compiles route blocks to Python functions, once, when the config loads.

Each block becomes the source of one Python function (``def route_0(ctx): ...``) in which every
function call, pseudo-variable, regex and constant is already resolved and bound; the source is
compiled with ``compile()`` and run per message without any interpretation of the tree. Every
check (unknown function, arity, argument fix-up, route types, regexes, route(N) targets) is done
here and reported with its position; all errors of a config are collected in one run.
"""

from __future__ import annotations

import difflib
import ipaddress
import re

from ..config.ast import (BoolOp, Call, Compare, Control, If, Myself, Not, PVar, Return, RouteBlock,
                          RouteCall, RouteKind, SetPV, Stop, Value, ValueKind)
from ..config.errors import ConfigError, ErrorList
from ..config.values import Proto
from ..script.engine import Script, end_script, truth
from ..script.exports import FixupError, Function, LoadEnv, RouteType, ROUTE_TYPE_OF
from ..script.forward import destination_of_uri
from ..script.pv import PVError, compile_pv
from ..script.regex import compile_posix
from ..sip import SIPError

_STRING_KEYWORDS = frozenset({"method", "uri", "from_uri", "to_uri", "status"})
_IP_KEYWORDS = frozenset({"src_ip", "dst_ip"})
_INT_KEYWORDS = frozenset({"src_port", "dst_port", "msg_len"})
_ORDER_OPS = frozenset({">", "<", ">=", "<="})
MAX_NESTING = 60    # if blocks inside if blocks (Python stops at 100 indentation levels)


class Compiler:
    def __init__(self, blocks: list[RouteBlock], functions: dict[str, tuple[Function, str]],
                 env: LoadEnv, errors: ErrorList, hint_for_unknown=None):
        self.blocks = blocks
        self.functions = functions
        self.env = env
        self.errors = errors
        self.hint_for_unknown = hint_for_unknown or (lambda name: "")
        self.consts: dict[str, object] = {"_truth": truth, "_end": end_script}
        self.fn_names: dict[tuple[RouteKind, str], str] = {}
        self.callers: dict[tuple[RouteKind, str], RouteType] = {}

    # -- whole script ---------------------------------------------------------------------------
    def compile(self) -> Script:
        self._index_blocks()
        self.env.routes = set(self._first)
        self._route_types_of_subroutes()
        source = []
        for block in self.blocks:
            key = (block.kind, block.name)
            if self.fn_names.get(key) is None or self._first.get(key) is not block:
                continue
            self.route_type = self.callers.get(key, ROUTE_TYPE_OF[block.kind])
            self.block_kind = block.kind
            # A block that no route() calls is only ever run by Script.run(), where ending the
            # script is returning 0: no exception to raise and catch on every message.
            self.end = "_end()" if key in self.called else "return 0"
            lines = [f"def {self.fn_names[key]}(ctx):  # {block.pos}"]
            lines += self.stmts(block.body, 1)
            lines.append("    return 1")
            source.append("\n".join(lines))
        text = "\n\n".join(source) + "\n"
        script = Script(source=text)
        if self.errors:
            return script
        namespace = dict(self.consts)
        exec(compile(text, "<pyproxy script>", "exec"), namespace)
        for key, fn_name in self.fn_names.items():
            script.routes[key] = namespace[fn_name]
        return script

    def _index_blocks(self) -> None:
        self._first: dict = {}
        for block in self.blocks:
            key = (block.kind, block.name)
            if key in self._first:
                first = self._first[key]
                label = "route" if block.kind is RouteKind.REQUEST and block.name == "0" else \
                    f"{block.kind.value}[{block.name}]"
                self.errors.add(block.pos, f"{label} is defined twice (first at line {first.pos.line})")
                continue
            self._first[key] = block
            self.fn_names[key] = f"{block.kind.name.lower()}_{len(self.fn_names)}"
        if (RouteKind.REQUEST, "0") not in self._first and self.blocks:
            self.errors.add(self.blocks[0].pos, "the config has no main route{} block")

    def _route_types_of_subroutes(self) -> None:
        """route[N] blocks take the route types of every block that (transitively) calls them."""
        calls: dict = {key: set() for key in self._first}
        for key, block in self._first.items():
            for node in _walk(block.body):
                if isinstance(node, RouteCall):
                    calls[key].add((RouteKind.REQUEST, node.target))
        self.called = set().union(*calls.values())
        for key in self._first:
            if key[0] is RouteKind.REQUEST and key[1] != "0":
                continue
            kind_type, seen, todo = ROUTE_TYPE_OF[key[0]], set(), [key]
            while todo:
                for callee in calls.get(todo.pop(), ()):
                    if callee not in seen and callee in calls:
                        seen.add(callee)
                        self.callers[callee] = self.callers.get(callee, RouteType(0)) | kind_type
                        todo.append(callee)

    def const(self, obj, prefix: str = "k") -> str:
        name = f"{prefix}{len(self.consts)}"
        self.consts[name] = obj
        return name

    # -- statements -----------------------------------------------------------------------------
    def stmts(self, stmts, depth: int) -> list[str]:
        lines = []
        for s in stmts:
            lines += self.stmt(s, depth)
        return lines or ["    " * depth + "pass"]

    def stmt(self, s, depth: int) -> list[str]:
        pad = "    " * depth
        if isinstance(s, If):
            if s.cond is None:     # a bare { ... } block
                return self.stmts(s.then, depth)
            if depth > MAX_NESTING:     # Python's own limit is 100 indentation levels
                self.errors.add(s.pos, f"blocks nested more than {MAX_NESTING} deep: move the inner "
                                       "ones into a route[N]")
                return [f"{pad}pass"]
            lines, keyword = [], "if"
            while True:             # else if ... else if ...: one elif ladder, not ever deeper blocks
                lines += [f"{pad}{keyword} {self.cond(s.cond)}:"] + self.stmts(s.then, depth + 1)
                orelse = s.orelse
                if orelse and len(orelse) == 1 and isinstance(orelse[0], If) and orelse[0].cond is not None:
                    s, keyword = orelse[0], "elif"
                    continue
                if orelse:
                    lines += [f"{pad}else:"] + self.stmts(orelse, depth + 1)
                return lines
        if isinstance(s, Call):
            call = self.call(s)
            return [f"{pad}if {call} == 0: {self.end}"] if call else []
        if isinstance(s, Control):
            if s.what is Stop.BREAK:
                return [f"{pad}return 1"]
            if s.what is Stop.DROP:
                return [f"{pad}ctx.dropped = True", f"{pad}{self.end}"]
            return [f"{pad}{self.end}"]
        if isinstance(s, Return):
            return [f"{pad}{self.end}"] if s.value == 0 else [f"{pad}return {s.value}"]
        if isinstance(s, RouteCall):
            fn = self.route_ref(s)
            return [f"{pad}if {fn}(ctx) == 0: {self.end}"] if fn else []
        if isinstance(s, SetPV):
            return self.set_pv(s, pad)
        raise AssertionError(f"unknown statement {s!r}")

    def route_ref(self, s: RouteCall) -> str | None:
        name = self.fn_names.get((RouteKind.REQUEST, s.target))
        if name is None:
            self.errors.add(s.pos, f"route({s.target}) calls a route block that does not exist "
                                   f"(no route[{s.target}] {{...}} in this config)")
        return name

    def set_pv(self, s: SetPV, pad: str) -> list[str]:
        target = self.pv(s.target)
        if target is None:
            return []
        if target.set is None:
            self.errors.add(s.target.pos, f"{target.text} is read-only")
            return []
        setter = self.const(target.set, "set")
        if isinstance(s.value, PVar):
            source = self.pv(s.value)
            return [f"{pad}{setter}(ctx, {self.const(source.get, 'pv')}(ctx))"] if source else []
        value = s.value.number if s.value.number is not None else s.value.text
        return [f"{pad}{setter}(ctx, {self.const(value)})"]

    # -- calls ----------------------------------------------------------------------------------
    def call(self, c: Call) -> str | None:
        entry = self.functions.get(c.name)
        if entry is None:
            hint = self.hint_for_unknown(c.name)
            if hint is None:        # its module failed to load: that error already says why
                return None
            if not hint:
                close = difflib.get_close_matches(c.name, self.functions, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.errors.add(c.pos, f"unknown function '{c.name}'{hint}")
            return None
        fn, module = entry
        if len(c.args) not in fn.arities:
            wanted = " or ".join(map(str, fn.arities))
            plural = "" if fn.arities == (1,) else "s"
            self.errors.add(c.pos, f"{c.name}() takes {wanted} argument{plural}, found {len(c.args)}")
            return None
        if not (fn.route_types & self.route_type) == self.route_type:
            where = self.block_kind.value
            self.errors.add(c.pos, f"{c.name}() cannot be used in {where}"
                                   f"{'' if where == 'route' else ' blocks'} (or routes called from it)")
            return None
        try:
            fixed = fn.fixup(c.args, self.env) if fn.fixup else tuple(_plain(a) for a in c.args)
        except FixupError as e:
            pos = c.args[e.arg_index].pos if e.arg_index is not None and e.arg_index < len(c.args) else c.pos
            self.errors.add(pos, f"{c.name}(): {e}")
            return None
        except PVError as e:
            self.errors.add(c.pos, f"{c.name}(): {e}")
            return None
        # The fixed arguments become constants of the generated code: one Python call per use.
        args = "".join(f", {self.const(a)}" for a in fixed)
        return f"{self.const(fn.impl, 'f')}(ctx{args})"

    def pv(self, p: PVar):
        try:
            return compile_pv(p.name, p.arg)
        except PVError as e:
            self.errors.add(p.pos, str(e))
            return None

    # -- conditions -----------------------------------------------------------------------------
    def cond(self, c) -> str:
        if isinstance(c, BoolOp):       # a || b || c ... flat: Python nests 200 parentheses at most
            op = " and " if c.op == "&&" else " or "
            return "(" + op.join(map(self.cond, _operands(c))) + ")"
        if isinstance(c, Not):
            return f"(not {self.cond(c.expr)})"
        if isinstance(c, Call):
            call = self.call(c)
            return f"_truth({call})" if call else "False"
        if isinstance(c, RouteCall):
            fn = self.route_ref(c)
            return f"_truth({fn}(ctx))" if fn else "False"
        if isinstance(c, Compare):
            try:
                return self.compare(c)
            except ConfigError as e:
                self.errors.extend([e])
                return "False"
        raise AssertionError(f"unknown condition {c!r}")

    def compare(self, c: Compare) -> str:
        if isinstance(c.left, PVar):
            pv = self.pv(c.left)
            if pv is None:
                return "False"
            return self.compare_value(c, self.const(pv.get, "pv") + "(ctx)", pv.text)
        name = c.left.name
        if name in _STRING_KEYWORDS:
            return self.compare_string(c, name)
        if name in _IP_KEYWORDS:
            return self.compare_ip(c, name)
        if name in _INT_KEYWORDS:
            return self.compare_int(c, f"{self.const(_GETTERS[name], 'g')}(ctx)", name)
        if name == "proto":
            return self.compare_enum(c, "ctx.rcv.proto", {p.value: p for p in Proto}, "udp, tcp or tls")
        if name == "af":
            return self.compare_enum(c, "ctx.rcv.af", {"inet": 2, "inet6": 10}, "inet or inet6")
        raise AssertionError(name)

    def _need_ops(self, c: Compare, ops: str, what: str) -> None:
        if c.op not in ops.split():
            raise ConfigError(c.pos, f"operator '{c.op}' cannot be used with {what}: use {' or '.join(ops.split())}")

    def compare_string(self, c: Compare, name: str) -> str:
        getter = self.const(_GETTERS[name], "g")
        if isinstance(c.right, Myself):
            if name not in ("uri", "from_uri", "to_uri"):
                raise ConfigError(c.right.pos, f"'{name}' cannot be compared with myself")
            self._need_ops(c, "== !=", "myself")
            test = f"{self.const(_MYSELF_URI[name], 'my')}(ctx)"
            return test if c.op == "==" else f"(not {test})"
        if c.op in ("=~", "!~"):
            return self.regex_test(c, f"{getter}(ctx)")
        self._need_ops(c, "== !=", f"'{name}'")
        if isinstance(c.right, PVar):
            pv = self.pv(c.right)
            expr = f"_str_eq({getter}(ctx), {self.const(pv.get, 'pv')}(ctx))" if pv else "False"
            self.consts["_str_eq"] = _str_eq
        else:
            text = str(c.right.number) if c.right.number is not None else c.right.text
            # OpenSER compares these case-insensitively (methods, URIs, status)
            expr = f"({getter}(ctx) or '').lower() == {self.const(text.lower())}"
        return expr if c.op == "==" else f"(not {expr})"

    def regex_test(self, c: Compare, subject: str) -> str:
        if not isinstance(c.right, Value) or c.right.kind is not ValueKind.STRING:
            raise ConfigError(c.pos, f"'{c.op}' needs a regular expression in quotes on its right")
        try:
            # OpenSER used POSIX extended regexes, case-insensitive, searching anywhere
            regex = compile_posix(c.right.text, re.IGNORECASE)
        except re.error as e:
            raise ConfigError(c.right.pos, f'bad regular expression "{c.right.text}": {e}') from None
        test = f"{self.const(_regex_search(regex), 're')}({subject})"
        return test if c.op == "=~" else f"(not {test})"

    def compare_ip(self, c: Compare, name: str) -> str:
        attr = "ctx.rcv.src_ip" if name == "src_ip" else "ctx.rcv.dst_ip"
        if isinstance(c.right, Myself):
            self._need_ops(c, "== !=", "myself")
            test = f"ctx.runtime.is_myself({attr}, None)"
            return test if c.op == "==" else f"(not {test})"
        if c.op in ("=~", "!~"):
            return self.regex_test(c, attr)
        self._need_ops(c, "== !=", f"'{name}'")
        if isinstance(c.right, PVar):
            pv = self.pv(c.right)
            self.consts["_str_eq"] = _str_eq
            expr = f"_str_eq({attr}, {self.const(pv.get, 'pv')}(ctx))" if pv else "False"
        else:
            try:
                network = ipaddress.ip_network(c.right.text.strip("[]"), strict=False)
            except ValueError:
                raise ConfigError(c.right.pos, f"'{name}' is compared with an IP address or network "
                                               f"(1.2.3.4, 10.0.0.0/8, [::1]), found {c.right.describe()}") from None
            expr = f"{self.const(_in_network(network), 'net')}({attr})"
        return expr if c.op == "==" else f"(not {expr})"

    def compare_int(self, c: Compare, subject: str, what: str) -> str:
        if isinstance(c.right, Myself) or (isinstance(c.right, Value) and c.right.number is None):
            raise ConfigError(c.pos, f"'{what}' is compared with a number")
        if c.op in ("=~", "!~"):
            raise ConfigError(c.pos, f"'{what}' is a number: '{c.op}' needs a string")
        if isinstance(c.right, PVar):
            pv = self.pv(c.right)
            other = f"_int({self.const(pv.get, 'pv')}(ctx))" if pv else "None"
            self.consts["_int"] = _to_int
            return f"_cmp({subject}, {_PY_OP[c.op]!r}, {other})"
        return f"({subject} {_PY_OP[c.op]} {c.right.number})"

    def compare_enum(self, c: Compare, attr: str, members: dict, expected: str) -> str:
        self._need_ops(c, "== !=", f"'{c.left.name}'")
        word = getattr(c.right, "text", "").lower()
        if isinstance(c.right, Value) and word in members:
            return f"({attr} {'is' if c.op == '==' else 'is not'} {self.const(members[word])})" \
                if not isinstance(members[word], int) else f"({attr} {_PY_OP[c.op]} {members[word]})"
        raise ConfigError(getattr(c.right, "pos", c.pos),
                          f"'{c.left.name}' is compared with {expected}, found "
                          f"{c.right.describe() if isinstance(c.right, Value) else 'myself' if isinstance(c.right, Myself) else c.right.text}")

    def compare_value(self, c: Compare, subject: str, what: str) -> str:
        right = c.right
        if isinstance(right, Myself):
            self._need_ops(c, "== !=", "myself")
            self.consts["_host_is_myself"] = _host_is_myself
            test = f"_host_is_myself(ctx, {subject})"
            return test if c.op == "==" else f"(not {test})"
        if c.op in ("=~", "!~"):
            return self.regex_test(c, f"str({subject})")
        self.consts["_cmp"] = _cmp
        if isinstance(right, PVar):
            pv = self.pv(right)
            other = f"{self.const(pv.get, 'pv')}(ctx)" if pv else "None"
        elif right.kind is ValueKind.WORD and right.text == "$null":
            other = "None"
        elif right.number is not None:
            other = str(right.number)
        else:
            other = self.const(right.text)
        return f"_cmp({subject}, {_PY_OP[c.op]!r}, {other})"


_PY_OP = {"==": "==", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}


def _cmp(a, op: str, b) -> bool:
    """Comparison of pseudo-variable values: numbers compare as numbers, unset equals only unset."""
    if a is None or b is None:
        return (a is b) if op == "==" else (a is not b) if op == "!=" else False
    if isinstance(b, int) and not isinstance(a, int):
        a = _to_int(a)
        if a is None:
            return op == "!="
    elif isinstance(a, int) and not isinstance(b, int):
        a = str(a)
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == ">":
        return a > b
    if op == "<":
        return a < b
    if op == ">=":
        return a >= b
    return a <= b


def _to_int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _str_eq(a, b) -> bool:
    return a is not None and b is not None and str(a).lower() == str(b).lower()


def _regex_search(regex):
    search = regex.search
    return lambda subject: subject is not None and search(subject) is not None


def _in_network(network):
    def test(ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in network
        except ValueError:
            return False
    return test


def _host_is_myself(ctx, host) -> bool:
    return host is not None and ctx.runtime.is_myself(str(host), None)


def _method(ctx):
    msg = ctx.msg
    return msg.method if hasattr(msg, "method") else msg.cseq[1]


def _safe_uri(attr):
    def get(ctx):
        try:
            return str(getattr(ctx.msg, attr).uri)
        except SIPError:    # a header the peer got wrong: the comparison is false, not a crash
            return None
    return get


def _uri_is_myself(get_uri):
    def test(ctx) -> bool:
        try:
            uri = get_uri(ctx.msg)
        except SIPError:
            return False
        if uri.host is None:
            return False
        return ctx.runtime.is_myself(uri.host, uri.port or destination_of_uri(uri).proto.default_port)
    return test


_GETTERS = {
    "method": _method,
    "uri": lambda ctx: ctx.msg.ruri,
    "from_uri": _safe_uri("from_"),
    "to_uri": _safe_uri("to"),
    "status": lambda ctx: str(getattr(ctx.msg, "status", "")),
    "src_port": lambda ctx: ctx.rcv.src_port,
    "dst_port": lambda ctx: ctx.rcv.dst_port,
    "msg_len": lambda ctx: len(ctx.msg.raw),
}
_MYSELF_URI = {
    "uri": _uri_is_myself(lambda m: m.uri),
    "from_uri": _uri_is_myself(lambda m: m.from_.uri),
    "to_uri": _uri_is_myself(lambda m: m.to.uri),
}


def _plain(arg):
    if isinstance(arg, PVar):
        return arg.text
    return arg.number if arg.number is not None else arg.text


def _walk(stmts):
    for s in stmts:
        yield s
        if isinstance(s, If):
            if s.cond is not None:
                yield from _walk_cond(s.cond)
            yield from _walk(s.then)
            if s.orelse:
                yield from _walk(s.orelse)


def _walk_cond(c):
    yield c
    if isinstance(c, BoolOp):
        for operand in _operands(c):
            yield from _walk_cond(operand)
    elif isinstance(c, Not):
        yield from _walk_cond(c.expr)


def _operands(c: BoolOp) -> list:
    """The operands of a chain of one operator (``a || b || c``), in order, without recursion."""
    operands, stack = [], [c]
    while stack:
        x = stack.pop()
        if isinstance(x, BoolOp) and x.op == c.op:
            stack += (x.right, x.left)
        else:
            operands.append(x)
    return operands
