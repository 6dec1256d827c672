"""TLS through the running proxy, with real peers: Python's ssl and openssl s_client as clients,
certificates made with pyproxyctl's own code (pyproxy.certs)."""

import contextlib
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid

import pytest

from ._harness import (free_port, options_request, owner, read_tcp_message, status_of, udp_options, udp_socket,
                       wait_closed)

LOOP = "127.0.0.1"


def tls_settings(pki, port, verify_client=0, require=0, more=""):
    return (f"disable_tls=no\nlisten=tls:{LOOP}:{port}\n"
            f'tls_certificate="{pki}/localhost/cert.pem"\ntls_private_key="{pki}/localhost/privkey.pem"\n'
            f'tls_ca_list="{pki}/ca/cacert.pem"\ntls_verify_client={verify_client}\n'
            f"tls_require_client_certificate={require}\n{more}\n")


def client_context(pki, cert=None, server_name=None):
    ctx = ssl.create_default_context(cafile=str(pki / "ca" / "cacert.pem"))
    ctx.check_hostname = server_name is not None
    if server_name is None:
        ctx.verify_mode = ssl.CERT_REQUIRED
    if cert:
        ctx.load_cert_chain(str(pki / cert / "cert.pem"), str(pki / cert / "privkey.pem"))
    return ctx


def tls_server(pki, cert, port):
    """A TLS server socket of the test's own on 127.0.0.1 (the proxy connects to it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki / cert / "cert.pem"), str(pki / cert / "privkey.pem"))
    listener = socket.create_server((LOOP, port))
    listener.settimeout(5)
    return ctx, listener


def accept_request(server_ctx, listener, timeout=5.0):
    """The SIP message the proxy sends on its next connection to our TLS server; None when the
    handshake fails or the connection ends first."""
    conn, _ = listener.accept()
    try:
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            return read_tcp_message(tls, time.monotonic() + timeout, bytearray())
    except (ssl.SSLError, OSError):
        return None


def tls_options(port, ctx, server_name=None, timeout=5.0):
    """OPTIONS over a new TLS connection: (status or None, the server certificate's CN)."""
    raw = socket.create_connection((LOOP, port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=server_name) as s:
        cn = dict(x[0] for x in s.getpeercert()["subject"]).get("commonName")
        s.sendall(options_request(port, f"tls-{uuid.uuid4().hex}", "tls", s.getsockname()[1]))
        reply = read_tcp_message(s, time.monotonic() + timeout, bytearray())
        return (status_of(reply) if reply else None), cn


def send_sips(proxy, u, server_port, call_id, host=LOOP):
    """An OPTIONS over UDP from ``u`` to the proxy, for sips:bob@HOST:server_port."""
    u.sendto(options_request(proxy.port, call_id, "udp", u.getsockname()[1],
                             ruri=f"sips:bob@{host}:{server_port}"), (LOOP, proxy.port))


def test_options_over_tls(proxy_factory, pki):
    port = free_port()
    proxy = proxy_factory(children=2, extra=tls_settings(pki, port))
    for _ in range(4):      # several connections: they land on different workers
        assert tls_options(port, client_context(pki)) == (200, "localhost")
    assert proxy.alive()


def test_openssl_s_client_sees_the_socket_certificate(proxy_factory, pki):
    port = free_port()
    proxy_factory(children=1, extra=tls_settings(pki, port))
    r = subprocess.run(["openssl", "s_client", "-connect", f"{LOOP}:{port}", "-CAfile",
                        str(pki / "ca" / "cacert.pem"), "-verify_return_error", "-brief"],
                       input=b"", capture_output=True, timeout=20)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert "Verification: OK" in out and re.search(r"CN ?= ?localhost", out), out
    assert re.search(r"Protocol version: TLSv1\.[23]", out), out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_protocol_versions_are_refused(proxy_factory, pki):
    port = free_port()
    proxy_factory(children=1, extra=tls_settings(pki, port))
    ctx = client_context(pki)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_options(port, ctx)


def test_server_domain_per_socket(proxy_factory, pki):
    port, other = free_port(), free_port()
    extra = tls_settings(pki, port, more=(
        f"listen=tls:{LOOP}:{other}\n"
        f"tls_server_domain[{LOOP}:{other}] {{\n"
        f'  tls_certificate="{pki}/biloxi.example.com/cert.pem"\n  tls_private_key="{pki}/biloxi.example.com/privkey.pem"\n}}\n'))
    proxy_factory(children=2, extra=extra)
    assert tls_options(port, client_context(pki))[1] == "localhost"
    biloxi = client_context(pki, server_name="biloxi.example.com")
    assert tls_options(other, biloxi, "biloxi.example.com")[1] == "biloxi.example.com"


def test_client_certificate_required(proxy_factory, pki):
    port = free_port()
    route = """route {
    if (proto!=tls) { sl_send_reply("200", "OK"); exit; }
    if (is_peer_verified()) {
        xlog("L_INFO", "verified peer $tls_peer_subject_cn over $tls_version\\n");
        sl_send_reply("200", "OK");
        exit;
    }
    sl_send_reply("403", "Not Verified");
}"""
    proxy = proxy_factory(children=2, extra=tls_settings(pki, port, 1, 1) + 'loadmodule "tlsops"\nloadmodule "xlog"\n',
                          route=route)
    assert tls_options(port, client_context(pki, cert="client.example.com")) == (200, "localhost")
    assert re.search(r"verified peer client\.example\.com over TLSv1\.[23]", proxy.log())
    with pytest.raises((ssl.SSLError, ConnectionError)):
        status, _ = tls_options(port, client_context(pki))
        assert status is None       # TLS 1.3 reports the refusal only when reading
        raise ConnectionError("refused after the handshake")


def test_a_refused_peer_is_logged_even_among_many_routine_closes(proxy_factory, pki):
    """Close reasons are logged at most once a second per kind: TLS refusals are a kind of their
    own, so a burst of broken TCP streams cannot hide them."""
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port, 1, 1))
    for _ in range(3):
        with socket.create_connection((LOOP, proxy.port), timeout=5) as broken:
            broken.sendall(b"INVITE sip:x SIP/2.0\r\nContent-Length: nope\r\n\r\n")
            wait_closed(broken, 5)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_options(port, client_context(pki, cert="impostor"))
    deadline = time.monotonic() + 5
    while "certificate verify failed" not in proxy.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "bad stream" in proxy.log() and "TLS handshake failed: certificate verify failed" in proxy.log()


