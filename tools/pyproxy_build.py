"""pyproxy's PEP 517 build backend: setuptools' own, plus the optional C accelerator.

setup.cfg declares everything else, but a setuptools extension module can only be declared in
code (or in pyproject.toml's experimental tables), and the repository's top level holds no
setup.py. So pyproject.toml names this backend (``backend-path = ["tools"]``), and it runs
setuptools with the one extension added:

- ``optional=True``: when it cannot be compiled (no C compiler, no Python headers), setuptools
  warns and installs pure Python, which is the reference and passes every test alone;
- ``PYPROXY_NO_EXTENSIONS=1`` (any value but 0) at install skips it altogether (and at run
  time, pyproxy.sip.accel does not load it).

It builds on setuptools.build_meta._BuildMetaBackend, the class behind setuptools' own hooks,
whose run_setup() runs "setup()" when there is no setup.py; tests/test_packaging.py builds a
wheel, an sdist and a wheel from it with the setuptools pip picks, and would fail if that changed.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools import build_meta as _setuptools
from setuptools.command.sdist import sdist

BACKEND = "tools/pyproxy_build.py"


def extensions() -> list[Extension]:
    if os.environ.get("PYPROXY_NO_EXTENSIONS", "0") not in ("", "0"):
        return []
    return [Extension("pyproxy.sip._speedups", ["pyproxy/sip/_speedups.c"], optional=True)]


class SdistWithBackend(sdist):
    """An sdist holds this file too: pyproject.toml names it to build the wheel from the sdist."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, [*files, BACKEND] if BACKEND not in files else files)


class _Backend(_setuptools._BuildMetaBackend):
    def run_setup(self, setup_script="setup.py"):
        # setuptools runs "setup()" when there is no setup.py: the same, with the extension
        setup(ext_modules=extensions(), cmdclass={"sdist": SdistWithBackend})


_backend = _Backend()
get_requires_for_build_wheel = _backend.get_requires_for_build_wheel
get_requires_for_build_sdist = _backend.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = _backend.prepare_metadata_for_build_wheel
build_wheel = _backend.build_wheel
build_sdist = _backend.build_sdist
get_requires_for_build_editable = _backend.get_requires_for_build_editable
prepare_metadata_for_build_editable = _backend.prepare_metadata_for_build_editable
build_editable = _backend.build_editable
