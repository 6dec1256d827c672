"""Real handshakes for the tests: two pyOpenSSL ends over memory BIOs, or a server on a TCP port."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

from OpenSSL import SSL

from pyproxy.tls.context import _OPENSSL_VERSION
from pyproxy.config.tlsmethod import TLSVersion


@dataclass
class Handshake:
    server: SSL.Connection
    client: SSL.Connection
    error: Exception | None        # the first OpenSSL error of either end, None if both finished

    @property
    def ok(self) -> bool:
        return self.error is None


def handshake(server_ctx: SSL.Context, client_ctx: SSL.Context, sni: str | None = None) -> Handshake:
    server, client = SSL.Connection(server_ctx, None), SSL.Connection(client_ctx, None)
    server.set_accept_state()
    client.set_connect_state()
    if sni:
        client.set_tlsext_host_name(sni.encode())
    done = {server: False, client: False}
    error = None
    for _ in range(20):
        for me, peer in ((client, server), (server, client)):
            if not done[me]:
                try:
                    me.do_handshake()
                    done[me] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    error = error or e
            try:
                peer.bio_write(me.bio_read(1 << 16))
            except SSL.WantReadError:
                pass
        if error or all(done.values()):
            break
    if error is None and done[client]:
        # TLS 1.3: a client learns that the server refused its certificate only on its first read
        client.send(b"ping")
        server.bio_write(client.bio_read(1 << 16))
        try:
            server.recv(16)
        except SSL.Error as e:
            error = e
    return Handshake(server, client, error)


def peer_context(*, cert=None, ca: str | None = None, version: TLSVersion | None = None,
                 seclevel0: bool = False, ciphers: str | None = None) -> SSL.Context:
    """A plain pyOpenSSL end (not built by pyproxy): optional certificate, verifies only if ca is given."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    if version is not None:
        ctx.set_min_proto_version(_OPENSSL_VERSION[version])
        ctx.set_max_proto_version(_OPENSSL_VERSION[version])
    if seclevel0 or ciphers:
        ctx.set_cipher_list((ciphers or "DEFAULT:@SECLEVEL=0").encode())
    if cert is not None:
        ctx.use_certificate_file(cert.cert_path)
        ctx.use_privatekey_file(cert.key_path)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.set_verify(SSL.VERIFY_PEER)
    return ctx


class OneShotServer:
    """Accepts one TCP connection on 127.0.0.1 and runs a pyOpenSSL server handshake with ``ctx``."""

    def __init__(self, ctx: SSL.Context) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: SSL.Connection | None = None
        self.error: Exception | None = None
        self.data = b""
        self.thread = threading.Thread(target=self._run, args=(ctx,), daemon=True)
        self.thread.start()

    def _run(self, ctx: SSL.Context) -> None:
        self.listener.settimeout(10)
        try:
            sock, _ = self.listener.accept()
            sock.settimeout(None)         # pyOpenSSL wants a blocking socket (a timeout makes it non-blocking)
            self.conn = SSL.Connection(ctx, sock)
            self.conn.set_accept_state()
            self.conn.do_handshake()
            self.data = self.conn.recv(100)
            self.conn.sendall(b"pong")
            self.conn.shutdown()
        except (SSL.Error, OSError) as e:
            self.error = e
        finally:
            self.listener.close()

    def join(self) -> "OneShotServer":
        self.thread.join(15)
        return self
