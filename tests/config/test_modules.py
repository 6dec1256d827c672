"""textops, avpops and xlog on real parsed messages."""

import logging

import pytest

from pyproxy.config.errors import ConfigErrors
from pyproxy.assembly.loader import load_config_text
from pyproxy.sip import parse_message

from conftest import INVITE

MODULES = ("sl", "maxfwd", "textops", "avpops", "xlog")


def forwarded(run, script, msg=INVITE):
    result, ctx, runtime = run("route { " + script + " forward(); }", msg=msg, modules=MODULES)
    return parse_message(runtime.sent[-1][1]), ctx, runtime


def test_append_and_remove_headers(run):
    msg = INVITE.replace("Content-Length", "Alert-Info: old\r\nContent-Length")
    out, _, _ = forwarded(run, 'remove_hf("Alert-Info"); append_hf("Alert-info: 1\\r\\n"); '
                               'append_hf("P-hint: $rm from $si\\r\\n");', msg)
    assert out.header_values("Alert-Info") == ["1"]
    assert out.header("P-hint") == "INVITE from 10.0.0.1"


def test_is_present_hf_and_search(run):
    _, ctx, _ = run('route { if (is_present_hf("Contact")) setflag(1); if (is_present_hf("Alert-Info")) setflag(2);'
                    ' if (search("^To: Bob")) setflag(3); if (search("nothing-like-this")) setflag(4); }',
                    modules=MODULES)
    assert ctx.flags == (1 << 1) | (1 << 3)


def test_subst_replace_search_append(run):
    out, _, _ = forwarded(run, r'subst("/^(Contact:.*)10\.0\.0\.1/\1192.0.2.1/"); '
                               r'replace("To: Bob", "To: Robert"); search_append("^CSeq: 314159 INVITE", "");')
    assert out.header("Contact") == "<sip:alice@192.0.2.1:5062>"
    assert out.to.display == "Robert"
    assert out.serialize().count(b"Content-Length") == 1


def test_regexes_read_posix_classes(run):
    out, ctx, _ = forwarded(run, r'subst("/^(Contact: <sip:)[[:lower:]]+@/\1x@/"); '
                                 r'if (search("^CSeq: [[:digit:]]+ INVITE")) setflag(1);')
    assert out.header("Contact") == "<sip:x@10.0.0.1:5062>" and ctx.flags == 2


def test_lists_do_not_cross_lines_as_with_reg_newline(run):
    # To has no ';' on its line: [^;]* must stop there, not run on into From's ;tag=
    _, ctx, _ = run('route { if (search("^To:[^;]*;")) setflag(1); if (search("^From:[^;]*;tag=")) setflag(2); }',
                    modules=MODULES)
    assert ctx.flags == 1 << 2


def test_subst_reads_sers_escapes_and_flags(run):
    msg = INVITE.replace("Call-ID", "Subject: hi\r\nX-Drop: a\r\nX-Drop: b\r\nCall-ID")
    out, _, _ = forwarded(run, r'subst("/^Subject: ([a-z]+)/X-Target: \u;\1/"); '
                               r'subst("/^from: ([a-z]+)/X-Two: \/\1\r\nFrom: \1/i"); '
                               r'subst("/^X-Drop: a.*X-Drop: b\r\n//"); ', msg)
    assert out.header("X-Target") == "sip:bob@biloxi.example.com;hi"     # \u: the Request-URI
    assert out.header("X-Two") == "/Alice" and out.from_.display == "Alice"   # flag i; \/ is a /
    assert out.header_values("X-Drop") == ["a", "b"]    # '.' matched no newline
    out, _, _ = forwarded(run, r'subst("/X-Drop: a.*X-Drop: b\r\n//s");', msg)
    assert out.header_values("X-Drop") == []        # flag s: now it does


