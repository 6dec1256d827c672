"""Domains: inheritance, lookup order, SNI selection, and every startup error."""

import os
import shutil

import pytest

from pyproxy.config.ast import DomainSide
from pyproxy.assembly.loader import load_config_text
from pyproxy.config.settings import DomainSpec
from pyproxy.config.values import SocketSpec
from pyproxy.tls import DomainTable, TLSConfigError, peer_summary

from .net import handshake, peer_context

SOCK = SocketSpec(None, "127.0.0.1", 5061)


def server_spec(socket=SOCK, **params):
    return DomainSpec(DomainSide.SERVER, socket, None, params)


def cn_of(hs):
    return hs.client.get_peer_certificate().to_cryptography().subject.rfc4514_string()


# --- inheritance and lookup ---------------------------------------------------------------------

def test_block_takes_global_values_for_what_it_does_not_set(settings, tmp_path, pki):
    table = DomainTable.build(settings(tls_verify_depth=4, tls_method="TLSv1_2+"),
                              [server_spec(tls_certificate=pki.biloxi.cert_path, tls_private_key=pki.biloxi.key_path)],
                              str(tmp_path))
    d = table.server_domain("127.0.0.1", 5061)
    assert d.label == "tls_server_domain[127.0.0.1:5061]" and d.socket == SOCK
    assert d.params["tls_verify_depth"] == 4 and str(d.params["tls_method"]) == "TLSv1_2+"
    assert d.params["tls_certificate"] == pki.biloxi.cert_path
    assert d.params["tls_ca_list"] == pki.ca.cert_path
    assert table.default_server.params["tls_certificate"] == pki.atlanta.cert_path
    assert table.server_domain("127.0.0.1", 5062) is table.default_server
    assert table.server_domain("10.0.0.1", 5061) is table.default_server


def test_client_lookup_order(settings, tmp_path, pki):
    by_name = DomainSpec(DomainSide.CLIENT, None, "atlanta.example.com", {})
    by_socket = DomainSpec(DomainSide.CLIENT, SocketSpec(None, "1.2.3.4", 6677), None, {"tls_verify_server": False})
    table = DomainTable.build(settings(), [by_name, by_socket], str(tmp_path))
    named = table.client_domain("atlanta.example.com", "1.2.3.4", 6677)
    assert named.name == "atlanta.example.com" and named.label == 'tls_client_domain["atlanta.example.com"]'
    assert table.client_domain("biloxi.example.com", "1.2.3.4", 6677).label == "tls_client_domain[1.2.3.4:6677]"
    assert table.client_domain(None, "1.2.3.4", 6677).params["tls_verify_server"] is False
    assert table.client_domain(None, "1.2.3.4", 5061) is table.default_client
    assert table.client_domain("nobody", "5.6.7.8", 5061) is table.default_client
    assert len(table.domains()) == 4


def test_ipv6_sockets_are_compared_as_addresses(settings, tmp_path):
    spec = server_spec(SocketSpec(None, "[::1]", 5061), tls_verify_client=False)
    table = DomainTable.build(settings(), [spec], str(tmp_path))
    assert table.server_domain("0:0::1", 5061).label == "tls_server_domain[[::1]:5061]"


def test_client_domain_flags(settings, tmp_path):
    spec = DomainSpec(DomainSide.CLIENT, None, "gw", {"tls_verify_server": False, "tls_match_domain_on_reuse": True,
                                                      "tls_server_name": "gw.example.net"})
    table = DomainTable.build(settings(), [spec], str(tmp_path))
    gw = table.client_domain("gw", "1.1.1.1", 5061)
    assert (gw.verify_hostname, gw.match_domain_on_reuse, gw.server_name) == (False, True, "gw.example.net")
    assert table.default_client.verify_hostname and not table.default_client.match_domain_on_reuse
    assert not table.default_server.verify_hostname


def test_default_paths_from_the_config_folder(pki, tmp_path):
    shutil.copy(pki.bundle_path, tmp_path / "cert.pem")
    os.chmod(tmp_path / "cert.pem", 0o600)
    (tmp_path / "cas").mkdir()
    shutil.copy(pki.ca.cert_path, tmp_path / "cas" / "ca.pem")
    cfg = load_config_text("disable_tls = no\ntls_ca_list = \"cas/ca.pem\"\nlisten = tls:127.0.0.1:5061\n"
                           "tls_server_domain[127.0.0.1:5061] { tls_verify_client = 0 }\nroute { drop; }\n",
                           str(tmp_path / "pyproxy.cfg"))
    table = DomainTable.build(cfg.settings, cfg.tls_domains, cfg.cfg_dir)
    d = table.server_domain("127.0.0.1", 5061)
    hs = handshake(d.context, peer_context(ca=pki.ca.cert_path))
    assert hs.ok and "atlanta.example.com" in cn_of(hs)
    assert not handshake(table.default_server.context, peer_context()).ok   # global verify_client=1


