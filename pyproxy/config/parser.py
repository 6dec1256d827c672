"""Parser for the OpenSER script language: tokens in, syntax tree out.

Grammar (OpenSER 1.x, as the seed uses it)::

    config     := item*
    item       := NAME '=' value [';']
                | 'loadmodule' STRING [';']
                | 'modparam' '(' value ',' value ',' value ')' [';']
                | ROUTE ['[' (NUMBER|NAME) ']'] block
                | 'tls_server_domain' '[' socket ']' '{' (NAME '=' value [';'])* '}'
                | 'tls_client_domain' '[' (STRING|socket) ']' '{' ... '}'
    block      := '{' stmt* '}'
    stmt       := 'if' '(' cond ')' body ['else' body] | block | action ';' | ';'
    action     := NAME '(' [arg (',' arg)*] ')' | 'break' | 'exit' | 'drop'
                | 'return' ['(' NUMBER ')'] | 'route' '(' NUMBER|NAME ')' | PVAR '=' arg
    cond       := and ('||' and)* ; and := not ('&&' not)* ; not := '!' not | atom
    atom       := '(' cond ')' | call | operand OP operand

A value written without quotes is the run of tokens with no space between them, so
``listen=tls:1.2.3.4:5061`` and ``alias=sip.example.com`` are one word each.

Syntax errors do not stop the parse: the parser records the error, skips to the end of the
statement and goes on, so that one run reports every error.
"""

from __future__ import annotations

import dataclasses
import os

from .ast import (Assign, BoolOp, Call, Compare, Config, Control, DomainSide, If, Keyword, LoadModule,
                  ModParam, Myself, Not, PVar, Return, RouteBlock, RouteCall, RouteKind, SetPV, Stop,
                  TLSDomain, Value, ValueKind, route_name)
from .errors import ConfigError, ErrorList
from .lexer import T, Token, tokenize

ROUTE_KINDS = {k.value: k for k in RouteKind}
STOPS = {s.value: s for s in Stop}
# Message properties usable on the left of a comparison (OpenSER's core "expression elements").
KEYWORDS = frozenset({"method", "uri", "from_uri", "to_uri", "src_ip", "dst_ip", "src_port",
                      "dst_port", "proto", "af", "status", "msg_len"})
COMPARISON_OPS = frozenset({"==", "!=", "=~", "!~", ">", "<", ">=", "<="})
# Tokens that can be part of an unquoted word when nothing separates them.
_GLUE = frozenset({T.ID, T.NUMBER, T.IPV4, T.IPV6})
_GLUE_OPS = frozenset({":", ".", "-", "+", "/", "*"})


