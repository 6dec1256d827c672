"""pyproxyctl tls rootCA / userCERT through the real command, judged by openssl and by a real TLS
handshake."""

import ssl
import stat
import subprocess
import sys

import pytest

from ._tls import handshake, openssl

NAME = "sip.example.test"


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _x509_text(path):
    return openssl("x509", "-in", path, "-noout", "-text").stdout


def test_help_lists_the_commands(ctl):
    assert "tls" in ctl("-h").stdout
    tls_help = ctl("tls", "-h").stdout
    assert "rootCA" in tls_help and "userCERT" in tls_help


def test_no_command_is_a_usage_error(ctl):
    assert "pyproxyctl: error:" in ctl(status=2).stderr


def test_root_ca_then_user_cert_verify(ctl, tmp_path):
    out = ctl("tls", "rootCA").stdout.splitlines()
    assert out == ["tls/rootCA/cacert.pem", "tls/rootCA/private/cakey.pem"]
    out = ctl("tls", "userCERT", NAME).stdout.splitlines()
    assert out == [f"tls/{NAME}/cert.pem", f"tls/{NAME}/privkey.pem", f"tls/{NAME}/calist.pem"]

    ca, user = tmp_path / "tls/rootCA", tmp_path / "tls" / NAME
    proc = openssl("verify", "-CAfile", user / "calist.pem", user / "cert.pem")
    assert proc.stdout.strip() == f"{user / 'cert.pem'}: OK"
    text = _x509_text(user / "cert.pem")
    for expected in (f"DNS:{NAME}", f"URI:sip:{NAME}", "CA:FALSE", f"Subject: CN = {NAME}",
                     "TLS Web Server Authentication, TLS Web Client Authentication"):
        assert expected in text
    ca_text = _x509_text(ca / "cacert.pem")
    assert "CA:TRUE" in ca_text and "Certificate Sign, CRL Sign" in ca_text
    assert (user / "calist.pem").read_bytes() == (ca / "cacert.pem").read_bytes()
    openssl("pkey", "-in", user / "privkey.pem", "-noout")
    openssl("pkey", "-in", ca / "private/cakey.pem", "-noout")
    assert _mode(user / "privkey.pem") == 0o600
    assert _mode(ca / "private/cakey.pem") == 0o600
    assert _mode(ca / "private") == 0o700


def test_handshake_with_the_generated_files(ctl, tmp_path):
    ctl("tls", "rootCA")
    ctl("tls", "userCERT", NAME)
    ctl("tls", "userCERT", "client.example.test")
    user, client = tmp_path / "tls" / NAME, tmp_path / "tls/client.example.test"
    files = (user / "cert.pem", user / "privkey.pem", user / "calist.pem")

    handshake(*files, server_hostname=NAME)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(*files, server_hostname="other.example.test")
    # clientAuth: the server asks for and verifies the client's certificate.
    peer = handshake(*files, server_hostname=NAME,
                     client_cert=(client / "cert.pem", client / "privkey.pem"))
    assert ("DNS", "client.example.test") in peer["subjectAltName"]


def test_ip_address_as_name(ctl, tmp_path):
    ctl("tls", "rootCA")
    ctl("tls", "userCERT", "127.0.0.1", "--out", "host", "--ip", "::1", "--ip", "192.0.2.7")
    text = _x509_text(tmp_path / "host/cert.pem")
    assert "URI:sip:127.0.0.1, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, " \
           "IP Address:192.0.2.7" in text
    assert "DNS:" not in text
    host = tmp_path / "host"
    handshake(host / "cert.pem", host / "privkey.pem", host / "calist.pem",
              server_hostname="127.0.0.1")


def test_directories_and_options(ctl, tmp_path):
    """The explicit forms: --ca-dir names the CA's own directory (both commands), --out the host's."""
    ctl("tls", "rootCA", "--ca-dir", "myca", "--cn", "Example Test CA", "--days", "30")
    ctl("tls", "userCERT", NAME, "--out", "out", "--ca-dir", "myca", "--days", "10", "--server-only")
    assert sorted(p.name for p in (tmp_path / "myca").iterdir()) == ["cacert.pem", "private"]
    assert "Subject: CN = Example Test CA" in _x509_text(tmp_path / "myca/cacert.pem")
    text = _x509_text(tmp_path / "out/cert.pem")
    assert "Issuer: CN = Example Test CA" in text
    assert "TLS Web Server Authentication\n" in text and "Client Authentication" not in text
    openssl("x509", "-in", tmp_path / "out/cert.pem", "-noout", "-checkend", str(9 * 86400))
    assert openssl("x509", "-in", tmp_path / "out/cert.pem", "-noout", "-checkend",
                   str(11 * 86400), check=False).returncode == 1


def test_passphrase_protects_the_ca_key(ctl, tmp_path):
    (tmp_path / "pass").write_text("correct horse\n")
    (tmp_path / "wrong").write_text("battery staple\n")
    ctl("tls", "rootCA", "--passphrase-file", "pass")
    key = tmp_path / "tls/rootCA/private/cakey.pem"
    assert "ENCRYPTED PRIVATE KEY" in key.read_text()
    assert openssl("pkey", "-in", key, "-noout", "-passin", "pass:", check=False).returncode != 0
    openssl("pkey", "-in", key, "-noout", "-passin", f"file:{tmp_path / 'pass'}")

    err = ctl("tls", "userCERT", NAME, "--ca-passphrase-file", "wrong", status=1).stderr
    assert err == "pyproxyctl: tls/rootCA/private/cakey.pem: wrong passphrase for the key\n"
    err = ctl("tls", "userCERT", NAME, status=1).stderr
    assert err == ("pyproxyctl: tls/rootCA/private/cakey.pem: the key is encrypted; "
                   "a passphrase is needed\n")
    assert not (tmp_path / "tls" / NAME).exists()

    ctl("tls", "userCERT", NAME, "--ca-passphrase-file", "pass")
    user = tmp_path / "tls" / NAME
    openssl("verify", "-CAfile", user / "calist.pem", user / "cert.pem")
    assert "ENCRYPTED" not in (user / "privkey.pem").read_text()


