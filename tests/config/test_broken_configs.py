"""A table of broken configs: each must fail at load with its file:line:col and a message saying
what was found and what was expected. Every case is a config a user could really write."""

import pytest

from pyproxy.config.errors import ConfigErrors
from pyproxy.assembly.loader import load_config_text

HEAD = 'loadmodule "sl"\nloadmodule "maxfwd"\n'   # 2 lines, so route cases start on line 3

CASES = [
    # --- lexical ------------------------------------------------------------------------------
    ("unclosed string", 'fifo="/tmp/fifo\n', "1:6", 'string opened with " is never closed'),
    ("unclosed comment", "debug=3\n/* forgot to close\nfork=no\n", "2:1", "never closed with '*/'"),
    ("stray character", "debug=3\n@\n", "2:1", "unexpected character '@'"),
    ("not an address", "listen=udp:300.1.1.1:5060\n", "1:8", "300.1.1.1 is not an IPv4 address"),
    ("not a module", 'loadmodule "__init__"\n', "1:1", "unknown module '__init__'"),
    ("number with a unit", "max_message_size=1k\n", "1:18", "'1k' is neither a number nor a name"),
    ("name starting with a digit", "alias=1und1.de\n", "1:7", 'put the text in quotes ("1und1.de")'),
    ("nested comment left open", "/* a /* b */\nfork=no\n", "1:1", "never closed with '*/'"),
    ("blocks nested too deep", HEAD + "route {\n" + "if (method==\"INVITE\") {\n" * 70 + "}\n" * 71,
     "64:1", "blocks nested more than 60 deep"),
    ("parentheses nested too deep", HEAD + "route {\n if (" + "(" * 2000 + "method==\"A\"" + ")" * 2000
     + ") { exit; }\n}\n", "1:1", "nests too deeply"),
    # --- global parameters --------------------------------------------------------------------
    ("unknown parameter", "chidlren=4\n", "1:1", "unknown parameter 'chidlren' (did you mean 'children'?)"),
    ("bool expected", "fork=maybe\n", "1:6", "fork: expected yes/no, on/off, 1/0, found maybe"),
    ("number expected", "children=four\n", "1:10", "children: expected a number from 1 to 1024, found four"),
    ("number out of range", "children=0\n", "1:10", "children: expected a number from 1 to 1024, found 0"),
    ("port out of range", "port=70000\n", "1:6", "expected a number from 1 to 65535, found 70000"),
    ("missing equals", "debug 3\n", "1:7", "expected '=' after parameter name 'debug', found '3'"),
    ("missing value", "debug=\nfork=yes\n", "1:6", "expected a value for 'debug' after '=', found the end of the line"),
    ("bad listen proto", "listen=sctp:127.0.0.1:5060\n", "1:8", "protocol 'sctp' is not supported"),
    ("bad listen port", "listen=udp:127.0.0.1:99999\n", "1:8", "expected a port number from 1 to 65535"),
    ("bad listen IPv6", "listen=udp:[::zz]:5060\n", "1:8", ""),
    ("bad log facility", "log_facility=LOG_LOCAL9\n", "1:14", "expected one of LOG_AUTH"),
    ("SSLv2 refused", "tls_method=SSLv2\n", "1:12", "SSL 2.0 (RFC 6176) is broken and prohibited; use SSLv23"),
    ("SSLv3 refused", "tls_method=SSLv3\n", "1:12", "SSL 3.0 (RFC 7568) is broken and prohibited"),
    ("unknown tls method", "tls_method=TLSv2\n", "1:12", "unknown tls_method TLSv2: expected SSLv23"),
    ("empty tls range", "tls_method=TLSv1_3-TLSv1_2\n", "1:12", "range TLSv1_3-TLSv1_2 is empty: TLSv1_3 is newer than TLSv1_2"),
    # --- modules ------------------------------------------------------------------------------
    ("module not written", 'loadmodule "modules/dialog/dialog.so"\n', "1:1",
     "module 'dialog' (OpenSER's dialog tracking) is not available in pyproxy yet"),
    ("tm without affinity", 'children=4\ncall_affinity=no\nloadmodule "tm"\n', "2:1",
     "call_affinity=no cannot work with module 'tm'"),
    ("no such failure_route", 'loadmodule "tm"\nroute { t_on_failure("3"); t_relay(); }\n', "2:22",
     "t_on_failure(): argument 1: there is no failure_route[3] block in this config"),
    ("tm fr_timer bound", 'loadmodule "tm"\nmodparam("tm", "fr_timer", 0)\n', "2:28",
     "modparam: parameter 'fr_timer' of module 'tm' must be from 1 to 86400, found 0"),
    ("unknown module", 'loadmodule "frobnicate"\n', "1:1", "unknown module 'frobnicate'"),
    ("loadmodule without quotes", "loadmodule sl\n", "1:12", "expected the module as a quoted string"),
    ("modparam of unloaded module", 'modparam("rr", "enable_full_lr", 1)\n', "1:10",
     "modparam: module 'rr' is not loaded"),
    ("unknown modparam", HEAD + 'modparam("maxfwd", "max_limt", 10)\n', "3:20",
     "module 'maxfwd' has no parameter 'max_limt' (its parameters: max_limit)"),
    ("modparam type", HEAD + 'modparam("maxfwd", "max_limit", "ten")\n', "3:33",
     "parameter 'max_limit' of module 'maxfwd' is a number, found \"ten\""),
    # --- route blocks -------------------------------------------------------------------------
    ("unknown function", HEAD + "route {\n  forwrd();\n}\n", "4:3", "unknown function 'forwrd' (did you mean 'forward'?)"),
    ("function of unloaded module", HEAD + "route {\n  t_relay();\n}\n", "4:3",
     "unknown function 't_relay' (it is exported by module 'tm', which is not loaded)"),
    ("wrong arity", HEAD + 'route {\n  sl_send_reply("404");\n}\n', "4:3",
     "sl_send_reply() takes 2 arguments, found 1"),
    ("bad status code", HEAD + 'route {\n  sl_send_reply("99", "Low");\n}\n', "4:17",
     "argument 1 must be a reply status code from 100 to 699, found \"99\""),
    ("bad flag", HEAD + "route {\n  setflag(64);\n}\n", "4:11", "argument 1 must be a flag number from 0 to 63"),
    ("bad regex", HEAD + 'route {\n  if (uri=~"sip:(201") { exit; }\n}\n', "4:12", 'bad regular expression "sip:(201"'),
    ("regex too large", HEAD + 'route {\n  if (uri=~"^sip:1{9999999999}") { exit; }\n}\n', "4:12",
     "the repetition number is too large"),
    ("missing route", HEAD + "route {\n  route(7);\n}\n", "4:3", "route(7) calls a route block that does not exist"),
    ("route defined twice", HEAD + "route {\n  exit;\n}\nroute[1] { exit; }\nroute[1] { exit; }\n", "7:1",
     "route[1] is defined twice (first at line 6)"),
    ("no main route", HEAD + "route[1] { exit; }\n", "3:1", "the config has no main route{} block"),
    ("break at top level", HEAD + "break;\n", "3:1", "'break' is only allowed inside a route block"),
    ("missing semicolon", HEAD + 'route {\n  setflag(1)\n  exit;\n}\n', "5:3", "expected ';' after setflag(...), found 'exit'"),
    ("unclosed block", HEAD + "route {\n  exit;\n", "3:7", "'{' of this route block is never closed"),
    ("else without if", HEAD + "route {\n  else { exit; }\n}\n", "4:3", "'else' without a matching 'if'"),
    ("unknown pseudo-variable", HEAD + 'route {\n  if ($xy == "a") { exit; }\n}\n', "4:7", "unknown pseudo-variable $xy"),
    ("bad avp name", HEAD + 'route {\n  $avp(q:1) = "x";\n}\n', "4:3", "bad AVP name 'q:1'"),
    ("read-only variable", HEAD + 'route {\n  $si = "1.2.3.4";\n}\n', "4:3", "$si is read-only"),
    ("bad proto value", HEAD + "route {\n  if (proto==sctp) { exit; }\n}\n", "4:14", "'proto' is compared with udp, tcp or tls, found sctp"),
    ("keyword without operator", HEAD + "route {\n  if (method) { exit; }\n}\n", "4:13",
     "expected a comparison operator (==, !=, =~, !~) after 'method'"),
    ("bad src_ip", HEAD + "route {\n  if (src_ip==foo.bar) { exit; }\n}\n", "4:15", "'src_ip' is compared with an IP address or network"),
    ("port compared with string", HEAD + 'route {\n  if (src_port=="x") { exit; }\n}\n', "4:15", "'src_port' is compared with a number"),
    ("reply in onreply_route", HEAD + 'route { exit; }\nonreply_route[1] {\n  sl_send_reply("200", "OK");\n}\n', "5:3",
     "sl_send_reply() cannot be used in onreply_route blocks"),
    ("unnamed failure_route", HEAD + "route { exit; }\nfailure_route { exit; }\n", "4:15",
     "expected '[' and a number after 'failure_route'"),
    ("bad sethost", HEAD + 'route {\n  sethost("a b");\n}\n', "4:11", "expected an IP address or host name"),
    ("bad seturi", HEAD + 'route {\n  seturi("not a uri");\n}\n', "4:10", "argument 1 is not a valid URI"),
    ("bad forward host", HEAD + 'route {\n  forward("no such host");\n}\n', "4:11", "expected an IP address or host name"),
    ("uri:port without uri:host", HEAD + 'route {\n  forward("10.0.0.1", uri:port);\n}\n', "4:23",
     "argument 2: uri:port goes with uri:host"),
    # --- TLS domains --------------------------------------------------------------------------
    ("verify_server in server domain",
     "listen=tls:127.0.0.1:5061\ntls_server_domain[127.0.0.1:5061] {\n  tls_verify_server = 1\n}\n", "3:3",
     "'tls_verify_server' cannot be set in a tls_server_domain block: it applies to client domains only"),
    ("verify_client in client domain", 'tls_client_domain["a.com"] {\n  tls_verify_client = 1\n}\n', "2:3",
     "'tls_verify_client' cannot be set in a tls_client_domain block: it applies to server domains only"),
    ("global-only in domain", 'tls_client_domain["a.com"] {\n  tls_handshake_timeout = 5\n}\n', "2:3",
     "it is a global parameter only"),
    ("server domain without listen", "tls_server_domain[127.0.0.1:5061] {\n  tls_method=TLSv1_2\n}\n", "1:19",
     "names a socket that is not a listen=tls: entry (add listen=tls:127.0.0.1:5061)"),
    ("domain without port", "listen=tls:127.0.0.1:5061\ntls_server_domain[127.0.0.1] { }\n", "2:19",
     "expected IP:PORT (the port is required)"),
    ("non-TLS parameter in domain", 'tls_client_domain["a.com"] {\n  children = 4\n}\n', "2:3", "'children' is not a TLS parameter"),
    ("duplicate client domain", 'tls_client_domain["a.com"] { }\ntls_client_domain["a.com"] { }\n', "2:1",
     'tls_client_domain["a.com"] is defined twice (first at line 1)'),
]


@pytest.mark.parametrize("name,text,where,message", CASES, ids=[c[0] for c in CASES])
def test_broken_config(name, text, where, message):
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "broken.cfg")
    rendered = [str(e) for e in info.value.errors]
    expected_prefix = f"broken.cfg:{where}: "
    assert any(r.startswith(expected_prefix) and message in r for r in rendered), rendered


def test_table_is_large_enough():
    assert len(CASES) >= 30


def test_every_error_reported_in_one_run():
    text = ("chidlren=4\nfork=maybe\n" + HEAD +
            'route {\n  forwrd();\n  sl_send_reply("404");\n  if (uri=~"(") { exit; }\n  route(9);\n}\n')
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "many.cfg")
    where = [f"{e.pos.line}:{e.pos.col}" for e in info.value.errors]
    assert where == ["1:1", "2:6", "6:3", "7:3", "8:12", "9:3"]


def test_syntax_errors_do_not_hide_later_ones():
    text = HEAD + "route {\n  setflag(1) exit;\n  frob();\n}\nroute[2] {\n  if (method==) { exit; }\n}\n"
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "s.cfg")
    lines = sorted({e.pos.line for e in info.value.errors})
    assert lines == [4, 5, 8], [str(e) for e in info.value.errors]
