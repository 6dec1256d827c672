"""The optional C accelerator of the parser and serializer (``_speedups.c``): its functions, or
None for each.

It is built at install when a C compiler and Python's headers are there, and skipped cleanly
when not (``tools/pyproxy_build.py``). ``PYPROXY_NO_EXTENSIONS=1`` in the environment turns it
off at run time (and at build time); a module built from another version of ``_speedups.c``
(an old in-place build of an editable install) is not used either. Pure Python is the
reference: the accelerated functions only take the common, well-formed case and hand everything
else back to it.
"""

from __future__ import annotations

import os

API = 10                    # what this file expects of _speedups (its SPEEDUPS_API)

scan_head = scan_via = edited_block = serialized = head_message = datagram_message = stream_message = None
use_types = None
response_head = sip_uri_parts = name_addr_parts = digest_params = None
if os.environ.get("PYPROXY_NO_EXTENSIONS", "0") in ("", "0"):
    try:
        from . import _speedups
    except ImportError:         # not built here: no compiler at install, or a source checkout
        _speedups = None
    if getattr(_speedups, "API", None) == API:      # (one built from another version: not used)
        scan_head, scan_via, edited_block = _speedups.scan_head, _speedups.scan_via, _speedups.edited_block
        serialized = _speedups.serialized
        head_message, datagram_message = _speedups.head_message, _speedups.datagram_message
        stream_message = _speedups.stream_message
        use_types = _speedups.use_types
        response_head, sip_uri_parts = _speedups.response_head, _speedups.sip_uri_parts
        name_addr_parts, digest_params = _speedups.name_addr_parts, _speedups.digest_params

FUNCTIONS = ("scan_head", "scan_via", "edited_block", "serialized", "head_message", "datagram_message",
             "stream_message", "response_head", "sip_uri_parts", "name_addr_parts", "digest_params")  # (the paths)
ENABLED = scan_head is not None
