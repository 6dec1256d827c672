"""The package as a user installs it (`pip install .`, not editable): every subpackage and both
commands must be there. A folder without __init__.py works in a checkout and vanishes from a wheel.
The SIP parser's C accelerator is compiled into the wheel where a compiler is, and left out
cleanly where none is; an sdist builds too (pyproject.toml's backend lives in tools/)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPILER = (sysconfig.get_config_var("CC") or "cc").split()[0]
CAN_COMPILE = bool(shutil.which(COMPILER)) and Path(sysconfig.get_paths()["include"], "Python.h").exists()


def clean_copy(tmp_path: Path) -> Path:
    # a checkout's build/, *.egg-info or compiled accelerator could supply what the sources lack
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".git", "*.so",
                                                                  "bench-results", ".hypothesis"))
    return source


def build_wheel(tmp_path: Path, source: Path, **env) -> tuple[set[str], zipfile.ZipFile, str]:
    out = tmp_path / "wheel"
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(source)],
                         check=True, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    wheel, = out.glob("pyproxy-*.whl")
    archive = zipfile.ZipFile(wheel)
    return set(archive.namelist()), archive, run.stdout + run.stderr


def accelerators(names: set[str]) -> list[str]:
    return [n for n in names if n.startswith("pyproxy/sip/_speedups") and n.endswith(".so")]


def test_wheel_holds_every_package(tmp_path):
    names, archive, _ = build_wheel(tmp_path, clean_copy(tmp_path))
    packages = {str(p.relative_to(ROOT)) for p in (ROOT / "pyproxy").rglob("*.py")
                if "__pycache__" not in p.parts}
    missing = sorted(packages - names)
    assert not missing, f"not in the wheel: {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = archive.read(entry_points).decode()
    assert "pyproxy = pyproxy.cli:main" in text and "pyproxyctl = pyproxy.ctl:main" in text
    if CAN_COMPILE and os.environ.get("PYPROXY_NO_EXTENSIONS", "0") in ("", "0"):
        assert accelerators(names), "a C compiler is here, and the wheel has no compiled accelerator"


def test_without_a_compiler_the_wheel_is_pure_python(tmp_path):
    names, _, log = build_wheel(tmp_path, clean_copy(tmp_path), CC="/bin/false")
    assert not accelerators(names)
    assert "pyproxy/sip/parser.py" in names
    assert "_speedups" in log and "failed" in log      # setuptools says it skipped the extension


def test_the_sdist_builds_a_wheel(tmp_path):
    source = clean_copy(tmp_path)
    subprocess.run([sys.executable, "-c", "import pyproxy_build, sys; pyproxy_build.build_sdist(sys.argv[1])",
                    str(tmp_path / "sdist")], cwd=source, env={**os.environ, "PYTHONPATH": str(source / "tools")},
                   check=True, capture_output=True, timeout=300)
    sdist, = (tmp_path / "sdist").glob("pyproxy-*.tar.gz")
    members = tarfile.open(sdist).getnames()
    assert any(m.endswith("/tools/pyproxy_build.py") for m in members)
    assert any(m.endswith("/pyproxy/sip/_speedups.c") for m in members)
    names, _, _ = build_wheel(tmp_path, sdist)
    assert "pyproxy/sip/parser.py" in names
    if CAN_COMPILE and os.environ.get("PYPROXY_NO_EXTENSIONS", "0") in ("", "0"):
        assert accelerators(names)


@pytest.mark.skipif(not CAN_COMPILE, reason="no C compiler here")
def test_no_extensions_at_install_builds_none(tmp_path):
    names, _, _ = build_wheel(tmp_path, clean_copy(tmp_path), PYPROXY_NO_EXTENSIONS="1")
    assert not accelerators(names)
