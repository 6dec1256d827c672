"""A runtime double for running compiled scripts on real parsed messages: it records what the
script sends instead of opening sockets (the script engine is sans-IO; the real runtime is tested
end to end with sipp)."""


import pytest

from pyproxy.assembly.loader import load_config_text
from pyproxy.config.values import Proto, SocketSpec
from pyproxy.myself import Myself
from pyproxy.script.context import ReceiveInfo, ScriptContext
from pyproxy.sip import SIPError, parse_message


class RecordingRuntime:
    reply_to_via = False

    def __init__(self, myself=None):
        self.is_myself = myself or Myself([SocketSpec(Proto.UDP, "127.0.0.1", 5060),
                                           SocketSpec(Proto.TCP, "127.0.0.1", 5060)],
                                          [SocketSpec(None, "proxy.example.com", None)])
        self.sent = []
        self.logs = []
        self.connections = set()    # (proto, ip, port) that connected() reports open

    def send(self, ctx, dest, data, source=None):
        self.sent.append((dest, data))
        return True

    no_socket = False       # as a proxy without a socket of the destination's transport

    def via_sent_by(self, proto, dest, rcv):
        if self.no_socket:
            raise SIPError(f"no {proto.value} socket to send from")
        return "127.0.0.1:5060", None

    def connected(self, proto, ip, port):
        return (proto, ip, port) in self.connections

    def log(self, level, text):
        self.logs.append((level, text))


INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.1:5062>\r\n"
    "Content-Length: 0\r\n\r\n")


def request(text=INVITE, **replace):
    for old, new in replace.items():
        text = text.replace(old.replace("_", "-") if old.isupper() else old, new)
    return parse_message(text.encode())


@pytest.fixture
def run():
    """run(cfg_route_text, msg_text=INVITE, proto=Proto.UDP, src="10.0.0.1") -> (result, ctx, runtime)"""
    def run(script, msg=INVITE, proto=Proto.UDP, src_ip="10.0.0.1", src_port=5062, modules=("sl", "maxfwd"),
            myself=None, no_socket=False):
        head = "".join(f'loadmodule "{m}"\n' for m in modules)
        config = load_config_text(head + script, "test.cfg")
        runtime = RecordingRuntime(myself)
        runtime.no_socket = no_socket
        message = parse_message(msg.encode() if isinstance(msg, str) else msg)
        ctx = ScriptContext(message, ReceiveInfo(src_ip, src_port, "127.0.0.1", 5060, proto), runtime)
        result = config.script.run_request(ctx)
        return result, ctx, runtime
    return run
