"""The C accelerator agrees with the pure-Python parser, is built where it can be, and is off
when the environment says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from _corpus import CASES, case_ids
from hypothesis import HealthCheck, given, settings

from pyproxy.sip import accel, parser
from pyproxy.sip.errors import RemoteSIPError
from pyproxy.sip.headers import _by_bytes
from test_sip_fuzz import mutated

needs_accel = pytest.mark.skipif(not accel.ENABLED, reason="the C accelerator is not built here")


def python_head(head: bytes):
    """parse_head's result, pure Python, in scan_head's shape; or the error it raises."""
    built, accel.scan_head = accel.scan_head, None
    try:
        msg = parser.parse_head(head, len(head))
    except RemoteSIPError as e:
        return e
    finally:
        accel.scan_head = built
    first, second = (msg.status, msg.reason) if not msg.is_request else (msg.method, msg.ruri)
    return (msg._start, not msg.is_request, first, second, msg._names, msg._lines, msg._cl), msg.version


def agree(data: bytes) -> None:
    end = data.find(b"\r\n\r\n")
    head = data[:end if end >= 0 else len(data)]
    scanned = accel.scan_head(head, _by_bytes)
    if scanned is None:         # not the common case: the Python path alone judges it
        return
    expected = python_head(head)
    assert not isinstance(expected, RemoteSIPError), f"C accepted what Python refuses: {expected}"
    assert scanned == expected[0] and expected[1] == "SIP/2.0"


@needs_accel
@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_c_and_python_agree_on_the_corpus(case):
    agree(case.data)


@needs_accel
def test_c_takes_the_common_case():
    taken = [case.name for case in CASES
             if accel.scan_head(case.data[:case.data.find(b"\r\n\r\n")], _by_bytes) is not None]
    assert len(taken) >= 20, taken      # else the accelerator accelerates nothing


@needs_accel
@settings(max_examples=int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "400")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_c_and_python_agree_on_mutated_messages(data):
    agree(data)


def test_the_accelerator_is_built_where_a_compiler_is():
    """A fresh install on a machine with a C compiler and Python's headers builds it: if this
    fails, the build backend (tools/pyproxy_build.py) lost the extension."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if os.environ.get("PYPROXY_NO_EXTENSIONS"):
        pytest.skip("PYPROXY_NO_EXTENSIONS is set")
    if not shutil.which(compiler) or not headers.exists():
        pytest.skip(f"no C compiler ({compiler}) or no {headers}: the pure-Python path runs alone")
    assert accel.ENABLED


def test_no_extensions_turns_it_off():
    env = dict(os.environ, PYPROXY_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", "import pyproxy.sip.accel as a; print(a.ENABLED)"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
