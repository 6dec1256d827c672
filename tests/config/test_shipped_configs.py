"""Every config the repository ships loads: etc/pyproxy.cfg, the benchmark configs, and the TLS
manual's Example 1-14 (etc/examples/) once `pyproxyctl tls` made the certificates it names."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyproxy.assembly.loader import load_config

ETC = Path(__file__).resolve().parents[2] / "etc"


@pytest.mark.parametrize("name", ["pyproxy.cfg", "bench/stateless.cfg", "bench/stateful.cfg", "bench/register.cfg"])
def test_shipped_config_loads(name):
    assert load_config(str(ETC / name)).script is not None


def test_example_14_loads_with_the_certificates_pyproxyctl_makes(tmp_path):
    cfg = tmp_path / "openser-tls-example.cfg"
    shutil.copy(ETC / "examples" / "openser-tls-example.cfg", cfg)
    for args in (["tls", "rootCA", "tls"], ["tls", "userCERT", "domA.net", "tls"]):     # as the comment says
        done = subprocess.run([sys.executable, "-m", "pyproxy.ctl", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    checked = subprocess.run([sys.executable, "-m", "pyproxy", "-c", "-f", str(cfg)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0 and ": OK: " in checked.stdout, checked.stderr
