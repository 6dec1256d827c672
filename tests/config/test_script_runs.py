"""Compiled scripts run on real parsed messages: conditions, return rules, variables, functions."""

import logging

import pytest

from pyproxy.config.ast import RouteKind
from pyproxy.assembly.loader import load_config_text
from pyproxy.config.values import Proto
from pyproxy.sip import parse_message

from conftest import INVITE


def flags_of(run, cond, **kw):
    """Run `if (cond) setflag(1); else setflag(2);` and say which branch ran."""
    _, ctx, _ = run(f"route {{ if ({cond}) setflag(1); else setflag(2); }}", **kw)
    return {2: True, 4: False}[ctx.flags]


@pytest.mark.parametrize("cond,expected", [
    ('method=="INVITE"', True),
    ('method=="invite"', True),          # OpenSER compares methods case-insensitively
    ('method=="REGISTER"', False),
    ('method!="REGISTER"', True),
    ('uri=~"^sip:bob@"', True),
    ('uri=~"@atlanta"', False),
    ('uri!~"@atlanta"', True),
    ('uri=~"^sip:[[:alpha:]]+@[[:alnum:].-]+$"', True),    # POSIX classes, as OpenSER read them
    ('uri=~"^sip:[[:digit:]]+@"', False),
    ('$ci=~"^[[:xdigit:]]+@[^[:space:]]+$"', True),
    ('uri=="sip:bob@biloxi.example.com"', True),
    ("uri==myself", False),
    ("uri!=myself", True),
    ('from_uri=~"alice@atlanta"', True),
    ("from_uri==myself", False),
    ('to_uri=="sip:bob@biloxi.example.com"', True),
    ("src_ip==10.0.0.1", True),
    ("src_ip==10.0.0.0/8", True),
    ("src_ip==192.168.0.0/16", False),
    ("src_ip!=10.0.0.1", False),
    ("src_ip==myself", False),
    ("dst_ip==myself", True),
    ("src_port==5062", True),
    ("src_port>5000 && src_port<=5062", True),
    ("dst_port!=5060", False),
    ("proto==udp", True),
    ("proto==tls", False),
    ("af==inet", True),
    ("af==inet6", False),
    ('!(method=="INVITE")', False),
    ('method=="INVITE" && uri=~"biloxi"', True),
    ('method=="REGISTER" || uri=~"biloxi"', True),
    ('(method=="REGISTER" || method=="INVITE") && !(src_ip==myself)', True),
    ("isflagset(3)", False),
    ('$rU=="bob"', True),
    ('$rd=="biloxi.example.com"', True),
    ("$rp==5060", True),
    ('$fU=="alice"', True),
    ('$fd=="atlanta.example.com"', True),
    ('$tU=="bob"', True),
    ('$si=="10.0.0.1"', True),
    ("$sp==5062", True),
    ('$rm=="INVITE"', True),
    ('$ci=~"^a84b4c76"', True),
    ('$proto=="udp"', True),
    ("$avp(i:1)==$null", True),
    ("$avp(s:who)", False),
    ('$hdr(Call-ID)=~"pc33"', True),
])
def test_conditions(run, cond, expected):
    assert flags_of(run, cond) is expected


def test_uri_myself_and_alias(run):
    for uri, mine in [("sip:127.0.0.1", True), ("sip:bob@127.0.0.1:5060", True), ("sip:127.0.0.1:5070", False),
                      ("sip:bob@proxy.example.com", True), ("sip:bob@PROXY.example.com.", True)]:
        msg = INVITE.replace("sip:bob@biloxi.example.com SIP/2.0", f"{uri} SIP/2.0")
        assert flags_of(run, "uri==myself", msg=msg) is mine, uri


def test_proto_tls(run):
    assert flags_of(run, "proto==tls", proto=Proto.TLS) is True
    assert flags_of(run, "af==inet6", src_ip="::1") is True


