"""pyproxyctl tls rootCA / userCERT through the real command, judged by openssl and by a real TLS
handshake."""

import ssl
import stat

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
    ctl("tls", "userCERT", "127.0.0.1", "host", "--ip", "::1", "--ip", "192.0.2.7")
    text = _x509_text(tmp_path / "host/cert.pem")
    assert "URI:sip:127.0.0.1, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, " \
           "IP Address:192.0.2.7" in text
    assert "DNS:" not in text
    host = tmp_path / "host"
    handshake(host / "cert.pem", host / "privkey.pem", host / "calist.pem",
              server_hostname="127.0.0.1")


def test_directories_and_options(ctl, tmp_path):
    ctl("tls", "rootCA", "myca", "--cn", "Example Test CA", "--days", "30")
    ctl("tls", "userCERT", NAME, "out", "--ca-dir", "myca", "--days", "10", "--server-only")
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
    err = ctl("tls", "userCERT", NAME, "lone", status=1).stderr
    assert err == "pyproxyctl: lone/privkey.pem: already exists; not overwriting it\n"
    assert [p.name for p in (tmp_path / "lone").iterdir()] == ["privkey.pem"]


def test_missing_ca(ctl, tmp_path):
    err = ctl("tls", "userCERT", NAME, status=1).stderr
    assert err == ("pyproxyctl: tls/rootCA: no such CA directory (make it with 'pyproxyctl tls rootCA "
                   "tls/rootCA', or name another with --ca-dir)\n")
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
    err = ctl("tls", "userCERT", "bad_name!", "out", status=1).stderr
    assert err == "pyproxyctl: 'bad_name!' is not a host name or IP address\n"