def test_handshake_timeout(proxy_factory, pki):
    port = free_port()
    proxy = proxy_factory(children=2, extra=tls_settings(pki, port, more="tls_handshake_timeout=2"))
    silent = [socket.create_connection((LOOP, port), timeout=5) for _ in range(20)]
    try:
        assert tls_options(port, client_context(pki))[0] == 200       # the silent ones block nobody
        started = time.monotonic()
        for s in silent:
            closed, _ = wait_closed(s, 6.0)
            assert closed
        assert time.monotonic() - started < 6.0
    finally:
        for s in silent:
            s.close()
    assert "TLS handshake not done in 2 s" in proxy.log()


def test_udp_to_tls_forwarding_and_the_reply_back(proxy_factory, pki, tmp_path):
    """A UDP request whose R-URI is sips: goes out over TLS to a server we run; its reply comes back."""
    port, server_port = free_port(), free_port()
    proxy = proxy_factory(children=2, extra=tls_settings(pki, port))
    server_ctx, listener = tls_server(pki, "localhost", server_port)
    with udp_socket(5.0) as u:
        request = options_request(proxy.port, f"sips-{uuid.uuid4().hex}", "udp", u.getsockname()[1],
                                  ruri=f"sips:bob@{LOOP}:{server_port}")
        u.sendto(request, (LOOP, proxy.port))
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            got = read_tcp_message(tls, time.monotonic() + 5, bytearray())
            assert got is not None and got.startswith(b"OPTIONS sips:bob@")
            via = re.search(rb"Via: (SIP/2.0/TLS [^\r]+)\r\n", got).group(1)
            reply = got.split(b"\r\n\r\n")[0].replace(b"OPTIONS sips:bob@" + f"{LOOP}:{server_port}".encode()
                                                      + b" SIP/2.0", b"SIP/2.0 200 OK", 1) + b"\r\n\r\n"
            assert via in reply
            tls.sendall(reply)
            data, _ = u.recvfrom(65536)
            assert status_of(data) == 200
    listener.close()


