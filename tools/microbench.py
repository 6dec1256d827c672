#!/usr/bin/env python3
"""Micro-benchmark of the per-message hot path, in two layers:

- sans-IO: parse -> run the stateless script (maxfwd, force_rport, OPTIONS check, forward) ->
  serialize, for a sipp-like INVITE, and parse -> forward by Via -> serialize for its 200 OK;
- worker: the same two messages through a real worker (its Proxy.process: parse, validation,
  statistics, script, serialize, sendto on a real UDP socket to a loopback sink), built from
  etc/bench/stateless.cfg's routing exactly as the running server builds it.

The difference between the worker figure and what the running server spends per message (the
benchmark's CPU per call / 6) is the event loop and the kernel's receive path.
Prints microseconds per message (best of several rounds); with --instructions, the instructions
per message of the worker path, counted by valgrind (repeatable, unlike times on a shared VM).

--register: a REGISTER through a real worker with etc/bench/register.cfg's routing (save() into
the shared location table, the 200 OK sent), each with its own Call-ID as sipp's, cycling through
REGISTER_USERS users that hold --bindings bindings each (the harness's ramp leaves about 8: every
step's sipp registers from a new port).
Usage: python tools/microbench.py [--rounds N] [--number N] [--instructions] [--register [--bindings N]]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from pyproxy.assembly.loader import load_config_text
from pyproxy.config.values import Proto, SocketSpec
from pyproxy.script.forward import forward_reply
from pyproxy.myself import Myself
from pyproxy.script.context import ReceiveInfo, ScriptContext
from pyproxy.sip import parse_message

# The same routing as Kamailio's reference stateless.cfg in shared/bench/kamailio/.
STATELESS = """
loadmodule "sl"
loadmodule "maxfwd"
route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    force_rport();
    if (method=="OPTIONS" && uri==myself && $rU==$null) {
        sl_send_reply("200", "OK");
        exit;
    }
    forward();
    exit;
}
"""

SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
INVITE = (
    "INVITE sip:bench@127.0.0.1:5090;transport=udp SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-4242-1-0;rport\r\n"
    "From: \"sipp\" <sip:sipp@127.0.0.1:6000>;tag=4242SIPpTag001\r\n"
    "To: <sip:bench@127.0.0.1:5090>\r\n"
    "Call-ID: 1-4242@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:sipp@127.0.0.1:6000;transport=UDP>\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: bench\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n\r\n{SDP}").encode()
OK = (
    "SIP/2.0 200 OK\r\n"
    # both Vias on one line, as sipp's [last_Via:] writes them
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK0123456789abcdef0123, "
    "SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-4242-1-0;rport=6000;received=127.0.0.1\r\n"
    "From: \"sipp\" <sip:sipp@127.0.0.1:6000>;tag=4242SIPpTag001\r\n"
    "To: <sip:bench@127.0.0.1:5090>;tag=5151SIPpTag011\r\n"
    "Call-ID: 1-4242@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:127.0.0.1:5090;transport=UDP>\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n\r\n{SDP}").encode()


class NullRuntime:
    """Everything a worker's runtime does for the script, minus the socket write."""
    reply_to_via = False

    def __init__(self):
        self.is_myself = Myself([SocketSpec(Proto.UDP, "127.0.0.1", 5070)])
        self.last = b""

    def send(self, ctx, dest, data, source=None):
        self.last = data
        return True

    def via_sent_by(self, proto, dest, rcv):
        return "127.0.0.1:5070", None

    def log(self, level, text):
        pass


