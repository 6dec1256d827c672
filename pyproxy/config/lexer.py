"""Tokens of the OpenSER script language.

Every token knows its position and whether white space came before it: values such as
``tls:1.2.3.4:5061`` or ``sip.example.com`` are written without quotes in the seed, and the parser
glues adjacent tokens (no space between them) back into one word.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import ConfigError, Position


class T(enum.Enum):
    ID = "identifier"
    NUMBER = "number"
    STRING = "string"
    IPV4 = "IPv4 address"
    IPV6 = "IPv6 reference"
    PVAR = "pseudo-variable"
    OP = "operator"
    EOF = "end of file"


@dataclass(frozen=True, slots=True)
class Token:
    kind: T
    text: str       # identifier/number/pvar text, operator spelling, or the decoded string value
    pos: Position
    spaced: bool    # white space or a comment stood right before this token

    def describe(self) -> str:
        if self.kind is T.EOF:
            return "end of file"
        if self.kind is T.STRING:
            return f'string "{self.text}"'
        return f"'{self.text}'"


_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<nl>\n)
  | (?P<line_comment>\#[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<ipv6>\[[0-9A-Fa-f]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\])
  | (?P<ipv4>\d{1,3}(?:\.\d{1,3}){3}(?![\w.]))
  | (?P<number>0x[0-9A-Fa-f]+|\d+)(?![A-Za-z_])
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<pvar>\$(?:[A-Za-z_][A-Za-z0-9_]*)(?:\([^()\n]*\))?)
  | (?P<string>["'])
  | (?P<op>==|!=|=~|!~|>=|<=|&&|\|\||[=><!(){}\[\];,:.\-+/*|&])     # longest first: '==' before '='
""", re.VERBOSE)

_COMMENT_MARK = re.compile(r"/\*|\*/")
# Escapes of double-quoted strings. Not \0: subst's replacement reads \0 as the whole match (a
# NUL went out in the message). Single-quoted strings are raw, as in OpenSER's cfg.lex.
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}


class Lexer:
    def __init__(self, text: str, file: str):
        self.text = text
        self.file = file
        self.line = 1
        self.line_start = 0

    def pos_at(self, offset: int) -> Position:
        return Position(self.file, self.line, offset - self.line_start + 1)

    def tokens(self) -> list[Token]:
        text, out, i, spaced = self.text, [], 0, True
        while i < len(text):
            m = _TOKEN_RE.match(text, i)
            if m is None:
                raise ConfigError(self.pos_at(i), _unexpected(text, i))
            kind, start, i = m.lastgroup, i, m.end()
            if kind == "ws" or kind == "line_comment":
                spaced = True
                continue
            if kind == "nl":
                self.line, self.line_start, spaced = self.line + 1, i, True
                continue
            pos = self.pos_at(start)
            if kind == "block_comment":
                i = self._skip_block_comment(start)
                spaced = True
                continue
            if kind == "string":
                value, i = self._string(start)
                out.append(Token(T.STRING, value, pos, spaced))
            else:
                out.append(Token(_KINDS[kind], m.group(), pos, spaced))
            spaced = False
        out.append(Token(T.EOF, "", self.pos_at(i), True))
        return out

    def _skip_block_comment(self, start: int) -> int:
        """Comments nest, as in OpenSER: commenting out a block that holds comments works."""
        depth, i = 0, start
        for m in _COMMENT_MARK.finditer(self.text, start):
            depth += 1 if m.group() == "/*" else -1
            if depth == 0:
                i = m.end()
                break
        else:
            raise ConfigError(self.pos_at(start), "comment opened with '/*' is never closed with '*/'")
        self._count_lines(start, i)
        return i

    def _count_lines(self, start: int, end: int) -> None:
        newlines = self.text.count("\n", start, end)
        if newlines:
            self.line += newlines
            self.line_start = self.text.rfind("\n", start, end) + 1

    def _string(self, start: int) -> tuple[str, int]:
        quote, text, i, chars = self.text[start], self.text, start + 1, []
        while i < len(text):
            c = text[i]
            if c == quote:
                self._count_lines(start, i)
                return "".join(chars), i + 1
            if c == "\\" and i + 1 < len(text) and quote == '"':
                nxt = text[i + 1]
                chars.append(_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            chars.append(c)
            i += 1
        raise ConfigError(self.pos_at(start), f"string opened with {quote} is never closed")


_KINDS = {"ipv6": T.IPV6, "ipv4": T.IPV4, "number": T.NUMBER, "id": T.ID, "pvar": T.PVAR, "op": T.OP}


def tokenize(text: str, file: str) -> list[Token]:
    return Lexer(text.removeprefix("\ufeff"), file).tokens()     # a BOM some editors write


def _unexpected(text: str, i: int) -> str:
    word = re.match(r"\d[\w.-]*", text[i:])
    if word:        # 1k, 1und1.de: a word that starts with a digit is no number, and no name
        return (f"'{word.group()}' is neither a number nor a name: write a number, or put the text "
                f'in quotes ("{word.group()}")')
    return f"unexpected character {text[i]!r}"