def test_untrusted_server_gets_the_request_answered_477(proxy_factory, pki):
    port, server_port = free_port(), free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port))
    server_ctx, listener = tls_server(pki, "impostor", server_port)
    with udp_socket(5.0) as u:
        send_sips(proxy, u, server_port, f"evil-{uuid.uuid4().hex}")
        accept_request(server_ctx, listener)        # the proxy refuses our certificate
        data, _ = u.recvfrom(65536)
        assert status_of(data) == 477
    listener.close()


def test_every_request_waiting_for_a_failed_connection_is_answered_477(proxy_factory, pki):
    """Requests sent while the connection is still being set up, by the worker that opened it or
    handed to it by another, all hear 477 when the handshake then fails. Our server is accepted
    from only once every request has been sent, so they all wait on a connection; it then takes
    every connection until the last answer (a worker that learns of a request after the first
    connection failed opens another, which must fail too, not wait unaccepted)."""
    port, server_port = free_port(), free_port()
    proxy = proxy_factory(children=2, extra=tls_settings(pki, port))
    server_ctx, listener = tls_server(pki, "impostor", server_port)
    calls = [f"waiting-{n}-{uuid.uuid4().hex}" for n in range(6)]
    done = threading.Event()

    def refuse_every_connection():
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                conn = listener.accept()[0]
            except socket.timeout:
                continue
            conn.settimeout(10)
            try:
                server_ctx.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()            # the proxy refuses our certificate

    with udp_socket(10.0) as u:
        for call_id in calls:
            send_sips(proxy, u, server_port, call_id)
        server = threading.Thread(target=refuse_every_connection, daemon=True)
        server.start()
        answered = {}
        try:
            for _ in calls:
                data, _ = u.recvfrom(65536)
                answered[re.search(rb"Call-ID: (\S+)", data).group(1).decode()] = status_of(data)
        finally:
            done.set()
            server.join(15)
    listener.close()
    assert answered == dict.fromkeys(calls, 477)


def test_a_server_that_hangs_up_before_the_handshake_is_named_in_the_477s_log(proxy_factory, pki):
    port, server_port = free_port(), free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port))
    with socket.create_server((LOOP, server_port)) as listener, udp_socket(5.0) as u:
        listener.settimeout(5)
        send_sips(proxy, u, server_port, f"hangup-{uuid.uuid4().hex}")
        listener.accept()[0].close()
        assert status_of(u.recv(65536)) == 477
    deadline = time.monotonic() + 3       # the line is written after the 477 is sent
    # the hang-up shows as an end of stream, or (the ClientHello met the reset first) a failed write
    said = re.compile(r"\(to tls:127\.0\.0\.1:\d+: (closed by the peer before it was up|write failed)\); answered 477")
    while not said.search(proxy.log()):
        assert time.monotonic() < deadline, proxy.tail()
        time.sleep(0.05)


def call_owned_by(worker: int, children: int) -> str:
    return next(c for c in (f"own-{uuid.uuid4().hex}" for _ in range(1000)) if owner(c, children) == worker)