def test_client_domain_needs_no_certificate_of_its_own(settings, tmp_path, pki):
    s = settings()
    s.tls_certificate = s.tls_private_key = "CFG_DIR/cert.pem"    # the untouched default, no such file
    s.explicit -= {"tls_certificate", "tls_private_key"}
    with pytest.raises(TLSConfigError) as e:
        DomainTable.build(s, [], str(tmp_path))
    assert [m.split(":")[0] for m in e.value.messages] == ["default server domain", "default server domain"]
    s = settings(tls_verify_client=False)
    table = DomainTable.build(s, [server_spec()], str(tmp_path))
    assert handshake(peer_context(cert=pki.atlanta), table.default_client.context).ok


def test_rebuild_is_deterministic(settings, tmp_path, pki):
    s = settings(tls_verify_client=False)
    first, second = (DomainTable.build(s, [server_spec()], str(tmp_path)) for _ in range(2))
    assert [d.label for d in first.domains()] == [d.label for d in second.domains()]
    assert first.default_server.context is not second.default_server.context
    assert [d.params for d in first.domains()] == [d.params for d in second.domains()]


# --- SNI ----------------------------------------------------------------------------------------

@pytest.fixture
def sni_table(settings, tmp_path, pki):
    atlanta = server_spec(tls_verify_client=False)          # the socket's own domain: no server name
    biloxi = server_spec(tls_server_name="biloxi.example.com", tls_certificate=pki.biloxi.cert_path,
                         tls_private_key=pki.biloxi.key_path, tls_verify_client=True,
                         tls_require_client_certificate=True)
    wild = server_spec(tls_server_name="*.example.org", tls_certificate=pki.wildcard.cert_path,
                       tls_private_key=pki.wildcard.key_path, tls_verify_client=False)
    return DomainTable.build(settings(), [atlanta, biloxi, wild], str(tmp_path))


@pytest.mark.parametrize("sni, chosen", [
    (None, "atlanta"), ("atlanta.example.com", "atlanta"), ("unknown.example.net", "atlanta"),
    ("biloxi.example.com", "biloxi"), ("BILOXI.Example.COM", "biloxi"), ("biloxi.example.com.", "biloxi"),
    ("www.example.org", "example.org"), ("WWW.EXAMPLE.ORG", "example.org"),
    ("a.b.example.org", "atlanta"), ("example.org", "atlanta"),     # a wildcard covers one label only
])
def test_sni_selects_the_domain(sni_table, pki, sni, chosen):
    start = sni_table.server_domain("127.0.0.1", 5061)
    assert start.server_name is None
    client = peer_context(cert=pki.client)
    hs = handshake(start.context, client, sni=sni)
    assert hs.ok, hs.error
    assert chosen in cn_of(hs)
    expected = {"atlanta": None, "biloxi": "biloxi.example.com", "example.org": "*.example.org"}[chosen]
    assert sni_table.domain_of_connection(hs.server).server_name == expected


def test_sni_domain_brings_its_verification_mode(sni_table, pki):
    start = sni_table.server_domain("127.0.0.1", 5061)
    assert handshake(start.context, peer_context(), sni="atlanta.example.com").ok     # no cert needed
    hs = handshake(start.context, peer_context(), sni="biloxi.example.com")
    assert not hs.ok                                                                 # biloxi requires one
    hs = handshake(start.context, peer_context(cert=pki.client), sni="biloxi.example.com")
    assert hs.ok and peer_summary(hs.server)["verified"]
    assert sni_table.domain_of_connection(hs.server).server_name == "biloxi.example.com"


def test_sni_among_domains_without_socket_for_the_default(settings, tmp_path, pki):
    named = DomainSpec(DomainSide.SERVER, None, None, {"tls_server_name": "biloxi.example.com",
                                                       "tls_certificate": pki.biloxi.cert_path,
                                                       "tls_private_key": pki.biloxi.key_path})
    table = DomainTable.build(settings(tls_verify_client=False), [named], str(tmp_path))
    start = table.server_domain("127.0.0.1", 5061)
    assert start is table.default_server
    assert "biloxi" in cn_of(handshake(start.context, peer_context(), sni="biloxi.example.com"))
    assert "atlanta" in cn_of(handshake(start.context, peer_context(), sni="other.example.com"))


def test_domains_sharing_a_socket_must_agree_on_the_method(settings, tmp_path, pki):
    specs = [server_spec(), server_spec(tls_server_name="biloxi.example.com", tls_method="TLSv1_3")]
    with pytest.raises(TLSConfigError) as e:
        DomainTable.build(settings(), specs, str(tmp_path))
    assert "(tls_server_name biloxi.example.com): tls_method differs" in str(e.value)


# --- startup errors -----------------------------------------------------------------------------

