"""The optional C accelerator of the parser and serializer (``_speedups.c``): its functions, or
None for each.

It is built at install when a C compiler and Python's headers are there, and skipped cleanly
when not (``tools/pyproxy_build.py``). ``PYPROXY_NO_EXTENSIONS=1`` in the environment turns it
off at run time (and at build time). Pure Python is the reference: the accelerated functions only
take the common, well-formed case and hand everything else back to it.
"""

from __future__ import annotations

import os

scan_head = scan_via = edited_block = None
if not os.environ.get("PYPROXY_NO_EXTENSIONS"):
    try:
        from ._speedups import edited_block, scan_head, scan_via  # noqa: F401 (read as accel.<name>)
    except ImportError:         # not built here: no compiler at install, or a source checkout
        pass

FUNCTIONS = ("scan_head", "scan_via", "edited_block")
ENABLED = scan_head is not None