def test_subst_with_openser_line_idioms(run):
    """.*$ stops before the CR: the idioms of OpenSER's textops documentation keep CRLF lines."""
    msg = INVITE.replace("Call-ID", "Warning: 399 old\r\nCall-ID")
    out, _, _ = forwarded(run, r'subst("/^Warning: .*$/Warning: 399 new/"); '
                               r'subst("/^From:(.*)atlanta(.*)$/From:\1chicago\2/");', msg)
    assert out.header("Warning") == "399 new"
    assert out.from_.uri.host == "chicago.example.com" and out.from_.tag


def test_a_folded_content_length_is_replaced_whole(run):
    msg = INVITE.replace("Content-Length: 0\r\n\r\n",
                         "Content-Type: text/plain\r\nContent-Length:\r\n 5\r\n\r\nhello")
    out, _, _ = forwarded(run, r'subst("/hello/bye/");', msg)
    assert out.header("Content-Type") == "text/plain" and out.header("Content-Length") == "3"
    assert out.body == b"bye"


def test_a_rewrite_that_breaks_the_message_is_said_in_the_log(run):
    _, _, runtime = run(r'route { subst("/^Call-ID: .*$/Call-ID/"); }', modules=MODULES)
    assert any("does not parse" in text for _, text in runtime.logs)


def test_strings_as_openser_lexed_them(run):
    """\\0 in a double-quoted string is subst's whole match, not a NUL; a single-quoted string is
    raw (cfg.lex's STRING2), which is why OpenSER's textops documentation writes subst in it;
    comments nest."""
    out, _, _ = forwarded(run, r"""subst("/^(Max-Forwards): 70/\1: [\0]/"); /* a /* nested */ comment */
                                   subst('/^(CSeq): (\d+) (\w+)/\1: \2 \3/');""")
    assert out.header("Max-Forwards") == "[Max-Forwards: 70]" and b"\0" not in out.serialize()
    assert out.header("CSeq") == "314159 INVITE"


def test_subst_on_the_body_fixes_content_length(run):
    msg = INVITE.replace("Content-Length: 0\r\n\r\n", "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    out, _, _ = forwarded(run, 'subst("/hello/hello world/");', msg)
    assert out.body == b"hello world" and out.header("Content-Length") == "11"


def test_avp_write(run):
    _, ctx, _ = run('route { avp_write("$fd", "$avp(i:400)"); avp_write("i:5", "$avp(s:n)"); '
                    'avp_write("s:text", "$avp(s:t)"); if ($avp(i:400)=="atlanta.example.com") setflag(1); }',
                    modules=MODULES)
    assert ctx.avps == {400: ["atlanta.example.com"], "n": [5], "t": ["text"]} and ctx.flags == 2


def test_xlog(run):
    _, _, runtime = run('route { xlog("L_INFO", "$rm for $rU\\n"); xlog("plain"); xdbg("dbg $ci"); }',
                        modules=MODULES)
    assert runtime.logs == [(logging.INFO, "INVITE for bob"), (logging.ERROR, "plain"),
                            (logging.DEBUG, "dbg a84b4c76e66710@pc33.atlanta.example.com")]


@pytest.mark.parametrize("call,message", [
    ('append_hf("P-hint: no line end");', 'must end with "\\r\\n"'),
    ('subst("/a/b");', "must look like /regex/replacement/flags"),
    ('subst("/a/b/x");', "unknown subst flags 'x'"),
    ('subst("/(a)b/\\2/");', "refers to \\2, but the regex has 1 group"),
    ('search("(");', "bad regular expression"),
    ('search("[[:digits:]]");', "unknown character class [:digits:]"),
    ('remove_hf("Bad Name");', "must be a header name"),
    ('avp_write("$fd", "$xyz");', 'must name an AVP'),
    ('avp_write("$nope", "$avp(i:1)");', "unknown pseudo-variable $nope"),
    ('xlog("L_LOUD", "x");', "must be a log level"),
])
def test_load_time_errors(call, message):
    text = "".join(f'loadmodule "{m}"\n' for m in MODULES) + "route {\n  " + call + "\n}\n"
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "m.cfg")
    assert any(str(e).startswith("m.cfg:7:") and message in str(e) for e in info.value.errors), \
        [str(e) for e in info.value.errors]
