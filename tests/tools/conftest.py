"""Fixtures for the tools' tests: `ctl` runs the real pyproxyctl (as ``python -m pyproxy.ctl``
and as the installed console script) in a fresh working directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyproxy.certs import make_root_ca

_INSTALLED = Path(sys.executable).with_name("pyproxyctl")
LAUNCHERS = {
    "module": [sys.executable, "-m", "pyproxy.ctl"],
    "script": [str(_INSTALLED)],
}


class Ctl:
    def __init__(self, argv0, cwd):
        self.argv0, self.cwd = argv0, cwd

    def __call__(self, *args, status=0):
        """Run pyproxyctl ARGS in the test's directory, assert its exit status and return the
        CompletedProcess."""
        proc = subprocess.run([*self.argv0, *map(str, args)], cwd=self.cwd, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
        return proc


@pytest.fixture(params=sorted(LAUNCHERS))
def ctl(request, tmp_path):
    if request.param == "script" and not _INSTALLED.exists():
        pytest.fail(f"{_INSTALLED} is missing: run pip install -e . to install pyproxyctl")
    return Ctl(LAUNCHERS[request.param], tmp_path)


@pytest.fixture
def ca_dir(tmp_path):
    """An unencrypted root CA made by the library (the command's own tests make theirs)."""
    directory = tmp_path / "rootCA"
    make_root_ca(directory)
    return directory
