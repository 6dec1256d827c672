import pytest

from pyproxy.config.settings import Settings
from pyproxy.tls.context import as_method

from .pki import PKI


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def settings(pki):
    """Global settings of a TLS-enabled proxy whose own certificate is atlanta's, trusting the test CA."""
    def make(**overrides):
        s = Settings()
        values = dict(disable_tls=False, tls_certificate=pki.atlanta.cert_path,
                      tls_private_key=pki.atlanta.key_path, tls_ca_list=pki.ca.cert_path)
        values.update(overrides)
        for name, value in values.items():
            setattr(s, name, as_method(value) if name == "tls_method" else value)
        s.explicit |= set(values)
        return s
    return make
