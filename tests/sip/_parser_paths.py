"""The parser has two paths: pure Python (the reference) and the optional C accelerator
(pyproxy/sip/_speedups.c, which takes the well-formed common case). A test module that imports
``parser_path`` (an autouse fixture) runs each of its tests on both; where the accelerator is
not built, its half is skipped with the reason."""

from __future__ import annotations

import contextlib

import pytest

from pyproxy.sip import accel


@pytest.fixture(scope="module", params=["python", "c"], autouse=True)
def parser_path(request):
    """Module-scoped (hypothesis refuses function-scoped fixtures): the path for every test of
    the module, restored after it."""
    if request.param == "c" and not accel.ENABLED:
        pytest.skip("the C accelerator is not built here (no compiler at install, or "
                    "PYPROXY_NO_EXTENSIONS=1)")
    with pure_python(request.param == "python"):
        yield request.param


@contextlib.contextmanager
def pure_python(on: bool = True):
    """Within it, the parser runs without the accelerator (when ``on``)."""
    built = {name: getattr(accel, name) for name in accel.FUNCTIONS}
    if on:
        for name in built:
            setattr(accel, name, None)
    try:
        yield
    finally:
        for name, function in built.items():
            setattr(accel, name, function)
