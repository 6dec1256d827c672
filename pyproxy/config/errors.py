"""Configuration errors: each carries the file, line and column it is about.

A config is checked as a whole before anything runs; errors are collected (``ErrorList``) so that
one ``pyproxy -c`` run reports every problem, each as ``FILE:LINE:COL: message``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class ConfigError(Exception):
    """One problem in a config file, at a position."""

    def __init__(self, pos: Position | None, message: str):
        super().__init__(message)
        self.pos = pos
        self.message = message

    def __str__(self) -> str:
        return f"{self.pos}: {self.message}" if self.pos else self.message


class ConfigErrors(Exception):
    """Every problem found in one config, in file order."""

    def __init__(self, errors: list[ConfigError]):
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


class ErrorList:
    """Collects errors while checking continues; ``raise_if_any`` at the end of a phase."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, pos: Position | None, message: str) -> None:
        self.errors.append(ConfigError(pos, message))

    def extend(self, errors) -> None:
        self.errors.extend(errors)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            ordered = sorted(self.errors, key=lambda e: (e.pos is None, e.pos and (e.pos.line, e.pos.col)))
            raise ConfigErrors(ordered)