def test_function_return_rules(run):
    # a negative result is false, positive true, and 0 ends the whole script
    script = ('route { if (route(1)) setflag(1); if (!route(2)) setflag(2); route(3); setflag(9); }\n'
              "route[1] { return(1); }\nroute[2] { return(-1); }\nroute[3] { return(0); }\n")
    result, ctx, _ = run(script)
    assert ctx.flags == 0b110 and result == 0


def test_break_leaves_only_the_current_block(run):
    result, ctx, _ = run("route { route(1); setflag(2); }\nroute[1] { setflag(1); break; setflag(3); }")
    assert ctx.flags == 0b110 and result == 1


def test_exit_and_drop(run):
    _, ctx, _ = run("route { setflag(1); route(1); setflag(2); }\nroute[1] { exit; }")
    assert ctx.flags == 0b10 and not ctx.dropped
    _, ctx, _ = run("route { drop; setflag(2); }")
    assert ctx.flags == 0 and ctx.dropped


def test_flags(run):
    _, ctx, _ = run("route { setflag(1); setflag(5); resetflag(1); if (isflagset(5)) setflag(6); }")
    assert ctx.flags == (1 << 5) | (1 << 6)


def test_uri_rewriting(run):
    msg = INVITE.replace("sip:bob@biloxi.example.com SIP/2.0", "sip:201555@biloxi.example.com SIP/2.0")
    _, ctx, _ = run('route { strip(3); prefix("00"); sethost("domB.net"); }', msg=msg)
    assert ctx.msg.ruri == "sip:00555@domB.net"
    _, ctx, _ = run('route { rewritehostport("10.1.1.1:5070"); }')
    assert ctx.msg.ruri == "sip:bob@10.1.1.1:5070"
    _, ctx, _ = run('route { seturi("sip:carol@chicago.example.com;transport=tcp"); }')
    assert str(ctx.msg.uri.params["transport"]) == "tcp"
    _, ctx, _ = run('route { $rU = "dave"; $rp = 5080; }')
    assert ctx.msg.ruri == "sip:dave@biloxi.example.com:5080"


def test_avps_are_stacks(run):
    _, ctx, _ = run('route { $avp(i:400) = $fd; $avp(i:400) = "second"; $avp(s:name) = 7; '
                    'if ($avp(i:400)=="second" && $avp(s:name)==7) setflag(1); }')
    assert ctx.avps[400] == ["atlanta.example.com", "second"] and ctx.flags == 2


def test_log_expands_variables(run):
    _, _, runtime = run('route { log(1, "got $rm from $si:$sp for $ru\\n"); log("quiet"); }')
    assert runtime.logs == [(logging.WARNING, "got INVITE from 10.0.0.1:5062 for sip:bob@biloxi.example.com"),
                            (logging.DEBUG, "quiet")]


def test_forward_sends_with_our_via(run):
    result, _, runtime = run("route { forward(); }")
    assert result == 1
    (dest, data), = runtime.sent
    assert (dest.proto, dest.host, dest.port) == (Proto.UDP, "biloxi.example.com", None)
    out = parse_message(data)
    assert [v.host for v in out.vias] == ["127.0.0.1", "10.0.0.1"]
    assert out.top_via.branch.startswith("z9hG4bK") and out.top_via.branch != "z9hG4bK776asdhds"
    # the stateless branch is the same for a retransmission
    _, _, again = run("route { forward(); }")
    assert again.sent[0][1] == data


def test_forward_to_host_and_transport(run):
    _, _, runtime = run('route { forward_tcp("10.2.2.2", 5070); }')
    dest, data = runtime.sent[0]
    assert (dest.proto, dest.host, dest.port) == (Proto.TCP, "10.2.2.2", 5070)
    assert parse_message(data).top_via.transport == "TCP"


