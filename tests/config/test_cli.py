"""The pyproxy command as a user runs it: -c, -h, -V, errors with file:line:col, exit codes."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pyproxy(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pyproxy", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_check_default_config_prints_one_summary_line():
    r = pyproxy("-c", "-f", "etc/pyproxy.cfg")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and "etc/pyproxy.cfg: OK" in r.stdout
    assert r.stderr == ""


def test_check_finds_an_unknown_user():
    r = pyproxy("-c", "-f", "etc/pyproxy.cfg", "-u", "nosuchuser7", "-g", "nosuchgroup7")
    assert r.returncode == 1 and "etc/pyproxy.cfg: no such user: nosuchuser7" in r.stderr, r.stderr


def test_console_script_is_installed():
    r = subprocess.run(["pyproxy", "-c", "-f", "etc/pyproxy.cfg"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_check_reports_every_error_with_position(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text('chidlren=4\nloadmodule "modules/dialog/dialog.so"\nloadmodule "sl"\n'
                   'route {\n  sl_send_reply("404");\n}\n')
    r = pyproxy("-c", "-f", str(cfg))
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == f"{cfg}:1:1: unknown parameter 'chidlren' (did you mean 'children'?)"
    assert lines[1] == (f"{cfg}:2:1: loadmodule: module 'dialog' (OpenSER's dialog tracking) "
                        f"is not available in pyproxy yet")
    assert lines[2] == f"{cfg}:5:3: sl_send_reply() takes 2 arguments, found 1"
    assert lines[3] == f"pyproxy: {cfg}: 3 errors, check failed"
    assert r.stdout == ""


def test_missing_config_file(tmp_path):
    r = pyproxy("-c", "-f", str(tmp_path / "nope.cfg"))
    assert r.returncode == 1 and "cannot read the config: No such file or directory" in r.stderr


def test_warnings_go_to_stderr_and_do_not_fail(tmp_path):
    cfg = tmp_path / "old.cfg"
    cfg.write_text("tls_method=TLSv1\n")
    r = pyproxy("-c", "-f", str(cfg))
    assert r.returncode == 0 and f"{cfg}:1:1: warning: tls_method TLSv1" in r.stderr


def test_openser_switches_without_effect_say_so(tmp_path):
    cfg = tmp_path / "old.cfg"
    cfg.write_text("dns=yes\nrev_dns=no\nrev_dns=on\n")
    r = pyproxy("-c", "-f", str(cfg))
    assert r.returncode == 0
    assert f"{cfg}:1:1: warning: dns = yes has no effect" in r.stderr
    assert f"{cfg}:3:1: warning: rev_dns = yes has no effect" in r.stderr and ":2:1:" not in r.stderr


def test_help_lists_openser_options():
    r = pyproxy("-h")
    assert r.returncode == 0
    for option in ("-f FILE", "-c", "-m MB", "-D", "-E", "-d", "-n N", "-l ADDRESS", "-P FILE", "-u USER",
                   "-g GROUP", "-V", "-h"):
        assert option in r.stdout, option


def test_version():
    from pyproxy import __version__
    from pyproxy.sip import accel
    r = pyproxy("-V")
    assert r.returncode == 0 and r.stdout.startswith(f"pyproxy {__version__}")
    # whether the C accelerator runs, as this interpreter imports pyproxy; switched off, off
    assert r.stdout.rstrip().endswith(f"C accelerator: {'on' if accel.ENABLED else 'off'}")
    off = subprocess.run([sys.executable, "-m", "pyproxy", "-V"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYPROXY_NO_EXTENSIONS": "1"})
    assert off.stdout.rstrip().endswith("C accelerator: off")


def test_bad_option_values():
    r = pyproxy("-c", "-f", "etc/pyproxy.cfg", "-l", "sctp:1.2.3.4")
    assert r.returncode == 2 and "protocol 'sctp' is not supported" in r.stderr
    r = pyproxy("-c", "-f", "etc/pyproxy.cfg", "-n", "0")
    assert r.returncode == 2 and "expected a positive number" in r.stderr


def test_command_line_overrides_config():
    from pyproxy.cli import apply_overrides, build_parser
    from pyproxy.assembly.loader import load_config
    config = load_config(str(ROOT / "etc/pyproxy.cfg"))
    args = build_parser().parse_args(["-n", "6", "-l", "tls:127.0.0.1:5071", "-E", "-dd", "-u", "sip"])
    apply_overrides(config.settings, args)
    s = config.settings
    assert (s.children, s.log_stderror, s.debug, s.user) == (6, True, 4, "sip")
    assert str(s.listen[-1]) == "tls:127.0.0.1:5071"
