"""Digest for SIP (modules/auth/digest.py): the RFCs' own examples, credentials that cannot be
read, and nonces: signed, expiring, counted."""

import pytest

from pyproxy.modules.auth.digest import (Credentials, Malformed, Nonces, expected_response, ha1,
                                         parse_credentials)

RFC2617 = ('Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
           'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
           'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
RFC7616 = ('Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, '
           'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
           'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
           'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
           'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')


def test_rfc_2617_example():
    creds = parse_credentials(RFC2617)
    assert creds.username == "Mufasa" and creds.qop == "auth" and creds.algorithm == "MD5"
    assert expected_response(creds, ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life"), "GET") == \
        creds.response


def test_rfc_7616_sha256_example():
    creds = parse_credentials(RFC7616)
    assert creds.algorithm == "SHA-256"
    assert expected_response(creds, ha1("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life"),
                             "GET") == creds.response


def test_without_qop_and_with_escapes():
    creds = parse_credentials('Digest username="a\\"b", realm="r", nonce="n", uri="sip:r", '
                              'response="' + "0" * 32 + '"')
    assert creds == Credentials('a"b', "r", "n", "sip:r", "0" * 32)
    assert parse_credentials("Basic dXNlcjpwYXNz") is None


FULL = 'username="a", realm="r", nonce="n", uri="sip:r", response="' + "0" * 32 + '"'


@pytest.mark.parametrize("value, why", [
    ('Digest realm="r", nonce="n", uri="sip:r", response="' + "0" * 32 + '"', "no username"),
    ("Digest " + FULL + ', realm="r"', "realm given twice"),
    ('Digest username="a, realm="r"', "unreadable|separated"),
    ("Digest " + FULL.replace('nonce="n"', 'nonce="' + "x" * 10240 + '"'), "longer than"),
    ("Digest " + FULL.replace("0" * 32, "z" * 32), "not a digest"),
    ("Digest " + FULL.replace("0" * 32, "0" * 31), "not a digest"),
    ("Digest " + FULL + ", qop=auth", "needs nc"),
    ("Digest " + FULL + ", qop=auth-int, nc=00000001, cnonce=\"x\"", "not supported"),
    ("Digest " + FULL + ", algorithm=MD5-sess", "not supported"),
    ("Digest " + FULL + " junk", "separated by commas"),
    ("Digest", "unreadable"),
])
def test_unreadable_credentials_say_why(value, why):
    with pytest.raises(Malformed, match=why):
        parse_credentials(value)


def test_nonces_are_checked_by_any_worker_and_expire():
    table = Nonces(b"k" * 32, 300).table
    one, two = Nonces(b"k" * 32, 300, table), Nonces(b"k" * 32, 300, table)
    one.for_worker(0, 2)
    two.for_worker(1, 2)
    a, b = one.make(1000), two.make(1000)
    assert a != b
    assert two.check(a, 1000) == "ok" and one.check(b, 1299) == "ok"
    assert one.check(a, 1301) == "stale"
    assert Nonces(b"other" * 8, 300).check(a, 1000) == "bad"            # another server's (or a restart's)
    assert one.check(a[:-1] + ("0" if a[-1] != "0" else "1"), 1000) == "bad"
    assert one.check("x" * 10240, 1000) == "bad"


def test_nonce_counts_refuse_replays():
    nonces = Nonces(b"k" * 32, 300)
    nonce = nonces.make(1000)
    assert nonces.count(nonce, "00000001") == "ok"
    assert nonces.count(nonce, "00000001") == "replay"
    assert nonces.count(nonce, "00000003") == "ok"
    assert nonces.count(nonce, "00000002") == "replay"