@pytest.mark.parametrize("call,expected", [
    ("forward(uri:host, uri:port)", (Proto.UDP, "10.9.9.9", 5099)),     # OpenSER's spelling
    ("forward(uri:host, 5080)", (Proto.UDP, "10.9.9.9", 5080)),
    ("forward_tcp(uri:host, uri:port)", (Proto.TCP, "10.9.9.9", 5099)),
])
def test_forward_to_the_request_uri_read_when_forwarding(run, call, expected):
    _, _, runtime = run(f'route {{ rewritehostport("10.9.9.9:5099"); {call}; }}')
    dest = runtime.sent[0][0]
    assert (dest.proto, dest.host, dest.port) == expected


def test_msg_len_in_openser_spelling(run):
    _, ctx, _ = run("route { if (msg:len > 100 && msg_len < 10000) setflag(1); if (msg:len>=10000) setflag(2); }")
    assert ctx.flags == 1 << 1


def test_forward_stamps_received_and_rport(run):
    msg = INVITE.replace("10.0.0.1:5062;branch", "pc33.atlanta.example.com;rport;branch")
    _, _, runtime = run("route { forward(); }", msg=msg, src_ip="192.0.2.4", src_port=40000)
    via = parse_message(runtime.sent[0][1]).vias[1]
    assert via.received == "192.0.2.4" and via.rport == 40000


def test_response_goes_back_on_the_connection_its_request_came_on(run):
    """RFC 3261 18.2.2 without rport: our Via keeps the connection's port; the response takes
    that connection while it is open, else a new one to the sender's Via port."""
    from conftest import RecordingRuntime
    from pyproxy.script.forward import forward_reply
    from pyproxy.script.context import ReceiveInfo, ScriptContext
    msg = INVITE.replace("SIP/2.0/UDP 10.0.0.1:5062", "SIP/2.0/TCP 10.0.0.1:5062")
    _, _, runtime = run("route { forward(); }", msg=msg, proto=Proto.TCP, src_port=40001)
    ours = parse_message(runtime.sent[0][1]).top_via
    assert ours.params["cport"] == "40001"
    response = runtime.sent[0][1].replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"SIP/2.0 200 OK", 1)
    for open_conns, port in (({(Proto.TCP, "10.0.0.1", 40001)}, 40001), (set(), 5062)):
        replies = RecordingRuntime()
        replies.connections = open_conns
        ctx = ScriptContext(parse_message(response), ReceiveInfo("10.2.2.2", 5060, "127.0.0.1", 5060, Proto.UDP),
                            replies)
        assert forward_reply(ctx) == 1
        (dest, data), = replies.sent
        assert (dest.proto, dest.host, dest.port) == (Proto.TCP, "10.0.0.1", port)
        assert b"cport" not in data
    # with rport the sender's Via says it all; over UDP there is no connection to keep
    _, _, runtime = run("route { forward(); }", msg=msg.replace(";branch", ";rport;branch"), proto=Proto.TCP)
    assert "cport" not in parse_message(runtime.sent[0][1]).top_via.params
    _, _, runtime = run("route { forward(); }")
    assert "cport" not in parse_message(runtime.sent[0][1]).top_via.params


def test_myself_port_follows_the_uri_transport(run):
    """sip:host;transport=tls without a port means 5061, as sips: does."""
    from pyproxy.config.values import SocketSpec
    from pyproxy.myself import Myself
    tls_only = Myself([SocketSpec(Proto.TLS, "127.0.0.1", 5061)])
    for uri, mine in (("sip:127.0.0.1;transport=tls", True), ("sips:127.0.0.1", True),
                      ("sip:127.0.0.1", False), ("sip:127.0.0.1;transport=tcp", False)):
        msg = INVITE.replace("INVITE sip:bob@biloxi.example.com", f"INVITE {uri}")
        _, ctx, _ = run('route { if (uri==myself) setflag(1); }', msg=msg, myself=tls_only)
        assert bool(ctx.flags & 2) is mine, uri


def test_sl_send_reply(run):
    result, _, runtime = run('route { sl_send_reply("404", "Not Here"); }')
    (dest, data), = runtime.sent
    assert (dest.host, dest.port) == ("10.0.0.1", 5062)
    reply = parse_message(data)
    assert (reply.status, reply.reason) == (404, "Not Here")
    assert reply.to.tag and reply.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert reply.header("Server") == "pyproxy"


