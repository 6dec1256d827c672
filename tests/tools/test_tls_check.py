"""pyproxyctl tls check: a preflight of every TLS domain of a config, with files made by pyproxyctl
tls and then spoiled the ways operators spoil them. One line per finding; exit 0 when there are
no errors (warnings allowed), 1 with errors."""

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

NAME = "sip.example.test"


@pytest.fixture
def pki(ctl, tmp_path):
    """tls/rootCA, tls/sip.example.test (the manual's layout) and a second CA's certificate."""
    ctl("tls", "rootCA", "tls")
    ctl("tls", "userCERT", NAME, "tls")
    ctl("tls", "rootCA", "--ca-dir", "other-ca")
    ctl("tls", "userCERT", "other.example.test", "--ca-dir", "other-ca", "--out", "other")
    ctl("tls", "userCERT", "soon.example.test", "tls", "--days", "10")
    return tmp_path / "tls"


def config(tmp_path, host="tls/" + NAME, extra=""):
    cfg = tmp_path / "pyproxy.cfg"
    cfg.write_text(f"listen=tls:127.0.0.1:5061\ndisable_tls=no\n"
                   f'tls_certificate="{host}/cert.pem"\ntls_private_key="{host}/privkey.pem"\n'
                   f'tls_ca_list="tls/{NAME}/calist.pem"\n{extra}route {{ drop; }}\n')
    return cfg


def findings(stdout):
    return [line for line in stdout.splitlines() if line.startswith(("error:", "warning:"))]


def test_clean(ctl, pki, tmp_path):
    out = ctl("-f", config(tmp_path), "tls", "check").stdout
    assert findings(out) == [], out
    assert f"ok: default server domain, default client domain: {tmp_path}/tls/{NAME}/cert.pem: CN={NAME}, " \
           "expires on " in out
    assert f"chain verifies against {tmp_path}/tls/{NAME}/calist.pem" in out
    data = json.loads(ctl("-f", config(tmp_path), "--json", "tls", "check").stdout)
    assert {d["severity"] for d in data} == {"ok"} and all(d["text"] for d in data)


def test_expiring_soon_is_a_warning(ctl, pki, tmp_path):
    out = ctl("-f", config(tmp_path, "tls/soon.example.test"), "tls", "check").stdout
    # the two default domains name the same files: one line for both
    assert findings(out) == [f"warning: default server domain, default client domain: {tmp_path}/tls/"
                             f"soon.example.test/cert.pem: CN=soon.example.test expires in 9 day(s), on "
                             + out.split(", on ")[1].split("\n")[0]], out
    assert out.endswith(" 0 error(s), 1 warning(s)\n")


def test_errors(ctl, pki, tmp_path):
    os.chmod(pki / NAME / "privkey.pem", 0o644)
    cfg = config(tmp_path, extra=f'tls_server_domain[127.0.0.1:5061] {{\n  tls_certificate="other/cert.pem"\n'
                                 f'  tls_private_key="tls/{NAME}/privkey.pem"\n}}\n')
    r = ctl("-f", cfg, "tls", "check", status=1)
    errors = [line for line in findings(r.stdout) if line.startswith("error:")]
    text = "\n".join(errors)
    assert "is readable by group or others (mode 0644)" in text
    assert f"tls_server_domain[127.0.0.1:5061]: tls_private_key {tmp_path}/tls/{NAME}/privkey.pem: does not " \
           f"match the certificate" in text
    assert f"{tmp_path}/other/cert.pem: does not verify against {tmp_path}/tls/{NAME}/calist.pem: " \
           "unable to get local issuer certificate" in text
    assert r.stdout.endswith(f"{cfg}: {len(errors)} error(s), 0 warning(s)\n")
    data = json.loads(ctl("-f", cfg, "--json", "tls", "check", status=1).stdout)
    assert sum(d["severity"] == "error" for d in data) == len(errors)


def test_missing_file(ctl, pki, tmp_path):
    shutil.rmtree(pki / NAME)
    out = ctl("-f", config(tmp_path), "tls", "check", status=1).stdout
    assert f"error: default server domain: tls_certificate {tmp_path}/tls/{NAME}/cert.pem: cannot read: " \
           "No such file or directory" in out


@pytest.fixture
def open_folder(pki):
    """The pki in a folder everyone may enter (pytest's are root's alone)."""
    folder = tempfile.mkdtemp(prefix="tls-check-")
    os.chmod(folder, 0o755)
    shutil.copytree(pki, os.path.join(folder, "tls"))
    yield Path(folder)
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root starts as one user and runs as another")
def test_the_run_user_must_read_the_files(ctl, open_folder):
    nobody = pwd.getpwnam("nobody")
    host = open_folder / "tls" / NAME
    cfg = config(open_folder, str(host), extra="user=nobody\n")
    r = ctl("-f", cfg, "tls", "check", status=1)
    assert findings(r.stdout) == [f"error: default server domain, default client domain: {host}/privkey.pem: "
                                  f"the run user (uid {nobody.pw_uid}) cannot read it"], r.stdout
    os.chown(host / "privkey.pem", nobody.pw_uid, -1)
    assert findings(ctl("-f", cfg, "tls", "check").stdout) == []
    os.chmod(host, 0o700)               # a folder on the way counts too
    out = ctl("-f", cfg, "tls", "check", status=1).stdout
    assert [line.rsplit("/", 1)[1] for line in findings(out)] == \
        [f"{name}: the run user (uid {nobody.pw_uid}) cannot read it" for name in ("cert.pem", "privkey.pem", "calist.pem")], out
    assert "ok: not root" not in out


def test_unreadable_config_and_disabled_tls(ctl, tmp_path):
    r = ctl("-f", tmp_path / "missing.cfg", "tls", "check", status=1)
    assert "cannot read the config" in r.stderr
    cfg = tmp_path / "off.cfg"
    cfg.write_text("listen=udp:127.0.0.1:5060\nroute { drop; }\n")
    assert "TLS is disabled" in ctl("-f", cfg, "tls", "check").stdout
