"""RFC 3261 10.3 as the registrar applies it (modules/registrar/rules.py): pure functions, no
database. The end-to-end tests (tests/runtime/test_registrar.py) run them through real processes."""

import pytest

from pyproxy.modules.registrar.rules import (
    Limits, Refused, Where, contact_headers, read_register, updated,
)
from pyproxy.modules.usrloc.store import Binding
from pyproxy.sip import parse_message

NOW = 1_800_000_000
WHERE = Where(received="sip:10.0.0.1:5060;transport=udp", path=None, socket="udp:127.0.0.1:5060",
              user_agent="test")


def register(*contacts, expires=None, callid="c1", cseq=1, extra=""):
    lines = [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    text = ("REGISTER sip:example.com SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
            "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
            f"Call-ID: {callid}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n"
            + "".join(line + "\r\n" for line in lines) + extra + "Content-Length: 0\r\n\r\n")
    return parse_message(text.encode())


def apply(current, msg, limits=Limits()):
    return updated(current, read_register(msg, limits), NOW, limits, WHERE)


def test_a_new_contact_gets_the_default_expiry_and_where_it_came_from():
    b, = apply([], register("<sip:alice@10.0.0.1:5060>"))
    assert (b.contact, b.expires, b.q, b.callid, b.cseq) == ("sip:alice@10.0.0.1:5060", NOW + 3600, 1.0, "c1", 1)
    assert (b.received, b.socket, b.user_agent) == (WHERE.received, WHERE.socket, "test")


def test_contact_expires_param_wins_over_the_header_and_max_expires_caps():
    limits = Limits(max_expires=600)
    a, b = apply([], register("<sip:a@h1>;expires=120", "<sip:b@h2>", expires=7200), limits)
    assert (a.expires, b.expires) == (NOW + 120, NOW + 600)


def test_too_brief_is_423_with_min_expires():
    with pytest.raises(Refused) as e:
        apply([], register("<sip:a@h1>", expires=10))
    assert (e.value.status, e.value.headers) == (423, (("Min-Expires", "60"),))


def test_expires_zero_removes_only_that_contact():
    current = apply([], register("<sip:a@h1>", "<sip:b@h2>"))
    left = apply(current, register("<sip:a@h1>", expires=0, cseq=2))
    assert [b.contact for b in left] == ["sip:b@h2"]


def test_star_removes_everything_and_needs_expires_zero_alone():
    current = apply([], register("<sip:a@h1>", "<sip:b@h2>"))
    assert apply(current, register("*", expires=0, cseq=2)) == []
    for bad in (register("*", expires=10), register("*"), register("*", "<sip:a@h1>", expires=0)):
        with pytest.raises(Refused) as e:
            apply(current, bad)
        assert e.value.status == 400


def test_same_call_id_needs_a_higher_cseq():
    current = apply([], register("<sip:a@h1>", cseq=5))
    with pytest.raises(Refused) as e:
        apply(current, register("<sip:a@h1>", cseq=5))
    assert e.value.status == 400
    assert apply(current, register("<sip:a@h1>", cseq=6))[0].cseq == 6
    # another Call-ID (the phone restarted) replaces the binding whatever its CSeq
    assert apply(current, register("<sip:a@h1>", callid="c2", cseq=1))[0].callid == "c2"


def test_a_query_changes_nothing():
    assert apply([], register()) is None


def test_max_contacts_refuses_with_403():
    with pytest.raises(Refused) as e:
        apply([], register(*[f"<sip:u@h{i}>" for i in range(5)]), Limits(max_contacts=4))
    assert e.value.status == 403


@pytest.mark.parametrize("contact, expires", [
    ("<sip:@>", None), ("<sip:alice@>", None), ("<sip:a@h>;expires=abc", None), ("<sip:a@h>;q=2", None),
    ("<sip:a@h>;q=x", None), ("<sip:a@h>", "99999999999"), ("<sip:a@h>", "-1"), ("<sip:a@h>", "4294967296"),
    ("garbage <", None)])
def test_malformed_values_are_400(contact, expires):
    with pytest.raises(Refused) as e:
        apply([], register(contact, expires=expires))
    assert e.value.status == 400


def test_largest_legal_expires_is_accepted():
    b, = apply([], register("<sip:a@h>", expires=2 ** 32 - 1))
    assert b.expires == NOW + 2 ** 32 - 1


def test_the_200_lists_every_binding_with_what_is_left_best_q_first():
    bindings = [Binding("sip:a@h1", NOW + 100, 0.5), Binding("sip:b@h2", NOW + 3600, 1.0)]
    assert contact_headers(bindings, NOW + 40) == [("Contact", "<sip:b@h2>;expires=3560, <sip:a@h1>;expires=60;q=0.5")]
    assert contact_headers([], NOW) == []
    same_q = [Binding(f"sip:{n}@h", NOW + 100) for n in "cab"]
    assert contact_headers(same_q, NOW)[0][1].startswith("<sip:c@h>;expires=100, <sip:a@h>")    # (saved order)


def test_only_these_contacts_replace_the_others():
    """save()'s flag 0x04: the REGISTER's contacts are the user's only ones."""
    current = apply([], register("<sip:a@h1>", "<sip:b@h2>"))
    limits = Limits()
    left = updated(current, read_register(register("<sip:c@h3>", cseq=2), limits), NOW, limits, WHERE,
                   only_these=True)
    assert [b.contact for b in left] == ["sip:c@h3"]
