import pytest

from .fresh import BACKENDS, fresh_database


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        yield url