@pytest.mark.parametrize("children", [1, 2], ids=["same-worker", "handed-off"])
def test_a_connection_is_reused_only_for_hosts_its_certificate_names(proxy_factory, pki, dns_zone, children):
    """RFC 5922: a connection to biloxi.example.com (whose certificate names only that) does not
    carry a request for the same address written as 127.0.0.1, in the worker that owns it or
    handed to it by another."""
    port, server_port = free_port(), free_port()
    zone = dns_zone({("biloxi.example.com", "A"): [LOOP]})
    route = """route {
    if (uri==myself && $rU==$null) { sl_send_reply("200", "OK"); exit; }
    if (!forward()) { sl_reply_error(); }
}"""
    proxy = proxy_factory(children=children, route=route,
                          extra=tls_settings(pki, port, more=f"dns_server={LOOP}:{zone.port}\ntls_verify_server=1\n"))
    server_ctx, listener = tls_server(pki, "biloxi.example.com", server_port)
    with listener, udp_socket(5.0) as u:
        send_sips(proxy, u, server_port, call_owned_by(1, children), host="biloxi.example.com")
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            assert read_tcp_message(tls, time.monotonic() + 5, bytearray()).startswith(b"OPTIONS sips:bob@biloxi")
            time.sleep(0.2)     # the supervisor learns of the connection a message after its worker opened it
            send_sips(proxy, u, server_port, call_owned_by(children, children))
            assert status_of(u.recv(65536)) == 477
            tls.settimeout(0.5)
            with pytest.raises(socket.timeout):
                tls.recv(65536)
    assert "does not name" in proxy.log()


@pytest.mark.parametrize("cert, names_both", [("localhost", True), ("biloxi.example.com", False)])
def test_requests_queued_during_the_handshake_are_checked_against_the_certificate(proxy_factory, pki, dns_zone,
                                                                                 cert, names_both):
    """A request for 127.0.0.1 that finds the connection opened for a name still in its
    handshake waits for the certificate: sent when it names 127.0.0.1 too (the localhost
    certificate does), answered 477 when it does not (biloxi's)."""
    port, server_port = free_port(), free_port()
    name = "localhost" if names_both else "biloxi.example.com"
    zone = dns_zone({(name, "A"): [LOOP]})
    route = """route {
    if (uri==myself && $rU==$null) { sl_send_reply("200", "OK"); exit; }
    if (!forward()) { sl_reply_error(); }
}"""
    proxy = proxy_factory(children=1, route=route,
                          extra=tls_settings(pki, port, more=f"dns_server={LOOP}:{zone.port}\ntls_verify_server=1\n"))
    server_ctx, listener = tls_server(pki, cert, server_port)
    with listener, udp_socket(5.0) as u:
        send_sips(proxy, u, server_port, f"named-{uuid.uuid4().hex}", host=name)
        conn, _ = listener.accept()     # connected; the handshake waits for us
        send_sips(proxy, u, server_port, f"literal-{uuid.uuid4().hex}")
        # one worker takes its messages in order: once this is answered, both requests wait
        assert udp_options(proxy.port, timeout=2.0) == 200
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            buf, deadline = bytearray(), time.monotonic() + 5
            assert read_tcp_message(tls, deadline, buf).startswith(f"OPTIONS sips:bob@{name}".encode())
            if names_both:
                assert read_tcp_message(tls, deadline, buf).startswith(b"OPTIONS sips:bob@127.0.0.1")
            else:
                assert status_of(u.recv(65536)) == 477
                tls.settimeout(0.5)
                with pytest.raises(socket.timeout):
                    tls.recv(65536)
    assert ("does not name" in proxy.log()) is not names_both


def test_wrong_name_server_never_sees_the_request_and_it_is_answered_477(proxy_factory, pki):
    """RFC 5922: a server whose certificate verifies but names another host is refused before
    anything is sent to it, and the sender hears 477 instead of waiting."""
    port, server_port = free_port(), free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port))
    server_ctx, listener = tls_server(pki, "biloxi.example.com", server_port)
    with udp_socket(5.0) as u:
        send_sips(proxy, u, server_port, f"wrongname-{uuid.uuid4().hex}")
        conn, _ = listener.accept()
        received = b""
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                while chunk := tls.recv(65536):
                    received += chunk
        except (ssl.SSLError, OSError):
            pass
        assert received == b""
        data, _ = u.recvfrom(65536)
        assert status_of(data) == 477
    listener.close()
    assert "does not match 127.0.0.1 (RFC 5922)" in proxy.log()


