"""OpenSER's POSIX regexes rewritten for Python's re (pyproxy.script.regex)."""

import re
import warnings

import pytest

from pyproxy.script.regex import compile_posix, translate


@pytest.mark.parametrize("posix,python", [
    ("^sip:[[:digit:]]+@", "^sip:[0-9]+@"),
    ("[^[:space:]]", r"[^ \t\n\r\f\v]"),
    ("[[:alpha:][:digit:]_-]", r"[a-zA-Z0-9_\-]"),    # a '-' that is a member is escaped
    ("[]a]", r"[\]a]"),                 # ']' first is a member
    ("[^]a]", r"[^\]a]"),
    ("[a[b]", r"[a\[b]"),               # '[' inside brackets is a literal
    ("[a&&b|~]", r"[a\&\&b\|\~]"),      # so are these (re warns of set operations)
    (r"[\.]", r"[\.]"),                 # backslash escapes as re reads them
    (r"\[[:digit:]\]", r"\[[:digit:]\]"),   # no bracket expression here
    ("a|b(c)*", "a|b(c)*"),
    (r"\<bob\>", r"\b(?=\w)bob\b(?<=\w)"),     # glibc's word edges
    ("[--z]", r"[\--z]"),               # a range from '-'
    ("[+--]", r"[+-\-]"),               # a range to '-'
    ("[a-c-]", r"[a-c\-]"),             # last, '-' is a member
    ("[^-a]", r"[^\-a]"),               # so is it first
    ("[]-a]", r"[\]-a]"),               # a range from ']'
])
def test_translate(posix, python):
    assert translate(posix) == python


def test_reg_newline_keeps_non_matching_lists_off_newlines():
    assert translate("^From:[^;]*", newline=True) == r"^From:[^\r\n;]*"
    assert translate("[^]a]", newline=True) == r"[^\r\n\]a]"
    assert translate("[a^]", newline=True) == "[a^]"       # not a non-matching list


def test_newline_mode_ends_lines_before_their_cr():
    assert translate(r"^Warning: .*$\.", newline=True) == r"^Warning: [^\r\n]*(?=\r?$)\."
    assert translate("a.*$") == "a.*$"                     # not in newline mode
    text = "To: <sip:b@x>\r\nWarning: 399 old\r\nCall-ID: 1\r\n"
    regex = compile_posix("^Warning: .*$", re.MULTILINE, newline=True)
    assert regex.sub("Warning: 399 new", text) == text.replace("old", "new")


def test_posix_classes_match_what_they_name():
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # nothing left for re to warn about
        punct = compile_posix("^[[:punct:]]+$")
        assert punct.match("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") and not punct.match("a")
        assert compile_posix("^[[:upper:]][[:lower:]]$").match("Ab")
        assert compile_posix("[[:cntrl:]]").search("a\x7fb") and not compile_posix("[[:graph:]]").search(" \t")


def test_dashes_mean_what_posix_says_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # re warns of set differences at '--'
        assert compile_posix("^[--/]+$").match("-./") and not compile_posix("^[--/]+$").match(",")
        assert compile_posix("^[+--]+$").match("+,-") and not compile_posix("[+--]").search(".")
        assert compile_posix("^[a-c-]+$").match("b-") and not compile_posix("[a-c-]").search("d")


@pytest.mark.parametrize("pattern,message", [
    ("[[:digits:]]", "unknown character class [:digits:]"),
    ("[[:digit]", "no ':]' closes"),
    ("[abc", "unterminated character set"),
    ("[[.a.]]", "collating symbols such as [.a.] are not supported"),
    ("[[=a=]]", "equivalence classes such as [=a=] are not supported"),
    ("a{9999999999}", "the repetition number is too large"),
    ("(" * 5000 + ")" * 5000, "maximum recursion depth"),
    ("[+-[:digit:]]", "a range cannot end at a character class"),
    ("[a-c-e]", "a '-' after a range or a character class starts no range"),
    ("[[:digit:]-z]", "a '-' after a range or a character class starts no range"),
])
def test_errors(pattern, message):
    with pytest.raises(re.error, match=re.escape(message)):
        compile_posix(pattern)


def test_error_positions_are_left_out_when_the_pattern_was_rewritten():
    """re counts in the rewritten pattern: its position would point the user at the wrong place."""
    with pytest.raises(re.error) as raised:
        compile_posix("[[:digit:]](")
    assert raised.value.pos is None and "missing )" in str(raised.value)
    with pytest.raises(re.error) as raised:
        compile_posix("ab(")
    assert raised.value.pos == 2


def test_gnu_word_edges():
    assert compile_posix(r"\<bob\>").search("sip:bob@x") and not compile_posix(r"\<bob\>").search("sip:bobby@x")
