#!/usr/bin/env python3
"""Rewrite README.rst's parameter reference from the parameter registry.

Usage: python3 tools/update_readme.py [--check]   (--check: exit 1 if README is out of date)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyproxy.config.settings import reference_rst

README = Path(__file__).resolve().parents[1] / "README.rst"
BEGIN, END = ".. BEGIN PARAMETER REFERENCE\n", ".. END PARAMETER REFERENCE\n"


def updated(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{reference_rst()}\n{END}{tail}"


def main() -> int:
    text = README.read_text()
    new = updated(text)
    if "--check" in sys.argv:
        return 0 if new == text else 1
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
