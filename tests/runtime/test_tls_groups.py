"""Key-exchange groups of the running proxy, seen by openssl s_client: Mozilla's intermediate
X25519, P-256 and P-384 by default, tls_groups (global or per domain) for others; an unknown
group stops the start, naming the parameter (and the block's position)."""

import re
import subprocess

import pytest

from ._harness import free_port
from .test_tls import LOOP, start_and_fail, tls_settings


def s_client(pki, port: int, groups: str, *more: str) -> tuple[bool, str]:
    """(handshake done and verified, what s_client said) for a client offering only ``groups``."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"{LOOP}:{port}", "-groups", groups, "-CAfile",
                        str(pki / "ca" / "cacert.pem"), "-verify_return_error", *more],
                       input=b"", capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode(errors="replace")
    return r.returncode == 0 and "Verify return code: 0 (ok)" in out and "Cipher is (NONE)" not in out, out


def temp_key(out: str) -> str:
    m = re.search(r"Server Temp Key: (.*)", out)
    return m.group(1) if m else ""


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_default_groups(proxy_factory, pki, version):
    """TLS 1.2 with the proxy's ECDSA P-256 certificate needs P-256 among the client's groups:
    there the client offers P-256 after the group tried, and a refused group shows as P-256 chosen."""
    port = free_port()
    proxy_factory(children=1, extra=tls_settings(pki, port))
    for group, shown in (("X25519", "X25519"), ("P-384", "secp384r1"), ("secp521r1", None), ("X448", None)):
        if version == "-tls1_3":
            ok, out = s_client(pki, port, group, version)
            assert (ok and shown in temp_key(out)) if shown else (not ok and "handshake failure" in out), out
        else:
            ok, out = s_client(pki, port, f"{group}:P-256", version)
            assert ok and (shown or "prime256v1") in temp_key(out), out


def test_tls_groups_globally_and_per_domain(proxy_factory, pki):
    port, other = free_port(), free_port()
    extra = tls_settings(pki, port, more=(
        'tls_groups="secp521r1:X448"\n'
        f"listen=tls:{LOOP}:{other}\n"
        f'tls_server_domain[{LOOP}:{other}] {{\n  tls_groups="X25519"\n}}\n'))
    proxy_factory(children=1, extra=extra)
    ok, out = s_client(pki, port, "secp521r1")
    assert ok and "secp521r1" in temp_key(out), out
    ok, out = s_client(pki, port, "X448")
    assert ok and temp_key(out).startswith("X448"), out
    assert not s_client(pki, port, "X25519")[0]
    assert s_client(pki, other, "X25519")[0]
    assert not s_client(pki, other, "secp521r1")[0]


@pytest.mark.parametrize("flags", [("-D", "-E"), ("-c",)], ids=["start", "check"])
def test_an_unknown_group_stops_the_start(pki, tmp_path, flags):
    port = free_port()
    text = f"listen=udp:{LOOP}:{port}\n" + tls_settings(pki, port, more='tls_groups="X25519:P-999"')
    r = start_and_fail(tmp_path, text, flags)
    assert r.returncode == 1 and "default server domain: tls_groups 'X25519:P-999'" in r.stderr, r.stderr
    assert "knows no group P-999" in r.stderr, r.stderr


@pytest.mark.parametrize("flags", [("-D", "-E"), ("-c",)], ids=["start", "check"])
def test_an_unknown_group_in_a_domain_block_names_its_position(pki, tmp_path, flags):
    port = free_port()
    text = (f"listen=udp:{LOOP}:{port}\n" + tls_settings(pki, port) +
            f'tls_server_domain[{LOOP}:{port}] {{\n  tls_groups="X25519:Curve448"\n}}\n')
    r = start_and_fail(tmp_path, text, flags)
    line = text[:text.index("tls_server_domain[")].count("\n") + 1
    where = f"bad.cfg:{line}:1: tls_server_domain[{LOOP}:{port}]: tls_groups 'X25519:Curve448'"
    assert r.returncode == 1 and where in r.stderr and "knows no group Curve448" in r.stderr, r.stderr