def test_force_rport_sends_our_own_replies_to_the_source_port(run):
    """RFC 3581 for a client behind NAT that did not ask: the reply goes where the request came
    from, and its Via says so."""
    _, _, runtime = run('route { force_rport(); sl_send_reply("200", "OK"); }', src_port=31000)
    (dest, data), = runtime.sent
    assert (dest.host, dest.port) == ("10.0.0.1", 31000)
    assert parse_message(data).top_via.rport == 31000
    _, _, runtime = run('route { sl_send_reply("200", "OK"); }', src_port=31000)
    assert runtime.sent[0][0].port == 5062      # without it: the Via's port


@pytest.mark.parametrize("rewrite", ['rewritehostport("10.9.9.9:5070")', 'sethost("10.9.9.9")',
                                     '$rd = "10.9.9.9"'])
def test_a_new_host_drops_the_callers_maddr(run, rewrite):
    """Else the caller's maddr would still decide where the request goes, past the script."""
    msg = INVITE.replace("INVITE sip:bob@biloxi.example.com SIP/2.0",
                         "INVITE sip:bob@gw.example.com;maddr=10.6.6.6 SIP/2.0")
    _, ctx, runtime = run(f"route {{ {rewrite}; forward(); }}", msg)
    (dest, data), = runtime.sent
    assert dest.host == "10.9.9.9" and "maddr" not in ctx.msg.ruri
    _, _, runtime = run("route { forward(); }", msg)
    assert runtime.sent[0][0].host == "10.6.6.6"        # untouched, the URI's maddr is honoured


def test_maxfwd_max_limit_lowers_a_larger_value(run):
    script = 'modparam("maxfwd", "max_limit", 16)\nroute { mf_process_maxfwd_header("10"); forward(); }'
    _, _, runtime = run(script)
    assert parse_message(runtime.sent[0][1]).max_forwards == 16         # 70 - 1, lowered to 16
    _, _, runtime = run(script, INVITE.replace("Max-Forwards: 70", "Max-Forwards: 5"))
    assert parse_message(runtime.sent[0][1]).max_forwards == 4


def test_forward_failures_answer_what_went_wrong(run):
    script = "route { if (!forward()) { sl_reply_error(); } }"
    _, _, runtime = run(script, INVITE.replace("INVITE sip:bob@biloxi.example.com", "INVITE tel:+15551234"))
    assert parse_message(runtime.sent[-1][1]).status == 416        # RFC 3261 16.3 step 2
    _, _, runtime = run(script, INVITE.replace("sip:bob@biloxi", "sips:bob@biloxi"), no_socket=True)
    assert parse_message(runtime.sent[-1][1]).status == 500        # our configuration, not the caller


def test_long_allow_lists_and_else_if_ladders(run):
    """Real configs hold hundreds of addresses and branches: Python nests 200 parentheses and 100
    blocks at most, so the compiled code must not nest them."""
    allowed = " || ".join(f"src_ip==10.1.{i // 250}.{i % 250 + 1}" for i in range(300))
    ladder = " else ".join(f'if (uri=~"^sip:{n}@") {{ setflag({n % 60}); }}' for n in range(150))
    script = f"route {{ if ({allowed}) {{ setflag(61); }} {ladder} }}"
    _, ctx, _ = run(script, INVITE.replace("sip:bob@", "sip:149@"), src_ip="10.1.1.50")
    assert ctx.flags == (1 << 61) | (1 << (149 % 60))