def test_without_a_ca_list_the_client_side_trusts_the_system_cas(proxy_factory, pki, monkeypatch):
    """As the shipped config does (no tls_ca_list): outgoing TLS verifies against the system's
    CAs, here made the test CA with OpenSSL's SSL_CERT_FILE; a server it does not sign gets 477."""
    from pyproxy.assembly.loader import load_config
    from ._harness import ROOT
    shipped = load_config(str(ROOT / "etc" / "pyproxy.cfg")).settings
    assert shipped.tls_verify_server and not shipped.tls_ca_list and not shipped.tls_ca_path
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca" / "cacert.pem"))
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port).replace(
        f'tls_ca_list="{pki}/ca/cacert.pem"\n', "") + "tls_verify_server=1\n")
    for cert, delivered in (("localhost", True), ("impostor", False)):
        server_port = free_port()
        server_ctx, listener = tls_server(pki, cert, server_port)
        with udp_socket(5.0) as u:
            send_sips(proxy, u, server_port, f"system-{uuid.uuid4().hex}")
            got = accept_request(server_ctx, listener)
            assert (got is not None and got.startswith(b"OPTIONS sips:bob@")) is delivered, cert
            if not delivered:
                assert status_of(u.recvfrom(65536)[0]) == 477
        listener.close()


def test_sni_picks_the_server_domain(proxy_factory, pki):
    port = free_port()
    extra = tls_settings(pki, port, more=(
        f"tls_server_domain[{LOOP}:{port}] {{\n  tls_server_name=\"biloxi.example.com\"\n"
        f'  tls_certificate="{pki}/biloxi.example.com/cert.pem"\n  tls_private_key="{pki}/biloxi.example.com/privkey.pem"\n}}\n'))
    proxy_factory(children=1, extra=extra)
    biloxi = client_context(pki, server_name="BILOXI.example.com")
    assert tls_options(port, biloxi, "BILOXI.example.com")[1] == "biloxi.example.com"
    assert tls_options(port, client_context(pki))[1] == "localhost"             # no SNI: the socket's