def measure(fn, number: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def worker_messages():
    """(process the INVITE, process the 200 OK, close): both through a real worker's
    Proxy.process, sending for real (to sinks nobody reads)."""
    worker, port, uas_sink, close = _worker(STATELESS)
    uac_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac_sink.bind(("127.0.0.1", 0))
    uas, uac = uas_sink.getsockname()[1], uac_sink.getsockname()[1]
    invite = INVITE.replace(b"5090;transport=udp", b"%d;transport=udp" % uas)
    ok = OK.replace(b"127.0.0.1:5070;", b"127.0.0.1:%d;" % port).replace(b"6000;branch", b"%d;branch" % uac)
    rcv_invite = ReceiveInfo("127.0.0.1", uac, "127.0.0.1", port, Proto.UDP)
    rcv_ok = ReceiveInfo("127.0.0.1", uas, "127.0.0.1", port, Proto.UDP)

    def close_both():
        uac_sink.close()
        close()

    sent = worker.stats.read()
    worker.proxy.process(invite, rcv_invite, None)
    worker.proxy.process(ok, rcv_ok, None)
    after = worker.stats.read()
    assert after["requests_out"] == sent["requests_out"] + 1, after
    assert after["replies_out"] == sent["replies_out"] + 1, after
    return (lambda: worker.proxy.process(invite, rcv_invite, None),
            lambda: worker.proxy.process(ok, rcv_ok, None), close_both)


def _worker(routing: str):
    """(a worker of ``routing`` on a free UDP port, as after fork, with its modules started;
    the port; a sink socket; close)."""
    from pyproxy.runtime.arbiter import Arbiter
    from pyproxy.runtime.supervisor import LocalSupervisor
    from pyproxy.runtime.worker import tune_collector
    from pyproxy.script.router import MessageRouter

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    arbiter = Arbiter(load_config_text(f"fork=no\ndebug=1\nlisten=udp:127.0.0.1:{port}\n" + routing, "<bench>"),
                      SimpleNamespace(shm_mb=8, foreground=1))
    arbiter.build()
    worker = arbiter.new_worker(0, LocalSupervisor(arbiter.shm, arbiter.settings))
    worker.proxy.debug = False
    worker.proxy.router = MessageRouter.for_process(worker.config, 0, worker.proxy)     # (Worker.boot's)
    tune_collector()

    def close():
        sink.close()
        for l in arbiter.listeners:
            l.sock.close()
        arbiter.destroy_modules()
    return worker, port, sink, close


REGISTER_USERS = 500         # (the harness registers 10,000; fewer keep the warm-up short)
_REGISTER = ("REGISTER sip:127.0.0.1:%d SIP/2.0\r\n"
             "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%d;rport\r\n"
             "From: <sip:u%06d@127.0.0.1>;tag=%dSIPpReg\r\n"
             "To: <sip:u%06d@127.0.0.1>\r\n"
             "Call-ID: %d-reg@127.0.0.1\r\n"
             "CSeq: 1 REGISTER\r\n"
             "Contact: <sip:u%06d@127.0.0.1:%d;transport=UDP>\r\n"
             "Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def worker_register(bindings: int, count: int):
    """(process the next REGISTER, close): ``count`` REGISTERs after each user holds
    ``bindings`` bindings (its k-th REGISTER comes from port uac + k % bindings)."""
    routing = (Path(__file__).resolve().parent.parent / "etc/bench/register.cfg").read_text()
    worker, port, sink, close = _worker(routing[routing.index("loadmodule"):])
    uac = sink.getsockname()[1]
    rcv = ReceiveInfo("127.0.0.1", uac, "127.0.0.1", port, Proto.UDP)
    warm_up = REGISTER_USERS * bindings
    messages = []
    for i in range(warm_up + count + 1):
        user, contact_port = i % REGISTER_USERS, uac + i // REGISTER_USERS % bindings
        messages.append((_REGISTER % (port, uac, i, user, i, user, i, user, contact_port)).encode())
    process = worker.proxy.process
    for data in messages[:warm_up]:
        process(data, rcv, None)
    sink.setblocking(False)
    while True:         # (the replies of the warm-up, as many as the socket kept)
        try:
            sink.recv(65536)
        except BlockingIOError:
            break
    process(messages[warm_up], rcv, None)
    reply = sink.recv(65536)
    listed = re.search(rb"\r\nContact: ([^\r]*)", reply)
    assert reply.startswith(b"SIP/2.0 200 ") and listed and listed.group(1).count(b"<sip:") == bindings, reply
    pending = iter(messages[warm_up + 1:])
    return (lambda: process(next(pending), rcv, None)), close


def worker_path(number: int, rounds: int) -> tuple[float, float]:
    invite, ok, close = worker_messages()
    try:
        return measure(invite, number, rounds), measure(ok, number, rounds)
    finally:
        close()


def instructions(number: int, kinds: tuple[str, ...], extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Instructions per message through the worker path, as valgrind's callgrind counts them: the
    same count for the same code and Python, whatever else the machine is doing (the VM's speed
    drifts by tens of percent from hour to hour; the hash seed fixed, as dicts' layouts move the
    count by about 1 %). A run of ``number`` messages of each kind, minus a run of none."""
    per_message = {}
    for which in kinds:
        collected = []
        for n in (0, number):
            run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                                  __file__, "--repeat", which, "--number", str(n), *extra],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            found = re.search(r"Collected : (\d+)", run.stderr)
            if found is None:
                raise SystemExit(f"valgrind failed (apt-get install valgrind?): {run.stderr[-500:]}")
            collected.append(int(found.group(1)))
        per_message[which] = (collected[1] - collected[0]) / number
    return per_message


def register_main(args) -> None:
    what = f"REGISTER through a worker, {args.bindings} binding(s) per user"
    if args.instructions:
        count = instructions(min(args.number, 2000), ("REGISTER",), ("--bindings", str(args.bindings)))["REGISTER"]
        print(f"{what}: {count:,.0f} instructions/message")
        return
    register, close = worker_register(args.bindings, args.number * args.rounds)
    try:
        print(f"{what}: {measure(register, args.number, args.rounds):.1f} us/message")
    finally:
        close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=20000)
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per message with valgrind instead of timing")
    ap.add_argument("--register", action="store_true", help="the REGISTER path (register.cfg) instead")
    ap.add_argument("--bindings", type=int, default=1, help="--register: bindings each user holds")
    ap.add_argument("--repeat", choices=("INVITE", "200 OK", "REGISTER"), help=argparse.SUPPRESS)  # (valgrind's runs)
    args = ap.parse_args()
    if args.repeat == "REGISTER":
        register, close = worker_register(args.bindings, args.number)
        for _ in range(args.number):
            register()
        close()
        return
    if args.repeat:
        invite, ok, close = worker_messages()
        for _ in range(args.number):
            (invite if args.repeat == "INVITE" else ok)()
        close()
        return
    if args.register:
        register_main(args)
        return
    if args.instructions:
        counts = instructions(min(args.number, 2000), ("INVITE", "200 OK"))
        for which, count in counts.items():
            print(f"{which} through a worker: {count:,.0f} instructions/message")
        print(f"mean of the two: {sum(counts.values()) / 2:,.0f} instructions/message")
        return

    script = load_config_text(STATELESS, "<bench>").script
    runtime = NullRuntime()
    rcv_invite = ReceiveInfo("127.0.0.1", 6000, "127.0.0.1", 5070, Proto.UDP)
    rcv_ok = ReceiveInfo("127.0.0.1", 5090, "127.0.0.1", 5070, Proto.UDP)

    def invite():
        script.run_request(ScriptContext(parse_message(INVITE), rcv_invite, runtime))

    def ok():
        forward_reply(ScriptContext(parse_message(OK), rcv_ok, runtime))

    invite()
    assert b"Max-Forwards: 69" in runtime.last and runtime.last.count(b"Via:") == 2, runtime.last
    ok()
    assert runtime.last.count(b"Via:") == 1, runtime.last
    t_invite = measure(invite, args.number, args.rounds)
    t_ok = measure(ok, args.number, args.rounds)
    print(f"INVITE parse+route+serialize: {t_invite:.1f} us/message")
    print(f"200 OK parse+route+serialize: {t_ok:.1f} us/message")
    print(f"mean of the two: {(t_invite + t_ok) / 2:.1f} us/message (budget 20)")
    w_invite, w_ok = worker_path(args.number, args.rounds)
    print(f"INVITE through a worker, sent: {w_invite:.1f} us/message")
    print(f"200 OK through a worker, sent: {w_ok:.1f} us/message")
    print(f"mean of the two: {(w_invite + w_ok) / 2:.1f} us/message")


if __name__ == "__main__":
    main()
