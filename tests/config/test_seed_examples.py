"""The seed's Examples 1-1 to 1-14 (tests/config/seed/, see its README) parse into syntax trees,
and load as far as pyproxy has the modules they name."""

from pathlib import Path

import pytest

from pyproxy.config.ast import Assign, Call, DomainSide, If, LoadModule, ModParam, RouteBlock, TLSDomain
from pyproxy.config.errors import ConfigErrors, ErrorList
from pyproxy.assembly.loader import load_config_text
from pyproxy.config.parser import parse

SEED = Path(__file__).parent / "seed"
EXAMPLES = sorted(SEED.glob("ex1-*.cfg"))


def tree(path):
    errors = ErrorList()
    config = parse(path.read_text(), str(path), errors)
    assert not errors, [str(e) for e in errors.errors]
    return config


def test_all_fourteen_examples_are_here():
    assert [p.stem for p in EXAMPLES] == [f"ex1-{i:02d}" for i in range(1, 15)]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_parses(path):
    assert tree(path).items


@pytest.mark.parametrize("path", EXAMPLES[:12], ids=lambda p: p.stem)
def test_parameter_examples_load(path):
    config = load_config_text(path.read_text(), str(path))
    assert config.settings.explicit


def test_parameter_values():
    load = lambda name: load_config_text((SEED / name).read_text(), name).settings
    assert load("ex1-01.cfg").disable_tls is True
    listen, = load("ex1-02.cfg").listen
    assert (listen.proto.value, listen.host, listen.port) == ("tls", "1.2.3.4", 5061)
    assert load("ex1-03.cfg").tls_port_no == 5062
    method = load("ex1-04.cfg").tls_method
    assert (method.low.label, method.high.label) == ("TLS 1.0", "TLS 1.0")
    assert load("ex1-08.cfg").tls_ciphers_list == "NULL"
    s = load("ex1-11.cfg")
    assert (s.tls_handshake_timeout, s.tls_send_timeout) == (119, 121)
    assert load("ex1-12.cfg").tls_client_domain_avp == 400


def test_tls_v1_warns_with_rfc_8996():
    config = load_config_text((SEED / "ex1-04.cfg").read_text(), "ex1-04.cfg")
    (pos, text), = config.warnings
    assert pos.line == 1 and "RFC 8996" in text


def test_example_13_domains():
    items = tree(SEED / "ex1-13.cfg").items
    domains = [i for i in items if isinstance(i, TLSDomain)]
    assert [(d.side, d.selector.text) for d in domains] == [
        (DomainSide.SERVER, "IP_2:port2"), (DomainSide.SERVER, "IP_3:port3"),
        (DomainSide.CLIENT, "atlanta.com"), (DomainSide.CLIENT, "biloxi.com"),
        (DomainSide.SERVER, "IP_5:port5"), (DomainSide.CLIENT, "1.2.3.4:6677")]
    assert {a.name for a in domains[1].params} == {"tls_certificate", "tls_private_key", "tls_ca_list",
                                                   "tls_method", "tls_verify_client",
                                                   "tls_require_client_certificate"}
    route, = [i for i in items if isinstance(i, RouteBlock)]
    assert [s.name for s in route.body if isinstance(s, Call)] == ["avp_write", "t_relay", "t_relay"]


def test_example_14_tree():
    items = tree(SEED / "ex1-14.cfg").items
    assert [m.path for m in items if isinstance(m, LoadModule)][:2] == ["modules/sl/sl.so", "modules/rr/rr.so"]
    assert len([m for m in items if isinstance(m, ModParam)]) == 5
    assert {a.name for a in items if isinstance(a, Assign)} >= {"tls_verify", "tls_require_client_certificate",
                                                               "alias", "fifo", "children"}
    route, = [i for i in items if isinstance(i, RouteBlock)]
    assert isinstance(route.body[0], If)


def test_example_14_fails_only_on_its_placeholders():
    """Every module it loads exists (mysql as a no-op) and every call compiles; what is left is the
    manual's own placeholders (_your_serv_IP_, _DNS_ALIAS_, the db_url "sql_url") and route(1),
    which it never defines. etc/examples/openser-tls-example.cfg is the same script filled in."""
    with pytest.raises(ConfigErrors) as info:
        load_config_text((SEED / "ex1-14.cfg").read_text(), "ex1-14.cfg")
    errors = [str(e) for e in info.value.errors]
    assert all("_your_serv_IP_" in e or "_DNS_ALIAS_" in e or "route(1) calls a route block" in e
               or "'sql_url' is not a database URL" in e for e in errors), errors
    assert any("sql_url" in e for e in errors)