def resumed_options(port, ctx, server_name, session=None):
    """OPTIONS over a new TLS connection offering ``session``: (status or None, the session to
    offer next time, whether this one was resumed)."""
    raw = socket.create_connection((LOOP, port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=server_name, session=session) as s:
        s.sendall(options_request(port, f"tls-{uuid.uuid4().hex}", "tls", s.getsockname()[1]))
        reply = read_tcp_message(s, time.monotonic() + 5, bytearray())
        return (status_of(reply) if reply else None), s.session, s.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_session_of_one_sni_domain_does_not_open_another(proxy_factory, pki, version):
    """OpenSSL resumes on the socket's first domain, before SNI moves the connection: a session
    made without a certificate must not let its client into a domain that requires one."""
    port = free_port()
    extra = tls_settings(pki, port, more=(
        f"tls_server_domain[{LOOP}:{port}] {{\n  tls_server_name=\"biloxi.example.com\"\n"
        f'  tls_certificate="{pki}/biloxi.example.com/cert.pem"\n'
        f'  tls_private_key="{pki}/biloxi.example.com/privkey.pem"\n'
        "  tls_verify_client=1\n  tls_require_client_certificate=1\n}\n"))
    proxy = proxy_factory(children=1, extra=extra)
    anonymous = client_context(pki)
    anonymous.maximum_version = version
    status, session, _ = resumed_options(port, anonymous, "other.example")
    assert status == 200
    try:
        status = resumed_options(port, anonymous, "biloxi.example.com", session)[0]
    except (ssl.SSLError, ConnectionError):
        status = None       # refused in the handshake (TLS 1.3 reports it when reading)
    assert status is None
    assert "TLS sessions are not resumed there" in proxy.log()
    with_cert = client_context(pki, cert="client.example.com")
    with_cert.maximum_version = version
    status, session, _ = resumed_options(port, with_cert, "biloxi.example.com")
    assert status == 200 and resumed_options(port, with_cert, "biloxi.example.com", session)[::2] == (200, False)


def test_sessions_are_resumed_where_sni_domains_check_clients_alike(proxy_factory, pki):
    port = free_port()
    extra = tls_settings(pki, port, more=(
        f"tls_server_domain[{LOOP}:{port}] {{\n  tls_server_name=\"biloxi.example.com\"\n"
        f'  tls_certificate="{pki}/biloxi.example.com/cert.pem"\n'
        f'  tls_private_key="{pki}/biloxi.example.com/privkey.pem"\n}}\n'))
    proxy_factory(children=1, extra=extra)
    ctx = client_context(pki, server_name="biloxi.example.com")
    _, session, _ = resumed_options(port, ctx, "biloxi.example.com")
    assert resumed_options(port, ctx, "biloxi.example.com", session)[::2] == (200, True)


@pytest.mark.parametrize("cert,via_host,reused", [
    (None, LOOP, False),                                    # no certificate: no alias
    ("client.example.com", "atlanta.example.com", False),   # a certificate of another host
    ("client.example.com", "client.example.com", True),
])
def test_an_alias_over_tls_needs_a_certificate_naming_the_via_host(proxy_factory, pki, cert, via_host, reused):
    """RFC 5923: else anybody at the address of a TLS server could take the requests meant for it."""
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port, verify_client=1))
    advertised = free_port()         # nothing listens there: only the alias reaches it
    raw = socket.create_connection((LOOP, port), timeout=5)
    with client_context(pki, cert=cert).wrap_socket(raw) as tls, udp_socket(5.0) as u:
        hello = options_request(port, f"alias-{uuid.uuid4().hex}", "tls", advertised).replace(
            f"TLS {LOOP}:{advertised};".encode(), f"TLS {via_host}:{advertised};".encode()).replace(
            b";rport\r\n", b";rport;alias\r\n")
        tls.sendall(hello)
        assert status_of(read_tcp_message(tls, time.monotonic() + 5, bytearray())) == 200
        time.sleep(0.3)     # the supervisor tells every worker (one here)
        u.sendto(options_request(proxy.port, f"to-alias-{uuid.uuid4().hex}", "udp", u.getsockname()[1],
                                 ruri=f"sip:bob@{LOOP}:{advertised};transport=tls"), (LOOP, proxy.port))
        if reused:
            forwarded = read_tcp_message(tls, time.monotonic() + 5, bytearray())
            assert forwarded.startswith(f"OPTIONS sip:bob@{LOOP}:{advertised}".encode())
        else:
            assert status_of(u.recv(65536)) == 477
            assert "ignoring ;alias" in proxy.log()


def test_a_client_that_never_reads_its_replies_is_not_read_either(proxy_factory, pki):
    """Pipelined requests whose replies are never read: once 256 KiB of replies wait, the worker
    reads no more of that connection (its queue stays bounded) until the send timeout closes it."""
    port = free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port, more="tls_send_timeout=2\n"))
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # before connect: an honest window
    raw.settimeout(5)
    raw.connect((LOOP, port))
    batch = b"".join(options_request(port, f"noread-{i}", "tls", 5999) for i in range(200))
    with client_context(pki).wrap_socket(raw) as tls:
        tls.settimeout(0.5)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:      # until the proxy stops reading (our sends block)
            try:
                tls.sendall(batch)
            except (socket.timeout, OSError):
                break
        deadline = time.monotonic() + 10
        while "queued bytes" not in proxy.log() and time.monotonic() < deadline:
            time.sleep(0.2)
    dropped = re.search(r"(\d+) queued bytes to 127\.0\.0\.1:\d+ dropped", proxy.log())
    assert dropped and int(dropped.group(1)) < 1024 * 1024, proxy.tail()
    assert udp_options(proxy.port) == 200      # the worker serves on


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_request_that_comes_with_close_notify_is_answered(proxy_factory, pki, version):
    """The request and the client's close_notify in one segment: the request is not lost."""
    port = free_port()
    proxy_factory(children=1, extra=tls_settings(pki, port))
    ctx = client_context(pki)
    ctx.maximum_version = version
    sock, tls, incoming, outgoing = _tls_connection(port, ctx)
    with sock:
        tls.write(options_request(port, f"cn-{uuid.uuid4().hex}", "tls", 5999))
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.unwrap()
        sock.sendall(outgoing.read())       # the request, then close_notify
        assert status_of(_tls_reply(sock, tls, incoming)) == 200


