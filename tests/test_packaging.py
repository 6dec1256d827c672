"""The package as a user installs it (`pip install .`, not editable): every subpackage and both
commands must be there. A folder without __init__.py works in a checkout and vanishes from a wheel."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_every_package(tmp_path):
    # build from a clean copy: a checkout's build/ or *.egg-info can supply what the sources lack
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".git",
                                                                  "bench-results", ".hypothesis"))
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel, = out.glob("pyproxy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.relative_to(ROOT)) for p in (ROOT / "pyproxy").rglob("*.py")
                if "__pycache__" not in p.parts}
    missing = sorted(packages - names)
    assert not missing, f"not in the wheel: {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "pyproxy = pyproxy.cli:main" in text and "pyproxyctl = pyproxy.ctl:main" in text
