"""README.rst is the user's entry point: its commands must be the ones CI runs, its parameter
reference must match the registry, and it must render."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.rst").read_text()


def literal_commands():
    return [m.strip() for m in re.findall(r"::\n\n    (.+)\n", README)]


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in literal_commands() if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_readme_install_command_checks_the_shipped_config():
    install = literal_commands()[0]
    assert "pip install ." in install and "etc/pyproxy.cfg" in install


def test_parameter_reference_is_up_to_date():
    r = subprocess.run([sys.executable, "tools/update_readme.py", "--check"], cwd=ROOT)
    assert r.returncode == 0, "run: python3 tools/update_readme.py"


def test_readme_renders_without_warnings():
    import docutils.core
    docutils.core.publish_string(README, writer_name="null",
                                 settings_overrides={"halt_level": 2, "report_level": 2})
