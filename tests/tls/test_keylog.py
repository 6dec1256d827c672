"""tls_keylog_file: the secrets of real handshakes, in the format Wireshark reads, in a file only
its owner reads (the running proxy, with Python's ssl as the peer, is in
tests/runtime/test_tls_logging.py)."""

import os
import stat

import pytest
from OpenSSL import SSL

from pyproxy.config.tlsmethod import TLSVersion
from pyproxy.tls import DomainTable, TLSConfigError

from .net import handshake, peer_context


def build(settings, tmp_path, serving=True, **params):
    params.setdefault("tls_verify_client", False)
    return DomainTable.build(settings(**params), [], str(tmp_path), serving=serving)


def peer_with_keylog(lines: list, **kw) -> SSL.Context:
    ctx = peer_context(**kw)
    ctx.set_keylog_callback(lambda conn, line: lines.append(line.decode()))
    return ctx


def logged(path) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


@pytest.mark.parametrize("version", [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3])
def test_both_ends_log_the_secrets_the_peer_knows(settings, tmp_path, pki, version):
    path = tmp_path / "keys.log"
    table = build(settings, tmp_path, tls_keylog_file=str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    ours: list[str] = []
    hs = handshake(table.default_server.context, peer_with_keylog(ours, version=version))
    assert hs.ok, hs.error
    theirs: list[str] = []
    hs2 = handshake(peer_with_keylog(theirs, cert=pki.atlanta, version=version), table.default_client.context)
    assert hs2.ok, hs2.error
    lines = logged(path)
    assert set(ours) <= set(lines) and set(theirs) <= set(lines), (ours, theirs, lines)
    labels = {line.split()[0] for line in lines}
    client_randoms = {line.split()[1] for line in lines}
    assert client_randoms == {hs.client.client_random().hex(), hs2.client.client_random().hex()}
    if version is TLSVersion.TLSv1_3:
        assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels
    else:
        assert labels == {"CLIENT_RANDOM"} and len(lines) == 2


def test_it_is_off_by_default(settings, tmp_path):
    table = build(settings, tmp_path)
    assert not table.warnings
    assert handshake(table.default_server.context, peer_context()).ok
    assert os.listdir(tmp_path) == []


def test_a_relative_path_is_in_the_config_folder_and_a_warning_says_it_is_on(settings, tmp_path):
    (tmp_path / "debug").mkdir()
    table = build(settings, tmp_path, tls_keylog_file="debug/keys.log")
    path = str(tmp_path / "debug" / "keys.log")
    assert os.path.isfile(path)
    assert len(table.warnings) == 1 and path in table.warnings[0] and "decrypt" in table.warnings[0]


def test_a_reload_appends_to_the_same_descriptor(settings, tmp_path):
    path = tmp_path / "keys.log"
    path.write_text("FIRST LINE\n")
    os.chmod(path, 0o600)
    first = build(settings, tmp_path, tls_keylog_file=str(path))
    opened = len(os.listdir("/proc/self/fd"))
    again = build(settings, tmp_path, tls_keylog_file=str(path))      # tls_reload builds anew
    assert len(os.listdir("/proc/self/fd")) == opened
    assert handshake(first.default_server.context, peer_context()).ok
    assert handshake(again.default_server.context, peer_context()).ok
    lines = logged(path)
    assert lines[0] == "FIRST LINE" and len({line.split()[1] for line in lines[1:]}) == 2


def test_a_file_others_can_read_is_refused(settings, tmp_path):
    path = tmp_path / "keys.log"
    path.write_text("")
    os.chmod(path, 0o644)
    with pytest.raises(TLSConfigError) as caught:
        build(settings, tmp_path, tls_keylog_file=str(path))
    assert caught.value.messages == [f"tls_keylog_file: {path}: is readable or writable by group or others "
                                     f"(mode 0644): it will hold the secrets of every TLS connection; chmod 600 it"]


@pytest.mark.parametrize("kind", ["symlink", "folder", "missing folder"])
def test_what_is_no_plain_file_is_refused(settings, tmp_path, kind):
    path = tmp_path / "keys.log"
    if kind == "symlink":
        target = tmp_path / "elsewhere"
        target.write_text("")
        os.chmod(target, 0o600)
        path.symlink_to(target)
        expected = "is a symbolic link"
    elif kind == "folder":
        path.mkdir()
        expected = "cannot open: Is a directory"
    else:
        path = tmp_path / "nowhere" / "keys.log"
        expected = "cannot open: No such file or directory"
    with pytest.raises(TLSConfigError) as caught:
        build(settings, tmp_path, tls_keylog_file=str(path))
    assert caught.value.messages == [f"tls_keylog_file: {path}: {expected}"]


def test_a_check_neither_creates_nor_opens_the_file(settings, tmp_path):
    """pyproxy -c, pyproxyctl tls check, the mi process: a root-owned empty file left by a check
    would stop a service that runs as another user."""
    path = tmp_path / "keys.log"
    build(settings, tmp_path, serving=False, tls_keylog_file=str(path))
    assert not path.exists()
    with pytest.raises(TLSConfigError) as caught:
        build(settings, tmp_path, serving=False, tls_keylog_file=str(tmp_path / "nowhere" / "keys.log"))
    assert caught.value.messages[0].endswith("cannot be created: its folder is not writable")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_file_another_user_owns_is_refused(settings, tmp_path):
    path = tmp_path / "keys.log"
    path.write_text("")
    os.chmod(path, 0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(TLSConfigError) as caught:
        build(settings, tmp_path, tls_keylog_file=str(path))
    assert "belongs to uid 65534" in caught.value.messages[0]


def test_a_file_with_other_names_is_refused(settings, tmp_path):
    path = tmp_path / "keys.log"
    path.write_text("")
    os.chmod(path, 0o600)
    os.link(path, tmp_path / "copy")
    with pytest.raises(TLSConfigError) as caught:
        build(settings, tmp_path, tls_keylog_file=str(path))
    assert "hard links" in caught.value.messages[0]
