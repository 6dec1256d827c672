"""The management interface of a running pyproxy: pyproxyctl mi over the JSON-RPC socket and the
FIFO; tls_list and tls_reload; two pyproxy instances with mutual TLS, the client domain chosen by
AVP name, by destination socket and by default, seen from the server side's tls_list; an outbound
connection opened by one worker reused by the others.

`Peer` (a SIP server of the test's own that counts the connections the proxy opens to it) and
`call_id_for` (a Call-ID that a given worker owns) serve test_respawn.py too."""

import itertools
import json
import os
import re
import selectors
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
import uuid

import pytest

from ._harness import (LOOP, free_port, options_request, owner, read_tcp_message, status_of, udp_options,
                       udp_socket)
from .test_tls import client_context, tls_options, tls_server


def mi(sock, *args, check=True):
    r = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "mi", "-s", str(sock), *args],
                       capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    return r


def tls_lines(pki, cert, port, verify_client=0):
    return (f"disable_tls=no\nlisten=tls:{LOOP}:{port}\n"
            f'tls_certificate="{pki}/{cert}/cert.pem"\ntls_private_key="{pki}/{cert}/privkey.pem"\n'
            f'tls_ca_list="{pki}/ca/cacert.pem"\ntls_verify_client={verify_client}\n'
            f"tls_require_client_certificate={verify_client}\n")