def test_a_value_a_variable_cannot_take_fails_that_assignment_only(run):
    """The caller's X-Port: abc must not cost the worker an internal error and the message."""
    msg = INVITE.replace("Call-ID", "X-Port: abc\r\nCall-ID")
    _, ctx, runtime = run("route { $rp = $hdr(X-Port); $ru = $null; $rd = $null; forward(); }", msg)
    failed = [text for _, text in runtime.logs if text.startswith("cannot set")]
    assert [text[:19] for text in failed] == ["cannot set $rp to '", "cannot set $ru to N", "cannot set $rd to N"]
    assert failed[1].endswith("the Request-URI cannot be $null")
    assert ctx.msg.ruri == "sip:bob@biloxi.example.com" and len(runtime.sent) == 1


def test_a_route_that_calls_itself_ends_the_script_with_a_log_line(run):
    result, _, runtime = run("route { route(1); forward(); }\nroute[1] { route(1); }")
    assert result == 0 and not runtime.sent
    assert any("called each other too deep" in text for _, text in runtime.logs)


def test_onreply_route_without_a_number_is_the_main_reply_route():
    config = load_config_text('\ufeffroute { forward(); }\nonreply_route { drop; }\n', "test.cfg")   # and a BOM
    assert config.script.has(RouteKind.ONREPLY, "0")


def test_a_modparam_set_twice_is_warned_about():
    config = load_config_text('loadmodule "maxfwd"\nmodparam("maxfwd", "max_limit", 20)\n'
                              'modparam("maxfwd", "max_limit", 30)\nroute { exit; }\n', "test.cfg")
    assert config.modparams["maxfwd"]["max_limit"] == 30
    (pos, text), = config.warnings
    assert (pos.line, text) == (3, 'modparam("maxfwd", "max_limit") is set again (first at line 2): '
                                   "the last value is used")


def test_route_numbers_are_numbers(run):
    _, ctx, _ = run("route { route(01); route(0x2); }\nroute[1] { setflag(1); }\nroute[002] { setflag(2); }")
    assert ctx.flags == 0b110


def test_maxfwd(run):
    script = 'route { if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; } forward(); }'
    _, _, runtime = run(script)
    assert parse_message(runtime.sent[0][1]).max_forwards == 69
    _, _, runtime = run(script, msg=INVITE.replace("Max-Forwards: 70\r\n", "Max-Forwards: 0\r\n"))
    assert parse_message(runtime.sent[0][1]).status == 483
    _, _, runtime = run(script, msg=INVITE.replace("Max-Forwards: 70\r\n", ""))
    assert parse_message(runtime.sent[0][1]).max_forwards == 10


def test_sl_reply_error_after_failed_forward(run, monkeypatch):
    from conftest import RecordingRuntime
    sends = []

    def send(self, ctx, dest, data, source=None):
        sends.append(data)
        return len(sends) > 1      # the forward fails, the reply goes out
    monkeypatch.setattr(RecordingRuntime, "send", send)
    result, ctx, _ = run('route { if (!forward("10.9.9.9", 5060)) sl_reply_error(); }')
    reply = parse_message(sends[1])
    assert reply.status == 477 and ctx.last_error[0] == 477


def test_script_is_compiled_once(run, monkeypatch):
    from pyproxy.assembly import compiler
    from pyproxy.config import parser
    from pyproxy.assembly.loader import load_config_text
    config = load_config_text('loadmodule "sl"\nroute { if (method=="INVITE") setflag(1); }', "t.cfg")
    assert "def request_0(ctx)" in config.script.source
    # running does not go back to the parser or compiler
    monkeypatch.setattr(parser, "parse", None)
    monkeypatch.setattr(compiler, "Compiler", None)
    from conftest import RecordingRuntime
    from pyproxy.script.context import ReceiveInfo, ScriptContext
    for _ in range(3):
        ctx = ScriptContext(parse_message(INVITE.encode()), ReceiveInfo("10.0.0.1", 5062, "127.0.0.1", 5060, Proto.UDP),
                            RecordingRuntime())
        config.script.run_request(ctx)
        assert ctx.flags == 2