def test_missing_passphrase_file(ctl):
    err = ctl("tls", "rootCA", "--passphrase-file", "nope", status=1).stderr
    assert err == "pyproxyctl: nope: cannot read the passphrase file: No such file or directory\n"


def test_refuses_to_overwrite(ctl, tmp_path):
    ctl("tls", "rootCA")
    ctl("tls", "userCERT", NAME)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.pem")}

    err = ctl("tls", "rootCA", status=1).stderr
    assert err == "pyproxyctl: tls/rootCA/cacert.pem: already exists; not overwriting it\n"
    err = ctl("tls", "userCERT", NAME, status=1).stderr
    assert err == f"pyproxyctl: tls/{NAME}/cert.pem: already exists; not overwriting it\n"
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.pem")} == before

    # One file of the set is enough to refuse, and nothing else is written.
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone/privkey.pem").write_text("mine")
    err = ctl("tls", "userCERT", NAME, "--out", "lone", status=1).stderr
    assert err == "pyproxyctl: lone/privkey.pem: already exists; not overwriting it\n"
    assert [p.name for p in (tmp_path / "lone").iterdir()] == ["privkey.pem"]


def test_missing_ca(ctl, tmp_path):
    """The errors say where the CA was looked for, and how to make it there."""
    err = ctl("tls", "userCERT", NAME, status=1).stderr
    assert err == ("pyproxyctl: no CA in tls/rootCA (looked for tls/rootCA/cacert.pem and "
                   "tls/rootCA/private/cakey.pem): make it with 'pyproxyctl tls rootCA ./tls', or name "
                   "another with --ca-dir\n")
    err = ctl("tls", "userCERT", NAME, "/tmp/x-nowhere", status=1).stderr
    assert "no CA in /tmp/x-nowhere/rootCA " in err and "'pyproxyctl tls rootCA /tmp/x-nowhere'" in err
    err = ctl("tls", "userCERT", NAME, "--ca-dir", "ca", status=1).stderr
    assert err == ("pyproxyctl: no CA in ca (looked for ca/cacert.pem and ca/private/cakey.pem): make it "
                   "with 'pyproxyctl tls rootCA --ca-dir ca'\n")
    (tmp_path / "emptyca").mkdir()
    err = ctl("tls", "userCERT", NAME, "--ca-dir", "emptyca", status=1).stderr
    assert err == "pyproxyctl: emptyca/cacert.pem: no such file (the CA certificate)\n"
    assert not (tmp_path / "tls").exists()


@pytest.mark.parametrize("args", [["--days", "0"], ["--ip", "not-an-ip"], ["--bogus"]])
def test_bad_arguments_are_usage_errors(ctl, args):
    err = ctl("tls", "userCERT", NAME, *args, status=2).stderr
    assert err.startswith("usage: pyproxyctl") and ": error: " in err


def test_bad_name(ctl):
    ctl("tls", "rootCA")
    err = ctl("tls", "userCERT", "bad_name!", status=1).stderr
    assert err == "pyproxyctl: 'bad_name!' is not a host name or IP address\n"


def test_the_manuals_sequence_with_one_directory(ctl, tmp_path):
    """openserctl's habit: 'tls rootCA DIR' then 'tls userCERT NAME DIR' with the same DIR put the CA
    in DIR/rootCA and the host's files in DIR/NAME, which the manual's config (1.5.3) then names;
    a pyproxy config pointing at them passes pyproxy -c."""
    out = ctl("tls", "rootCA", tmp_path / "x").stdout.splitlines()
    assert out == [f"{tmp_path}/x/rootCA/cacert.pem", f"{tmp_path}/x/rootCA/private/cakey.pem"]
    out = ctl("tls", "userCERT", "host.example", tmp_path / "x").stdout.splitlines()
    host = tmp_path / "x/host.example"
    assert out == [str(host / "cert.pem"), str(host / "privkey.pem"), str(host / "calist.pem")]
    openssl("verify", "-CAfile", host / "calist.pem", host / "cert.pem")
    cfg = tmp_path / "pyproxy.cfg"
    cfg.write_text(f"listen=tls:127.0.0.1:5061\ndisable_tls=no\ntls_verify_client=1\n"
                   f'tls_certificate="{host}/cert.pem"\ntls_private_key="{host}/privkey.pem"\n'
                   f'tls_ca_list="{host}/calist.pem"\nroute {{ drop; }}\n')
    checked = subprocess.run([sys.executable, "-m", "pyproxy", "-c", "-f", str(cfg)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0 and ": OK: " in checked.stdout, checked.stderr
    assert ctl("-f", cfg, "tls", "check").stdout.endswith(f"{cfg}: 0 error(s), 0 warning(s)\n")


def test_old_style_directories_get_a_note(ctl, tmp_path):
    err = ctl("tls", "rootCA", "tls/rootCA").stderr
    assert "the CA goes in tls/rootCA/rootCA" in err and "--ca-dir tls/rootCA" in err
    err = ctl("tls", "userCERT", NAME, f"tls/{NAME}", "--ca-dir", "tls/rootCA/rootCA").stderr
    assert f"the files go in tls/{NAME}/{NAME}" in err and f"--out tls/{NAME}" in err