class Parser:
    def __init__(self, tokens: list[Token], file: str, errors: ErrorList):
        self.toks = tokens
        self.i = 0
        self.file = file
        self.errors = errors

    # -- token helpers --------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, n: int = 1) -> Token:
        return self.toks[min(self.i + n, len(self.toks) - 1)]

    def advance(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind is not T.EOF:
            self.i += 1
        return tok

    def is_op(self, text: str) -> bool:
        return self.tok.kind is T.OP and self.tok.text == text

    def accept(self, text: str) -> bool:
        if self.is_op(text):
            self.i += 1
            return True
        return False

    def expect(self, text: str, what: str = "") -> Token:
        if not self.is_op(text):
            self.fail(f"expected '{text}'{what}")
        return self.advance()

    def fail(self, expected: str, tok: Token | None = None):
        tok = tok or self.tok
        raise ConfigError(tok.pos, f"{expected}, found {tok.describe()}")

    # -- top level ------------------------------------------------------------------------------
    def parse_config(self) -> Config:
        items = []
        while self.tok.kind is not T.EOF:
            start = self.i
            try:
                item = self.item()
                if item is not None:
                    items.append(item)
            except ConfigError as e:
                self.errors.extend([e])
                self.recover_top_level(start)
        return Config(self.file, tuple(items))

    def item(self):
        tok = self.tok
        if self.accept(";"):
            return None
        if tok.kind is not T.ID:
            self.fail("expected a parameter assignment, 'loadmodule', 'modparam' or a route block")
        name = tok.text
        if name in ROUTE_KINDS:
            return self.route_block()
        if name == "loadmodule":
            self.advance()
            path = self.advance()
            if path.kind is not T.STRING:
                self.fail('expected the module as a quoted string, e.g. loadmodule "tm"', path)
            self.accept(";")
            return LoadModule(path.text, tok.pos)
        if name == "modparam":
            return self.modparam()
        if name in ("tls_server_domain", "tls_client_domain"):
            return self.tls_domain()
        if name in STOPS or name in ("if", "else", "return"):
            self.advance()
            raise ConfigError(tok.pos, f"'{name}' is only allowed inside a route block")
        if self.peek().kind is T.OP and self.peek().text == "(":
            self.advance()
            raise ConfigError(tok.pos, f"{name}(...): function calls are only allowed inside a route block")
        if self.peek().kind is T.OP and self.peek().text == "=":
            self.advance()
            value = self.assigned_value(name)
            self.accept(";")
            return Assign(name, value, tok.pos)
        self.advance()
        self.fail(f"expected '=' after parameter name '{name}'")

    def modparam(self) -> ModParam:
        pos = self.advance().pos
        self.expect("(", " after 'modparam'")
        module = self.value("the module name")
        self.expect(",", " after the module name")
        param = self.value("the parameter name")
        self.expect(",", " after the parameter name")
        value = self.value("the parameter value")
        self.expect(")", " to close modparam(...)")
        self.accept(";")
        return ModParam(module, param, value, pos)

    def tls_domain(self) -> TLSDomain:
        tok = self.advance()
        side = DomainSide.SERVER if tok.text == "tls_server_domain" else DomainSide.CLIENT
        self.expect("[", f" after '{tok.text}'")
        selector = self.value("a socket IP:PORT" + (' or a "name"' if side is DomainSide.CLIENT else ""))
        self.expect("]", f" to close {tok.text}[...]")
        self.expect("{", f" to open the {tok.text} block")
        params = []
        while not self.accept("}"):
            ptok = self.tok
            if ptok.kind is T.EOF:
                self.fail(f"expected '}}' to close the {tok.text} block opened at line {tok.pos.line}")
            if self.accept(";"):
                continue
            if ptok.kind is not T.ID:
                self.fail("expected a TLS parameter assignment (tls_...=value)")
            self.advance()
            if not self.is_op("="):
                self.fail(f"expected '=' after parameter name '{ptok.text}'")
            params.append(Assign(ptok.text, self.assigned_value(ptok.text), ptok.pos))
            self.accept(";")
        self.accept(";")
        return TLSDomain(side, selector, tuple(params), tok.pos)

    def route_block(self) -> RouteBlock:
        tok = self.advance()
        kind = ROUTE_KINDS[tok.text]
        # route { } and onreply_route { } are the main blocks (number 0), as in OpenSER
        name = "0" if kind in (RouteKind.REQUEST, RouteKind.ONREPLY) else ""
        if self.accept("["):
            ntok = self.advance()
            if ntok.kind not in (T.NUMBER, T.ID, T.STRING):
                self.fail(f"expected a route number or name inside {tok.text}[...]", ntok)
            name = _route_name(ntok)
            self.expect("]", f" to close {tok.text}[...]")
        elif not name:
            self.fail(f"expected '[' and a number after '{tok.text}': it must be named, e.g. {tok.text}[1]")
        body = self.block(f"{tok.text} block")
        return RouteBlock(kind, name, body, tok.pos)

    def recover_top_level(self, start: int) -> None:
        """Skip to the next thing that can start a top-level item, past any unbalanced block."""
        if self.i == start:
            self.advance()
        depth = 0
        while self.tok.kind is not T.EOF:
            tok = self.tok
            if tok.kind is T.OP and tok.text == "{":
                depth += 1
            elif tok.kind is T.OP and tok.text == "}":
                depth -= 1
                if depth <= 0:
                    self.advance()
                    return
            elif depth == 0 and tok.kind is T.ID and tok.spaced and self._starts_item():
                return
            self.advance()

    def _starts_item(self) -> bool:
        tok, nxt = self.tok, self.peek()
        if tok.text in ROUTE_KINDS or tok.text in ("loadmodule", "modparam", "tls_server_domain",
                                                   "tls_client_domain"):
            return True
        return nxt.kind is T.OP and nxt.text == "=" and self.toks[self.i - 1].pos.line < tok.pos.line

    # -- values ---------------------------------------------------------------------------------
    def assigned_value(self, name: str) -> Value:
        """The value after ``name =``: on the same line, so a forgotten value is not the next line."""
        eq = self.advance()
        if self.tok.pos.line != eq.pos.line:
            raise ConfigError(eq.pos, f"expected a value for '{name}' after '=', found the end of the line")
        return self.value(f"a value for '{name}'")

    def value(self, what: str) -> Value:
        tok = self.tok
        if tok.kind is T.STRING:
            self.advance()
            return Value(ValueKind.STRING, tok.text, tok.pos)
        negative = tok.kind is T.OP and tok.text == "-" and self.peek().kind is T.NUMBER
        if tok.kind is T.NUMBER or negative:
            word = self.word()
            number = _to_int(word)
            if number is not None:
                return Value(ValueKind.NUMBER, word, tok.pos, number)
            return Value(ValueKind.WORD, word, tok.pos)
        if tok.kind in _GLUE or (tok.kind is T.OP and tok.text == "*"):
            return Value(ValueKind.WORD, self.word(), tok.pos)
        self.fail(f"expected {what}")

    def word(self) -> str:
        """Glue the current token and every following token not separated from it by space."""
        parts = [self.advance().text]
        while not self.tok.spaced and (self.tok.kind in _GLUE or
                                        (self.tok.kind is T.OP and self.tok.text in _GLUE_OPS)):
            parts.append(self.advance().text)
        return "".join(parts)

    # -- statements -----------------------------------------------------------------------------
    def block(self, what: str) -> tuple:
        open_tok = self.expect("{", f" to open the {what}")
        stmts = []
        while not self.accept("}"):
            if self.tok.kind is T.EOF:
                raise ConfigError(open_tok.pos, f"'{{' of this {what} is never closed with '}}'")
            start = self.i
            try:
                stmt = self.statement()
                if stmt is not None:
                    stmts.append(stmt)
            except ConfigError as e:
                self.errors.extend([e])
                self.recover_statement(start)
        return tuple(stmts)

    def recover_statement(self, start: int) -> None:
        """Skip to the end of the broken statement: its ';', or before the '}' closing the block."""
        if self.i == start and not self.is_op("}"):
            self.advance()
        depth = 0
        while self.tok.kind is not T.EOF:
            if self.is_op("{"):
                depth += 1
            elif self.is_op("}"):
                if depth == 0:
                    return
                depth -= 1
                if depth == 0:
                    self.advance()
                    return
            elif self.is_op(";") and depth == 0:
                self.advance()
                return
            self.advance()

    def statement(self):
        tok = self.tok
        if self.accept(";"):
            return None
        if self.is_op("{"):
            return If(None, self.block("block"), None, tok.pos)   # a bare block: always runs
        if tok.kind is T.ID and tok.text == "if":
            return self.if_statement()
        if tok.kind is T.ID and tok.text == "else":
            self.fail("'else' without a matching 'if'")
        action = self.action()
        if not self.accept(";") and not self.is_op("}"):
            self.fail(f"expected ';' after {_describe_action(action)}")
        return action

    def if_statement(self) -> If:
        pos = self.advance().pos
        self.expect("(", " after 'if'")
        cond = self.condition()
        self.expect(")", " to close the condition of 'if'")
        then = self.branch_body()
        orelse = None
        if self.tok.kind is T.ID and self.tok.text == "else":
            self.advance()
            orelse = self.branch_body()
        return If(cond, then, orelse, pos)

    def branch_body(self) -> tuple:
        if self.is_op("{"):
            return self.block("block")
        stmt = self.statement()
        return () if stmt is None else (stmt,)

    def action(self):
        tok = self.tok
        if tok.kind is T.PVAR:
            target = self.pvar()
            if not (self.accept("=")):
                self.fail(f"expected '=' to assign to {target.text}")
            return SetPV(target, self.arg(), tok.pos)
        if tok.kind is not T.ID:
            self.fail("expected a statement (a function call, 'if', 'break', 'exit', 'drop', 'return' or 'route')")
        self.advance()
        name = tok.text
        if name in STOPS:
            if self.accept("("):
                self.expect(")", f" after '{name}('")
            return Control(STOPS[name], tok.pos)
        if name == "return":
            value = 1
            if self.accept("("):
                if not self.is_op(")"):
                    v = self.value("a number")
                    if v.number is None:
                        self.fail("expected a number in return(...)", tok)
                    value = v.number
                self.expect(")", " to close return(...)")
            return Return(value, tok.pos)
        if name == "route":
            self.expect("(", " after 'route'")
            target = self.advance()
            if target.kind not in (T.NUMBER, T.ID, T.STRING):
                self.fail("expected a route number or name in route(...)", target)
            self.expect(")", " to close route(...)")
            return RouteCall(_route_name(target), tok.pos)
        return self.call_rest(tok)

    def call_rest(self, name_tok: Token) -> Call:
        if not self.accept("("):
            return Call(name_tok.text, (), name_tok.pos)    # OpenSER allows a bare name: forward;
        args = []
        if not self.accept(")"):
            while True:
                args.append(self.arg())
                if self.accept(")"):
                    break
                self.expect(",", f" or ')' in the arguments of {name_tok.text}()")
        return Call(name_tok.text, tuple(args), name_tok.pos)

    def arg(self):
        if self.tok.kind is T.PVAR:
            return self.pvar()
        return self.value("a function argument (a string, a number or a pseudo-variable)")

    def pvar(self) -> PVar:
        tok = self.advance()
        text = tok.text[1:]
        name, _, arg = text.partition("(")
        return PVar(name, arg[:-1] if arg else None, tok.pos)

    # -- conditions -----------------------------------------------------------------------------
    def condition(self):
        left = self.and_expr()
        while self.is_op("||"):
            pos = self.advance().pos
            left = BoolOp("||", left, self.and_expr(), pos)
        return left

    def and_expr(self):
        left = self.not_expr()
        while self.is_op("&&"):
            pos = self.advance().pos
            left = BoolOp("&&", left, self.not_expr(), pos)
        return left

    def not_expr(self):
        if self.is_op("!"):
            pos = self.advance().pos
            return Not(self.not_expr(), pos)
        return self.atom()

    def atom(self):
        tok = self.tok
        if self.accept("("):
            cond = self.condition()
            self.expect(")", " to close '('")
            return cond
        if tok.kind is T.PVAR:
            left = self.pvar()
            if self.tok.kind is T.OP and self.tok.text in COMPARISON_OPS:
                return self.comparison(left)
            return Compare(left, "!=", Value(ValueKind.WORD, "$null", tok.pos), tok.pos)  # "$x" alone: is set
        if tok.kind is T.ID:
            nxt = self.peek()
            if tok.text == "msg" and nxt.text == ":" and self.peek(2).text == "len" and \
                    self.peek(3).kind is T.OP and self.peek(3).text in COMPARISON_OPS:
                self.i += 3         # OpenSER spelled msg_len msg:len
                return self.comparison(Keyword("msg_len", tok.pos))
            if tok.text in KEYWORDS and nxt.kind is T.OP and nxt.text in COMPARISON_OPS:
                self.advance()
                return self.comparison(Keyword(tok.text, tok.pos))
            if nxt.kind is T.OP and nxt.text == "(":
                self.advance()
                if tok.text == "route":
                    self.advance()
                    target = self.advance()
                    self.expect(")", " to close route(...)")
                    return RouteCall(_route_name(target), tok.pos)
                return self.call_rest(tok)
            if tok.text in KEYWORDS:
                self.advance()
                self.fail(f"expected a comparison operator (==, !=, =~, !~) after '{tok.text}'")
            self.fail(f"expected a condition: a function call, or one of {', '.join(sorted(KEYWORDS))} "
                      f"or a pseudo-variable compared with a value; '{tok.text}' is none of them")
        self.fail("expected a condition")

    def comparison(self, left) -> Compare:
        op = self.advance()
        tok = self.tok
        if tok.kind is T.ID and tok.text == "myself":
            self.advance()
            right = Myself(tok.pos)
        elif tok.kind is T.PVAR:
            right = self.pvar()
        else:
            right = self.value(f"a value to compare with after '{op.text}'")
        return Compare(left, op.text, right, op.pos)


def _to_int(word: str) -> int | None:
    try:
        if len(word) > 1 and word[0] == "0" and word.isdigit():
            return int(word, 8)     # OpenSER reads 0600 as octal (file modes)
        return int(word, 0)
    except ValueError:
        return None


def _describe_action(action) -> str:
    if isinstance(action, Call):
        return f"{action.name}(...)"
    if isinstance(action, Control):
        return f"'{action.what.value}'"
    if isinstance(action, Return):
        return "'return'"
    if isinstance(action, RouteCall):
        return f"route({action.target})"
    return "the statement"


INCLUDE_DEPTH = 10      # include_file within included files, as deep as this


def parse(text: str, file: str, errors: ErrorList) -> Config:
    """Parse a whole config; syntax errors go to ``errors`` (the tree holds what could be read)."""
    included: list[tuple[str, str]] = []
    try:
        tokens = _with_includes(tokenize(text, file), file, included, (os.path.abspath(file),))
    except ConfigError as e:
        errors.extend([e])
        return Config(file, ())
    config = Parser(tokens, file, errors).parse_config()
    return Config(config.file, config.items, tuple(included))


def _with_includes(tokens: list[Token], file: str, included: list, chain: tuple) -> list[Token]:
    """``include_file "path"`` (OpenSER 1.2+), anywhere a statement or an item may stand: the
    file's tokens in its place, their positions in that file. A relative path is in the folder of
    the file that includes it."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not (tok.kind is T.ID and tok.text == "include_file"):
            out.append(tok)
            i += 1
            continue
        path_tok = tokens[i + 1] if i + 1 < len(tokens) else Token(T.EOF, "", tok.pos, True)
        if path_tok.kind is not T.STRING:
            raise ConfigError(path_tok.pos, f'expected the file as a quoted string, e.g. include_file '
                                            f'"routes.cfg", found {path_tok.describe()}')
        path = path_tok.text if os.path.isabs(path_tok.text) else \
            os.path.join(os.path.dirname(os.path.abspath(file)), path_tok.text)
        if os.path.abspath(path) in chain:
            raise ConfigError(tok.pos, f'include_file "{path_tok.text}": the file includes itself '
                                       f"(through {' -> '.join(chain)})")
        if len(chain) > INCLUDE_DEPTH:
            raise ConfigError(tok.pos, f'include_file "{path_tok.text}": files include each other more '
                                       f"than {INCLUDE_DEPTH} deep")
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(path_tok.pos, f'include_file "{path_tok.text}": cannot read {path}: '
                                            f"{e.strerror}") from None
        included.append((path, text))
        inner = tokenize(text, path)[:-1]           # without its end of file
        if inner:       # never glued to the word before the include
            inner[0] = dataclasses.replace(inner[0], spaced=True)
        out += _with_includes(inner, path, included, chain + (os.path.abspath(path),))
        i += 2
        if i < len(tokens) and tokens[i].kind is T.OP and tokens[i].text == ";":
            i += 1
    return out


def _route_name(tok: Token) -> str:
    return route_name(tok.text) if tok.kind is T.NUMBER else tok.text