def test_ending_the_script_keeps_no_message_alive():
    # exit/drop raise one shared exception; it must not chain tracebacks (and frames) across messages
    import gc
    from pyproxy.assembly.loader import load_config_text
    from pyproxy.script.context import ReceiveInfo, ScriptContext
    from conftest import RecordingRuntime
    config = load_config_text('route { if (method=="INVITE") exit; }', "t.cfg")
    rcv, runtime = ReceiveInfo("10.0.0.1", 5062, "127.0.0.1", 5060, Proto.UDP), RecordingRuntime()

    def run_many(n):
        for _ in range(n):
            config.script.run_request(ScriptContext(parse_message(INVITE.encode()), rcv, runtime))
    run_many(10)
    gc.collect()
    before = len(gc.get_objects())
    run_many(500)
    gc.collect()
    assert len(gc.get_objects()) - before < 50


def test_a_bug_met_while_routing_loses_the_message_not_the_worker():
    from pyproxy.assembly.loader import load_config_text
    from pyproxy.kernel.shm import SharedMemory
    from pyproxy.runtime.worker import Worker
    from pyproxy.script.context import ReceiveInfo
    from conftest import RecordingRuntime

    config = load_config_text('route { log(1, "routing"); }', "t.cfg")
    worker = Worker(0, 1, config, [], SharedMemory(1, 3, 8), RecordingRuntime().is_myself, None, [], None)

    def broken(level, text):
        raise RuntimeError("a bug")
    worker.proxy.log = broken               # the script's log() reaches the runtime, which fails
    rcv = ReceiveInfo("10.0.0.1", 5062, "127.0.0.1", 5060, Proto.UDP)
    worker.proxy.process(INVITE.encode(), rcv, None)
    worker.proxy.process(INVITE.encode(), rcv, None)
    assert worker.stats.read()["dropped"] == 2


def test_sip_warning_tells_who_answered_what(run):
    script = 'sip_warning=yes\nroute { rewritehostport("10.9.9.9:5070"); sl_send_reply("404", "Not Here"); }'
    _, _, runtime = run(script, src_ip="192.0.2.7", src_port=40002)
    warning = parse_message(runtime.sent[0][1]).header("Warning")
    assert warning.startswith('392 127.0.0.1:5060 "Noisy feedback tells: pid=')
    assert ("req_src_ip=192.0.2.7 req_src_port=40002 in_uri=sip:bob@biloxi.example.com "
            "out_uri=sip:bob@10.9.9.9:5070 via_cnt==1\"") in warning
    _, _, runtime = run('route { sl_send_reply("404", "Not Here"); }')
    assert parse_message(runtime.sent[0][1]).header("Warning") is None


def test_myself_includes_the_host_names_of_each_listen_address():
    """OpenSER's automatic aliases: a name of this host counts as myself on the ports of the
    addresses it resolves to (localhost for loopback), not on others."""
    import socket
    from pyproxy.config.values import SocketSpec
    from pyproxy.myself import Myself
    me = Myself([SocketSpec(Proto.UDP, "127.0.0.1", 5070), SocketSpec(Proto.TLS, "192.0.2.1", 5061)])
    assert me("localhost", 5070) and me("LOCALHOST.", 5070) and not me("localhost", 5061)
    hostname = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(hostname, None)}
    assert me(hostname, 5070) is ("127.0.0.1" in addresses)
    assert Myself([SocketSpec(Proto.UDP, "0.0.0.0", 5070)])(hostname, 5070)


def test_an_alias_without_a_port_is_myself_on_any_port_and_one_with_a_port_on_that_port():
    from pyproxy.config.values import SocketSpec
    from pyproxy.myself import Myself
    me = Myself([SocketSpec(Proto.UDP, "127.0.0.1", 5070)],
                [SocketSpec(None, "example.com", None), SocketSpec(None, "sip.example.org", 5080)])
    assert me("example.com", 5060) and me("Example.COM", 5999) and me("example.com")
    assert me("sip.example.org", 5080) and not me("sip.example.org", 5060)
    assert me("127.0.0.1", 5070) and not me("127.0.0.1", 5060)