def _tls_connection(port, ctx):
    """(socket, SSLObject, its two BIOs) of a new connection, its handshake done."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing)
    sock = socket.create_connection((LOOP, port), timeout=10)
    while True:
        try:
            tls.do_handshake()
            return sock, tls, incoming, outgoing
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))


def _tls_reply(sock, tls, incoming) -> bytes:
    reply = b""
    while status_of(reply) is None and (data := sock.recv(65536)):
        incoming.write(data)
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            reply += tls.read(65536)
    return reply


def _tls_exchange(port, ctx):
    """(socket, SSLObject, its two BIOs) after one OPTIONS and its 200 over a new connection."""
    sock, tls, incoming, outgoing = _tls_connection(port, ctx)
    tls.write(options_request(port, f"cl-{uuid.uuid4().hex}", "tls", 5999))
    sock.sendall(outgoing.read())
    assert status_of(_tls_reply(sock, tls, incoming)) == 200
    return sock, tls, incoming, outgoing


def test_a_close_notify_is_answered_and_a_bare_close_is_not(proxy_factory, pki):
    """A peer's close_notify gets ours back (RFC 8446 6.1); a peer that ends the stream without
    one gets no alert after its FIN: nobody would read it, and it would only draw a reset."""
    port = free_port()
    proxy_factory(children=1, extra=tls_settings(pki, port))
    ctx = client_context(pki)
    sock, tls, incoming, outgoing = _tls_exchange(port, ctx)
    with sock:
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.unwrap()
        sock.sendall(outgoing.read())
        while data := sock.recv(65536):
            incoming.write(data)
        tls.unwrap()        # (raises unless the proxy's close_notify came)
    sock, tls, incoming, outgoing = _tls_exchange(port, ctx)
    with sock:
        sock.shutdown(socket.SHUT_WR)       # a FIN, no close_notify
        after = b""
        while data := sock.recv(65536):
            after += data
    assert after == b"", f"{len(after)} bytes after a bare close"


def start_and_fail(tmp_path, text, flags=("-D", "-E")):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    return subprocess.run([sys.executable, "-m", "pyproxy", "-f", str(cfg), *flags], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("flags", [("-D", "-E"), ("-c",)], ids=["start", "check"])
def test_startup_refuses_bad_key_files(pki, tmp_path, flags):
    """pyproxy -c reports what would stop the start."""
    port = free_port()
    base = (f"listen=udp:{LOOP}:{port}\ndisable_tls=no\nlisten=tls:{LOOP}:{port}\n"
            "tls_verify_client=0\n")
    r = start_and_fail(tmp_path, base + f'tls_certificate="{tmp_path}/missing.pem"\n'
                                        f'tls_private_key="{pki}/localhost/privkey.pem"\n', flags)
    assert r.returncode == 1 and f"{tmp_path}/missing.pem" in r.stderr and "default server domain" in r.stderr
    loose = tmp_path / "loose.pem"
    loose.write_bytes((pki / "localhost" / "privkey.pem").read_bytes())
    loose.chmod(0o644)
    r = start_and_fail(tmp_path, base + f'tls_certificate="{pki}/localhost/cert.pem"\ntls_private_key="{loose}"\n',
                       flags)
    assert r.returncode == 1 and str(loose) in r.stderr, r.stderr
    r = start_and_fail(tmp_path, base + f'tls_certificate="{pki}/localhost/cert.pem"\n'
                                        f'tls_private_key="{pki}/biloxi.example.com/privkey.pem"\n', flags)
    assert r.returncode == 1 and "privkey.pem" in r.stderr, r.stderr


def test_a_certificate_error_shows_before_a_port_in_use(tmp_path):
    """The config's own mistakes first, each line stamped and naming the file: an operator who
    frees the port should not meet the missing certificate only then."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOOP, 0))
        port = taken.getsockname()[1]
        r = start_and_fail(tmp_path, f"listen=udp:{LOOP}:{port}\ndisable_tls=no\nlisten=tls:{LOOP}:{port}\n"
                                     f'tls_certificate="{tmp_path}/missing.pem"\n'
                                     f'tls_private_key="{tmp_path}/missing.key"\n')
    assert r.returncode == 1 and "Address already in use" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if "missing.pem" in line]
    assert len(errors) >= 2 and all(" CRITICAL: " in line and f"{tmp_path}/bad.cfg: TLS: " in line
                                    for line in errors), r.stderr