def test_management_commands(proxy_factory, tmp_path):
    sock, fifo = tmp_path / "mi.sock", tmp_path / "fifo"
    proxy = proxy_factory(children=2, extra=f'mi_socket="{sock}"\nfifo="{fifo}"\nfifo_dir="{tmp_path}"\n')
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600 and stat.S_IMODE(os.stat(fifo).st_mode) == 0o600
    roles = sorted(p["role"] for p in mi(sock, "ps"))
    assert roles == ["master", "mi", "tcp main", "worker 1", "worker 2"]
    assert all(p["rss_kib"] > 0 for p in mi(sock, "ps"))
    assert mi(sock, "uptime")["uptime"] >= 0
    assert {"version", "uptime", "ps", "which", "tls_list", "tls_reload", "get_statistics"} <= set(mi(sock, "which"))
    for _ in range(3):
        assert udp_options(proxy.port) == 200
    stats = mi(sock, "get_statistics")
    assert sum(s["requests_in"] for s in stats.values()) >= 3
    r = mi(sock, "no_such_command", check=False)
    assert r.returncode == 1 and "unknown command 'no_such_command'" in r.stderr
    # the FIFO speaks OpenSER's text protocol
    r = subprocess.run([sys.executable, "-m", "pyproxy.ctl", "mi", "-f", str(fifo), "version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("200 OK\npyproxy:: "), r.stdout + r.stderr
    assert mi(sock, "tls_list", check=False).stderr.strip() == "pyproxyctl: TLS is disabled"


def test_tls_list_and_reload(proxy_factory, pki, tmp_path):
    sock, port = tmp_path / "mi.sock", free_port()
    certdir = tmp_path / "live"
    shutil.copytree(pki / "localhost", certdir)
    extra = tls_lines(pki, "localhost", port).replace(str(pki / "localhost"), str(certdir))
    proxy_factory(children=2, extra=extra + f'mi_socket="{sock}"\n')
    assert tls_options(port, client_context(pki))[1] == "localhost"
    held = client_context(pki).wrap_socket(__import__("socket").create_connection((LOOP, port)))
    try:
        entries = [e for e in mi(sock, "tls_list") if e["established"]]
        assert any(e["peer"] == f"{LOOP}:{held.getsockname()[1]}" for e in entries), entries
        entry = entries[0]
        assert entry["direction"] == "in" and entry["version"] in ("TLSv1.2", "TLSv1.3") and entry["cipher"]
        assert entry["domain"] and entry["worker"] in (1, 2) and entry["verified"] is False
        assert isinstance(entry["id"], int) and entry["age"] >= 0 and entry["sni"] is None
        # a broken file: the reload is refused and the old certificate stays in force
        (certdir / "cert.pem").write_text("not a certificate")
        r = mi(sock, "tls_reload", check=False)
        assert r.returncode == 1 and "old files stay in force" in r.stderr
        assert tls_options(port, client_context(pki))[1] == "localhost"
        # new files: new handshakes use them, the open connection goes on
        for name in ("cert.pem", "privkey.pem"):
            shutil.copy(pki / "biloxi.example.com" / name, certdir / name)
        assert mi(sock, "tls_reload") == {"reloaded": 2}
        # the connection from before the reload (on a context the new table did not build) is listed
        assert any(e["peer"] == f"{LOOP}:{held.getsockname()[1]}" for e in mi(sock, "tls_list"))
        biloxi = client_context(pki, server_name="biloxi.example.com")
        assert tls_options(port, biloxi, "biloxi.example.com")[1] == "biloxi.example.com"
        held.sendall(options_request(port, f"held-{uuid.uuid4().hex}", "tls", held.getsockname()[1]))
        held.settimeout(5)
        assert status_of(held.recv(65536)) == 200
    finally:
        held.close()


ROUTE_A = """route {
    if (uri==myself) { sl_send_reply("200", "OK"); exit; }
    if ($rU=="byname") { avp_write("s:atlanta.example.com", "$avp(i:400)"); }
    forward();
}"""
ROUTE_B = """route { sl_send_reply("200", "OK"); }"""


def test_mutual_tls_between_two_instances(proxy_factory, pki, tmp_path):
    """A (UDP in) forwards over TLS to B, which requires client certificates. A's client domain is
    chosen by the AVP (name), by B's socket, or is the default: B's tls_list shows which."""
    b_sock = tmp_path / "b.sock"
    p_name, p_socket, p_default = free_port(), free_port(), free_port()
    b_extra = tls_lines(pki, "localhost", p_name, verify_client=1) + \
        f"listen=tls:{LOOP}:{p_socket}\nlisten=tls:{LOOP}:{p_default}\nmi_socket=\"{b_sock}\"\n"
    proxy_factory(children=2, extra=b_extra, route=ROUTE_B)
    a_extra = (tls_lines(pki, "client.example.com", free_port()) +
               "tls_verify_server=1\ntls_client_domain_avp=400\nloadmodule \"avpops\"\n"
               f'tls_client_domain["atlanta.example.com"] {{\n'
               f'  tls_certificate="{pki}/atlanta.example.com/cert.pem"\n'
               f'  tls_private_key="{pki}/atlanta.example.com/privkey.pem"\n}}\n'
               f"tls_client_domain[{LOOP}:{p_socket}] {{\n"
               f'  tls_certificate="{pki}/biloxi.example.com/cert.pem"\n'
               f'  tls_private_key="{pki}/biloxi.example.com/privkey.pem"\n}}\n')
    a = proxy_factory(children=2, extra=a_extra, route=ROUTE_A)
    with udp_socket(5.0) as u:
        for user, port in (("byname", p_name), ("bysocket", p_socket), ("bydefault", p_default)):
            u.sendto(options_request(a.port, f"{user}-{uuid.uuid4().hex}", "udp", u.getsockname()[1],
                                     ruri=f"sip:{user}@{LOOP}:{port};transport=tls"), (LOOP, a.port))
            data, _ = u.recvfrom(65536)
            assert status_of(data) == 200, data
    seen = {int(e["local"].rsplit(":", 1)[1]): e for e in mi(b_sock, "tls_list") if e["established"]}
    assert "CN=atlanta.example.com" in seen[p_name]["peer_subject"]
    # to an address, the client domain chosen by name sends its name as SNI; the others send none
    assert (seen[p_name]["sni"], seen[p_socket]["sni"], seen[p_default]["sni"]) == ("atlanta.example.com", None, None)
    assert "CN=biloxi.example.com" in seen[p_socket]["peer_subject"]
    assert "CN=client.example.com" in seen[p_default]["peer_subject"]
    assert all(seen[p]["verified"] for p in (p_name, p_socket, p_default))


ROUTE_REUSE = """route {
    if (uri==myself) { sl_send_reply("200", "OK"); exit; }
    if ($rU=="atlanta") { avp_write("s:atlanta.example.com", "$avp(i:400)"); }
    if ($rU=="biloxi") { avp_write("s:biloxi.example.com", "$avp(i:400)"); }
    forward();
}"""


def test_connection_reuse_and_match_domain_on_reuse(proxy_factory, pki, tmp_path):
    """The seed reuses an existing connection whatever the AVP says; a client domain with
    tls_match_domain_on_reuse=1 opens its own instead."""
    b_sock = tmp_path / "b.sock"
    p_strict, p_seed = free_port(), free_port()
    proxy_factory(children=1, route=ROUTE_B, extra=tls_lines(pki, "localhost", p_strict, verify_client=1)
                  + f"listen=tls:{LOOP}:{p_seed}\nmi_socket=\"{b_sock}\"\n")
    domain = ('tls_client_domain["{name}"] {{\n  tls_certificate="{pki}/{name}/cert.pem"\n'
              '  tls_private_key="{pki}/{name}/privkey.pem"\n  {more}\n}}\n')
    a_extra = (tls_lines(pki, "client.example.com", free_port()) + "tls_client_domain_avp=400\n"
               'loadmodule "avpops"\n'
               + domain.format(name="atlanta.example.com", pki=pki, more="tls_match_domain_on_reuse=1")
               + domain.format(name="biloxi.example.com", pki=pki, more=""))
    a = proxy_factory(children=1, extra=a_extra, route=ROUTE_REUSE)
    with udp_socket(5.0) as u:
        for user, port in (("first", p_strict), ("atlanta", p_strict), ("first", p_seed), ("biloxi", p_seed)):
            u.sendto(options_request(a.port, f"{user}-{uuid.uuid4().hex}", "udp", u.getsockname()[1],
                                     ruri=f"sip:{user}@{LOOP}:{port};transport=tls"), (LOOP, a.port))
            data, _ = u.recvfrom(65536)
            assert status_of(data) == 200, data
    subjects: dict[int, list] = {}
    for e in mi(b_sock, "tls_list"):
        subjects.setdefault(int(e["local"].rsplit(":", 1)[1]), []).append(e["peer_subject"])
    assert sorted(s.rsplit("CN=", 1)[1] for s in subjects[p_strict]) == ["atlanta.example.com", "client.example.com"]
    assert [s.rsplit("CN=", 1)[1] for s in subjects[p_seed]] == ["client.example.com"]


# ------------------------------------------------------------------ a peer the proxy connects to

class Peer:
    """A SIP server of the test's own on a free port of 127.0.0.1, over TCP or TLS (the pki's
    localhost certificate): it accepts every connection the proxy opens to it and reads the
    requests sent on them; it never answers. ``conns`` are the accepted connections, in order."""

    def __init__(self, proto: str, pki=None):
        self.proto = proto
        self.port = free_port()
        if proto == "tls":
            self.ctx, self.listener = tls_server(pki, "localhost", self.port)
        else:
            self.ctx, self.listener = None, socket.create_server((LOOP, self.port))
        self.conns: list[socket.socket] = []
        self.closed: set[int] = set()           # indexes of the connections the proxy closed
        self.bufs: list[bytearray] = []

    def uri(self, user: str = "peer") -> str:
        return f"sip:{user}@{LOOP}:{self.port};transport={self.proto}"

    def next_request(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next request on any connection, accepting new ones on the way: (the index of the
        connection it came on, the message), or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for i, buf in enumerate(self.bufs):
                msg = read_tcp_message(self.conns[i], 0, buf)       # deadline passed: what buf holds
                if msg is not None:
                    return i, msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with selectors.DefaultSelector() as sel:
                sel.register(self.listener, selectors.EVENT_READ, -1)
                for i, conn in enumerate(self.conns):
                    if i not in self.closed:
                        sel.register(conn, selectors.EVENT_READ, i)
                ready = [key.data for key, _ in sel.select(left)]
            for i in ready:
                if i == -1:
                    self.accept(deadline)
                else:
                    self.read(i)

    def accept(self, deadline: float) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        if self.ctx is not None:
            conn = self.ctx.wrap_socket(conn, server_side=True)     # the handshake, bounded
        conn.settimeout(0.2)
        self.conns.append(conn)
        self.bufs.append(bytearray())

    def read(self, i: int) -> None:
        try:
            data = self.conns[i].recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""
        if data:
            self.bufs[i] += data
            conn = self.conns[i]
            while isinstance(conn, ssl.SSLSocket) and conn.pending():    # decrypted, invisible to select
                self.bufs[i] += conn.recv(conn.pending())
        else:
            self.closed.add(i)

    def wait_closed(self, i: int, timeout: float = 3.0) -> bool:
        """Whether connection `i` is closed by the proxy's side within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while i not in self.closed and time.monotonic() < deadline:
            self.read(i)
        return i in self.closed

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.listener.close()

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_call_ids = itertools.count()


def call_id_for(worker: int, children: int, tag: str = "cid") -> str:
    """A fresh Call-ID that worker `worker` (numbered from 1) owns under call affinity."""
    while True:
        cid = f"{tag}-{next(_call_ids)}-{uuid.uuid4().hex[:8]}"
        if owner(cid, children) == worker:
            return cid


def send_to(proxy, uri: str, call_id: str, u: socket.socket) -> None:
    """An OPTIONS for `uri` with that Call-ID, sent to the proxy over UDP from `u`."""
    u.sendto(options_request(proxy.port, call_id, "udp", u.getsockname()[1], ruri=uri), (LOOP, proxy.port))


REUSE_REQUESTS = 8


@pytest.mark.parametrize("proto", ["tcp", "tls"])
def test_connection_opened_by_one_worker_is_reused_by_the_other(proxy_factory, pki, tmp_path, proto):
    """With children=2, the connection to a peer that worker 1 opened carries the requests that
    worker 2 processes too (handed to its owner): after 8 requests with different Call-IDs over
    UDP, processed by both workers (debug log), the peer has accepted exactly one connection and
    read all 8 on it; tls_list shows that one outbound connection, owned by worker 1."""
    sock = tmp_path / "mi.sock"
    proxy = proxy_factory(children=2, extra=tls_lines(pki, "localhost", free_port()) + f'mi_socket="{sock}"\n')
    call_ids = [call_id_for(1 + n % 2, 2, "reuse") for n in range(REUSE_REQUESTS)]
    with Peer(proto, pki) as peer, udp_socket() as u:
        send_to(proxy, peer.uri(), call_ids[0], u)
        first = peer.next_request()
        assert first is not None and call_ids[0].encode() in first[1], f"{first}\n{proxy.tail()}"
        time.sleep(0.2)     # the supervisor learns of it a message after worker 1 opened it (loaded CI)
        for cid in call_ids[1:]:        # the connection is open and known: the rest reuse it
            send_to(proxy, peer.uri(), cid, u)
        got = [peer.next_request() for _ in call_ids[1:]]
        assert None not in got, f"only {got.index(None) + 1} of {REUSE_REQUESTS} requests arrived\n{proxy.tail()}"
        arrived = sorted(re.search(rb"Call-ID: (\S+)", msg).group(1).decode() for _, msg in [first] + got)
        assert arrived == sorted(call_ids)
        assert peer.next_request(timeout=0.3) is None
        assert len(peer.conns) == 1, f"the peer accepted {len(peer.conns)} connections\n{proxy.tail()}"
        if proto == "tls":
            out = [e for e in mi(sock, "tls_list") if e["direction"] == "out"]
            assert [(e["worker"], e["peer"]) for e in out] == [(1, f"{LOOP}:{peer.port}")], out
    processed_by = {m["callid"]: int(m["worker"]) for m in proxy.processing() if m["callid"] in call_ids}
    assert processed_by == {cid: owner(cid, 2) for cid in call_ids}
    assert set(processed_by.values()) == {1, 2}, processed_by
