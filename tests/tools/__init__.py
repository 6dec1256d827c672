"""Tests of pyproxy's tools (pyproxyctl, pyproxy.certs). A package, so that its conftest.py is not
imported as the top-level module `conftest`, which tests/config imports from."""
