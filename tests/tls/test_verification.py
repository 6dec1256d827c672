"""The seed's 1.5.4 verification matrix, every cell, with real handshakes."""

import pytest
from OpenSSL import SSL

from pyproxy.config.ast import DomainSide
from pyproxy.config.settings import DomainSpec
from pyproxy.config.values import SocketSpec
from pyproxy.tls import DomainTable, matches_sip_domain, peer_summary, verify_error

from .net import handshake, peer_context


def server_domain(settings, tmp_path, **params):
    table = DomainTable.build(settings(**params), [], str(tmp_path))
    return table.default_server


def client_domain(settings, tmp_path, **params):
    return DomainTable.build(settings(**params), [], str(tmp_path)).default_client


# --- server side: tls_verify_client / tls_require_client_certificate ----------------------------

SERVER_MATRIX = [
    # verify, require, client certificate, accepted, verified
    (False, False, None, True, False),
    (False, False, "client", True, False),        # not even asked for
    (False, True, None, True, False),             # require without verify: no effect (seed 1.6.9)
    (True, False, None, True, False),
    (True, False, "client", True, True),
    (True, False, "untrusted", False, None),
    (True, False, "expired", False, None),
    (True, True, None, False, None),
    (True, True, "client", True, True),
    (True, True, "untrusted", False, None),
    (True, True, "expired", False, None),
]


@pytest.mark.parametrize("verify, require, cert, accepted, verified", SERVER_MATRIX)
def test_server_verification(settings, tmp_path, pki, verify, require, cert, accepted, verified):
    domain = server_domain(settings, tmp_path, tls_verify_client=verify, tls_require_client_certificate=require)
    expected_mode = (SSL.VERIFY_NONE if not verify else
                     SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if require else 0))
    assert domain.context.get_verify_mode() == expected_mode
    hs = handshake(domain.context, peer_context(cert=getattr(pki, cert) if cert else None))
    assert hs.ok is accepted, hs.error
    if accepted:
        summary = peer_summary(hs.server)
        assert summary["verified"] is verified
        assert bool(summary["subject"]) is (verify and cert is not None)
    elif cert == "expired":
        assert "certificate has expired" in verify_error(hs.server)
    elif cert == "untrusted":
        assert "unable to get local issuer certificate" in verify_error(hs.server)


def test_server_sends_ca_list_as_client_ca_names(settings, tmp_path, pki):
    domain = server_domain(settings, tmp_path, tls_verify_client=True, tls_require_client_certificate=False)
    hs = handshake(domain.context, peer_context())
    assert hs.ok
    names = [dict(n.get_components()).get(b"CN") for n in hs.client.get_client_ca_list()]
    assert names == [b"pyproxy test CA"]


# --- client side: tls_verify_server -----------------------------------------------------------

CLIENT_MATRIX = [
    # verify, server certificate, accepted, verified
    (True, "atlanta", True, True),
    (True, "untrusted", False, None),
    (True, "expired", False, None),
    (False, "atlanta", True, True),
    (False, "untrusted", True, False),
    (False, "expired", True, False),
]


@pytest.mark.parametrize("verify, cert, accepted, verified", CLIENT_MATRIX)
def test_client_verification(settings, tmp_path, pki, verify, cert, accepted, verified):
    domain = client_domain(settings, tmp_path, tls_verify_server=verify)
    assert domain.context.get_verify_mode() == (SSL.VERIFY_PEER if verify else SSL.VERIFY_NONE)
    hs = handshake(peer_context(cert=getattr(pki, cert)), domain.context)
    assert hs.ok is accepted, hs.error
    if accepted:
        assert peer_summary(hs.client)["verified"] is verified
        if not verified:
            assert verify_error(hs.client)
    else:
        assert verify_error(hs.client)


def test_client_wrong_name_is_caught_by_rfc5922_check(settings, tmp_path, pki):
    domain = client_domain(settings, tmp_path)
    assert domain.verify_hostname
    hs = handshake(peer_context(cert=pki.biloxi), domain.context, sni="atlanta.example.com")
    assert hs.ok                                   # the chain is fine ...
    peer = hs.client.get_peer_certificate()
    assert not matches_sip_domain(peer, "atlanta.example.com")   # ... but it is not atlanta
    assert matches_sip_domain(peer, "biloxi.example.com")


def test_client_without_ca_uses_system_store(settings, tmp_path, pki):
    domain = client_domain(settings, tmp_path, tls_ca_list="")
    hs = handshake(peer_context(cert=pki.atlanta), domain.context)
    assert not hs.ok and "unable to get local issuer" in verify_error(hs.client)


@pytest.mark.parametrize("depth", [0, 9])
def test_verify_depth(settings, tmp_path, pki, depth):
    # depth counts intermediate CAs; the test leaves are issued by the root itself, so 0 suffices
    domain = client_domain(settings, tmp_path, tls_verify_depth=depth)
    assert domain.context.get_verify_depth() == depth
    assert handshake(peer_context(cert=pki.atlanta), domain.context).ok


# --- CRL ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cert, accepted", [("revoked", False), ("client", True)])
def test_crl_refuses_revoked_client(settings, tmp_path, pki, cert, accepted):
    domain = server_domain(settings, tmp_path, tls_crl=pki.crl_path)
    hs = handshake(domain.context, peer_context(cert=getattr(pki, cert)))
    assert hs.ok is accepted, hs.error
    if not accepted:
        assert "certificate revoked" in verify_error(hs.server)


def test_crl_on_client_side(settings, tmp_path, pki):
    spec = DomainSpec(DomainSide.CLIENT, None, "strict", {"tls_crl": pki.crl_path})
    table = DomainTable.build(settings(), [spec], str(tmp_path))
    assert not handshake(peer_context(cert=pki.revoked), table.client_domain("strict", "1.2.3.4", 5061).context).ok
    assert handshake(peer_context(cert=pki.revoked), table.default_client.context).ok


def test_ca_path(settings, tmp_path, pki):
    import shutil
    import subprocess
    folder = tmp_path / "cas"
    folder.mkdir()
    shutil.copy(pki.ca.cert_path, folder / "ca.pem")
    subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", pki.ca.cert_path],
                                  capture_output=True, text=True, check=True).stdout.strip()
    (folder / f"{subject_hash}.0").symlink_to(folder / "ca.pem")
    domain = client_domain(settings, tmp_path, tls_ca_list="", tls_ca_path=str(folder))
    assert handshake(peer_context(cert=pki.atlanta), domain.context).ok
    assert not handshake(peer_context(cert=pki.untrusted), domain.context).ok


def test_server_socket_domain_overrides_verification(settings, tmp_path, pki):
    spec = DomainSpec(DomainSide.SERVER, SocketSpec(None, "127.0.0.1", 5061), None,
                      {"tls_verify_client": False})
    table = DomainTable.build(settings(), [spec], str(tmp_path))
    open_domain = table.server_domain("127.0.0.1", 5061)
    assert open_domain is not table.default_server
    assert handshake(open_domain.context, peer_context()).ok
    assert not handshake(table.default_server.context, peer_context()).ok   # global: require=1