def test_a_tls_domain_blocks_file_error_names_its_position(pki, tmp_path):
    port = free_port()
    text = (f"listen=udp:{LOOP}:{port}\n" + tls_settings(pki, port) +
            f"tls_server_domain[{LOOP}:{port}] {{\n  tls_certificate=\"{pki}/localhost/cert.pem\"\n"
            f'  tls_private_key="{pki}/biloxi.example.com/privkey.pem"\n}}\n')
    for flags in (("-c",), ("-D", "-E")):
        r = start_and_fail(tmp_path, text, flags)
        line = text[:text.index("tls_server_domain[")].count("\n") + 1
        where = f"bad.cfg:{line}:1: tls_server_domain[{LOOP}:{port}]: tls_private_key"
        assert r.returncode == 1 and where in r.stderr, r.stderr


def test_autogenerate_makes_a_certificate_once(proxy_factory, tmp_path):
    port = free_port()
    extra = (f"disable_tls=no\nlisten=tls:{LOOP}:{port}\ntls_autogenerate=yes\n"
             'tls_certificate="tls/cert.pem"\ntls_private_key="tls/privkey.pem"\ntls_ca_list="tls/calist.pem"\n'
             "tls_verify_client=0\n")
    proxy = proxy_factory(children=1, extra=extra)
    folder = proxy.log_path.parent
    assert (folder / "tls" / "cert.pem").is_file() and stat_mode(folder / "tls" / "privkey.pem") == 0o600
    assert "tls_autogenerate" in proxy.log() and str(folder / "tls" / "cert.pem") in proxy.log()
    ctx = ssl.create_default_context(cafile=str(folder / "tls" / "calist.pem"))
    assert tls_options(port, ctx, "localhost")[0] == 200


def stat_mode(path):
    import os
    import stat
    return stat.S_IMODE(os.stat(path).st_mode)


def test_send_timeout_closes_a_peer_that_stops_reading(proxy_factory, pki):
    """Requests forwarded over TLS to a server that accepts but never reads: after tls_send_timeout
    the connection is closed and what was queued is dropped, logged."""
    port, server_port = free_port(), free_port()
    proxy = proxy_factory(children=1, extra=tls_settings(pki, port, more="tls_send_timeout=2\n"
                                                                         "tls_verify_server=0\n"))
    server_ctx, listener = tls_server(pki, "localhost", server_port)
    body = "x" * 60000
    with udp_socket(5.0) as u:
        first = True
        for i in range(120):       # ~7 MB: more than the kernel buffers hold
            req = options_request(proxy.port, f"big-{i}", "udp", u.getsockname()[1],
                                  ruri=f"sips:bob@{LOOP}:{server_port}").decode()
            req = req.replace("Content-Length: 0\r\n\r\n", f"Content-Length: {len(body)}\r\n\r\n{body}")
            u.sendto(req.encode(), (LOOP, proxy.port))
            if first:
                conn, _ = listener.accept()
                tls = server_ctx.wrap_socket(conn, server_side=True)    # handshake, then never read
                first = False
            time.sleep(0.005)
    deadline = time.monotonic() + 10
    while "stopped reading" not in proxy.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "peer stopped reading for 2 s" in proxy.log()
    assert "queued bytes" in proxy.log() and "dropped" in proxy.log()
    tls.close()
    listener.close()
