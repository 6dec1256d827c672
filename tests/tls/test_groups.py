"""Key-exchange groups: Mozilla's intermediate ones by default, tls_groups to choose others; real
handshakes with pyOpenSSL peers that offer one group only (the running proxy against openssl
s_client is in tests/runtime/test_tls_groups.py)."""

import pytest
from OpenSSL import SSL
from OpenSSL._util import ffi, lib

from pyproxy.config.ast import DomainSide
from pyproxy.config.errors import Position
from pyproxy.config.settings import DomainSpec
from pyproxy.config.tlsmethod import TLSVersion
from pyproxy.config.values import SocketSpec
from pyproxy.tls import DomainTable, TLSConfigError

from .net import handshake, peer_context


def offering(groups: str, version: TLSVersion) -> SSL.Context:
    """A client that offers only ``groups`` (OpenSSL's SSL_CTX_set1_groups_list)."""
    ctx = peer_context(version=version)
    assert lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()) == 1
    return ctx


def negotiated(conn: SSL.Connection) -> str:
    return ffi.string(lib.SSL_get0_group_name(conn._ssl)).decode().lower()


def build(settings, tmp_path, specs=(), **params):
    params.setdefault("tls_verify_client", False)
    return DomainTable.build(settings(**params), list(specs), str(tmp_path))


@pytest.mark.parametrize("version", [TLSVersion.TLSv1_2, TLSVersion.TLSv1_3])
@pytest.mark.parametrize("group, accepted", [
    ("X25519", True), ("secp384r1", True),
    ("secp521r1", False), ("X448", False), ("ffdhe2048", False),
])
def test_default_groups_are_mozilla_intermediate(settings, tmp_path, group, accepted, version):
    """The client prefers ``group`` and also offers P-256 (which TLS 1.2 needs anyway for the
    ECDSA P-256 certificate): the server takes ``group`` only if it accepts it."""
    server = build(settings, tmp_path).default_server
    hs = handshake(server.context, offering(f"{group}:prime256v1", version))
    assert hs.ok, hs.error
    assert negotiated(hs.server) == (group.lower() if accepted else "secp256r1")


def test_a_client_offering_only_other_groups_is_refused(settings, tmp_path):
    server = build(settings, tmp_path).default_server
    assert not handshake(server.context, offering("secp521r1:X448", TLSVersion.TLSv1_3)).ok
    hs = handshake(server.context, offering("prime256v1", TLSVersion.TLSv1_3))
    assert hs.ok and negotiated(hs.server) == "secp256r1"


def test_the_client_side_offers_the_same_groups(settings, tmp_path, pki):
    client = build(settings, tmp_path).default_client
    server = peer_context(cert=pki.atlanta)
    assert lib.SSL_CTX_set1_curves_list(server._context, b"secp521r1") == 1
    assert not handshake(server, client.context).ok
    assert lib.SSL_CTX_set1_curves_list(server._context, b"secp384r1") == 1
    hs = handshake(server, client.context)
    assert hs.ok and negotiated(hs.client) == "secp384r1"


def test_tls_groups_chooses_them(settings, tmp_path):
    server = build(settings, tmp_path, tls_groups="secp521r1:X448").default_server
    assert handshake(server.context, offering("secp521r1", TLSVersion.TLSv1_3)).ok
    assert handshake(server.context, offering("X448", TLSVersion.TLSv1_3)).ok
    assert not handshake(server.context, offering("X25519", TLSVersion.TLSv1_3)).ok


def test_a_domain_block_has_its_own_groups(settings, tmp_path):
    spec = DomainSpec(DomainSide.SERVER, SocketSpec(None, "127.0.0.1", 5061), None, {"tls_groups": "secp521r1"})
    table = build(settings, tmp_path, [spec])
    block = table.server_domain("127.0.0.1", 5061)
    assert handshake(block.context, offering("secp521r1", TLSVersion.TLSv1_3)).ok
    assert not handshake(table.default_server.context, offering("secp521r1", TLSVersion.TLSv1_3)).ok


def test_an_unknown_group_is_a_start_error_naming_it(settings, tmp_path):
    with pytest.raises(TLSConfigError) as caught:
        build(settings, tmp_path, tls_groups="X25519:curve9999:P-256")
    assert any(m.startswith("default server domain: tls_groups 'X25519:curve9999:P-256'") and "curve9999" in m
               and "P-256" not in m.split("knows no group")[1] for m in caught.value.messages), caught.value.messages


def test_an_unknown_group_in_a_domain_block_names_its_position(settings, tmp_path):
    spec = DomainSpec(DomainSide.CLIENT, None, "carrier", {"tls_groups": "X25519:nope"},
                      Position("proxy.cfg", 12, 1))
    with pytest.raises(TLSConfigError) as caught:
        build(settings, tmp_path, [spec])
    assert caught.value.messages == [caught.value.messages[0]]      # the global domains are fine
    message = caught.value.messages[0]
    assert message.startswith('proxy.cfg:12:1: tls_client_domain["carrier"]: tls_groups') and "nope" in message


def test_a_list_with_nothing_in_it_is_refused(settings, tmp_path):
    with pytest.raises(TLSConfigError) as caught:
        build(settings, tmp_path, tls_groups=":")
    assert "not an OpenSSL groups list" in str(caught.value)
