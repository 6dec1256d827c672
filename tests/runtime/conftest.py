"""Fixtures for the runtime's end-to-end tests: the real `pyproxy` command on free loopback
ports, driven by sipp and by a raw SIP client (helpers in _harness.py).

Each test gets a `reaper`: every process it starts (proxy, sipp UAS, sipp UAC) is registered
there and stopped when the test ends, pass or fail (SIGTERM, then SIGKILL of the process group
and of every descendant seen)."""

import shutil

import pytest

from pyproxy.certs import make_root_ca, make_user_cert
from ._harness import DEFAULT_ROUTE, SHARED, Reaper, start_proxy
from .dns_server import DNSServer


@pytest.fixture
def reaper():
    r = Reaper()
    try:
        yield r
    finally:
        r.stop_all()


@pytest.fixture
def proxy_factory(reaper, tmp_path):
    """proxy_factory(children=4, extra="tcp_connection_lifetime=2") -> a serving _harness.Proxy,
    its config and log (proxy.log) in a fresh folder under tmp_path."""
    count = 0

    def start(children=4, extra="", ready=True, route=DEFAULT_ROUTE, head=""):
        nonlocal count
        count += 1
        folder = tmp_path / f"proxy{count}"
        folder.mkdir()
        return start_proxy(reaper, folder, children, extra, ready, route, head)

    return start


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA and certificates made with pyproxy's own tool: one folder per name (cert.pem,
    privkey.pem, calist.pem), plus "impostor", a localhost certificate from another CA."""
    d = tmp_path_factory.mktemp("pki")
    make_root_ca(d / "ca")
    make_user_cert("localhost", d / "localhost", ca_dir=d / "ca", ip_addresses=["127.0.0.1"])
    for name in ("atlanta.example.com", "biloxi.example.com", "client.example.com"):
        make_user_cert(name, d / name, ca_dir=d / "ca")
    make_root_ca(d / "evil")
    make_user_cert("localhost", d / "impostor", ca_dir=d / "evil", ip_addresses=["127.0.0.1"])
    return d


@pytest.fixture
def sipp():
    """Fail (not skip) when sipp or the shared bench scenarios are missing: CI installs both."""
    assert shutil.which("sipp"), "sipp is not installed: apt-get install -y sip-tester"
    assert (SHARED / "bench" / "sipp" / "uac.xml").is_file(), (
        f"{SHARED}/bench/sipp is missing: the shared folder must lie beside the repository")
    return shutil.which("sipp")


@pytest.fixture
def dns_zone():
    """dns_zone({("name", "A"): ["127.0.0.1"]}) -> a running DNSServer with those records."""
    servers = []

    def start(records):
        server = DNSServer(records)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()