def test_every_startup_error_is_collected(settings, tmp_path, pki):
    loose = tmp_path / "loose.key"
    shutil.copy(pki.atlanta.key_path, loose)
    os.chmod(loose, 0o644)
    missing = str(tmp_path / "missing.pem")
    specs = [
        server_spec(SocketSpec(None, "127.0.0.1", 5061), tls_certificate=missing),
        server_spec(SocketSpec(None, "127.0.0.1", 5062), tls_private_key=pki.biloxi.key_path),
        server_spec(SocketSpec(None, "127.0.0.1", 5063), tls_private_key=pki.encrypted_key_path),
        server_spec(SocketSpec(None, "127.0.0.1", 5064), tls_private_key=str(loose)),
        server_spec(SocketSpec(None, "127.0.0.1", 5065), tls_ciphers_list="NO-SUCH-CIPHER"),
        DomainSpec(DomainSide.CLIENT, None, "x", {"tls_ca_list": str(tmp_path / "nowhere.pem")}),
        DomainSpec(DomainSide.CLIENT, None, "y", {"tls_ciphersuites": "TLS_NOPE"}),
        DomainSpec(DomainSide.CLIENT, None, "z", {"tls_crl": str(tmp_path / "no-crl.pem")}),
        DomainSpec(DomainSide.CLIENT, None, "w", {"tls_ca_path": str(tmp_path / "no-dir")}),
    ]
    with pytest.raises(TLSConfigError) as e:
        DomainTable.build(settings(), specs, str(tmp_path))
    messages = e.value.messages
    expected = [
        f"tls_server_domain[127.0.0.1:5061]: tls_certificate {missing}: cannot read: No such file or directory",
        f"tls_server_domain[127.0.0.1:5062]: tls_private_key {pki.biloxi.key_path}: does not match the "
        f"certificate in tls_certificate {pki.atlanta.cert_path}",
        f"tls_server_domain[127.0.0.1:5063]: tls_private_key {pki.encrypted_key_path}: the key is encrypted",
        f"tls_server_domain[127.0.0.1:5064]: tls_private_key {loose}: is readable by group or others (mode 0644)",
        "tls_server_domain[127.0.0.1:5065]: tls_ciphers_list 'NO-SUCH-CIPHER': OpenSSL knows no cipher",
        f'tls_client_domain["x"]: tls_ca_list {tmp_path / "nowhere.pem"}: cannot read: No such file or directory',
        "tls_client_domain[\"y\"]: tls_ciphersuites 'TLS_NOPE': OpenSSL knows no TLS 1.3 cipher suite",
        f'tls_client_domain["z"]: tls_crl {tmp_path / "no-crl.pem"}: cannot read',
        f'tls_client_domain["w"]: tls_ca_path {tmp_path / "no-dir"}: is not a folder',
    ]
    assert len(messages) == len(expected), messages
    for want, got in zip(expected, messages):
        assert got.startswith(want), (want, got)


def test_unreadable_ca_list(settings, tmp_path, pki):
    if os.geteuid() == 0:
        ca = tmp_path / "ca-dir.pem"
        ca.mkdir()                      # root reads any file; a folder is unreadable as a CA list too
        text = "is a folder; it must be a file"
    else:
        ca = tmp_path / "ca.pem"
        shutil.copy(pki.ca.cert_path, ca)
        os.chmod(ca, 0)
        text = "cannot read: Permission denied"
    with pytest.raises(TLSConfigError) as e:
        DomainTable.build(settings(tls_ca_list=str(ca)), [], str(tmp_path))
    assert e.value.messages[0].startswith(f"default server domain: tls_ca_list {ca}: {text}")


def test_garbage_files(settings, tmp_path, pki):
    junk = tmp_path / "junk.pem"
    junk.write_text("not pem\n")
    os.chmod(junk, 0o600)
    with pytest.raises(TLSConfigError) as e:
        DomainTable.build(settings(tls_certificate=str(junk), tls_private_key=str(junk), tls_ca_list=str(junk),
                                   tls_crl=str(junk)), [], str(tmp_path))
    text = str(e.value)
    for part in ("tls_certificate", "tls_private_key", "tls_ca_list", "tls_crl"):
        assert f"default server domain: {part} {junk}:" in text


def test_loose_key_permissions_can_be_allowed(settings, tmp_path, pki):
    loose = tmp_path / "loose.key"
    shutil.copy(pki.atlanta.key_path, loose)
    os.chmod(loose, 0o640)
    table = DomainTable.build(settings(tls_private_key=str(loose), tls_allow_loose_key_permissions=True,
                                       tls_verify_client=False), [], str(tmp_path))
    assert handshake(table.default_server.context, peer_context()).ok
    spec = server_spec(tls_private_key=str(loose), tls_allow_loose_key_permissions=False)
    with pytest.raises(TLSConfigError):
        DomainTable.build(settings(tls_private_key=str(loose), tls_allow_loose_key_permissions=True), [spec],
                          str(tmp_path))


def test_verify_client_without_ca_warns(settings, tmp_path):
    table = DomainTable.build(settings(tls_ca_list=""), [], str(tmp_path))
    assert any(w.startswith("default server domain: tls_verify_client is on but") for w in table.warnings)
