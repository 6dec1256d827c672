"""TLS over memory buffers, with no socket: ciphertext in, plaintext out, and the reverse.

The worker reads bytes from a TCP socket and feeds them in; whatever TLS wants sent (handshake
records, encrypted data, alerts) is taken out with ``outgoing()`` and written by the worker. The
``OpenSSL.SSL.Connection`` lives here for the connection's whole life, in the worker that owns
it. Each OpenSSL error is handled at one call site and becomes ``TLSError`` with a readable
reason.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 -- loaded before a worker drops privileges (SNI encodes with it)
import ipaddress

from OpenSSL import SSL

CHUNK = 16384


class TLSError(Exception):
    """The handshake or the session failed; the text says why (OpenSSL's words)."""


def describe(error: SSL.Error) -> str:
    parts = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else ():
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(item[2] or item[1] or item[0])
    return "; ".join(p for p in parts if p) or str(error) or type(error).__name__


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class TLSPipe:
    __slots__ = ("conn", "server_side", "handshake_done", "accepted", "closed", "pending", "later")

    def __init__(self, context: SSL.Context, server_side: bool, server_name: str | None = None):
        conn = SSL.Connection(context, None)
        if server_side:
            conn.set_accept_state()
        else:
            conn.set_connect_state()
            # RFC 6066: SNI carries host names only, never addresses
            if server_name and not _is_ip(server_name):
                try:
                    conn.set_tlsext_host_name(server_name.rstrip(".").encode("idna"))
                except UnicodeError:
                    pass        # not a host name (a client domain may be named anything): no SNI
        self.conn = conn
        self.server_side = server_side
        self.handshake_done = False
        self.accepted = False           # the worker's checks of the peer passed: application data flows
        self.closed = False             # the peer sent close_notify
        self.pending = bytearray()      # plaintext written before the peer was accepted
        self.later = bytearray()        # plaintext the worker encrypts at the end of its batch of events

    def start(self) -> None:
        """Client side: produce the ClientHello (take it with outgoing())."""
        self._handshake()

    def receive(self, ciphertext: bytes) -> bytes:
        """Feed bytes read from the socket; returns the application data they completed."""
        if ciphertext:
            self.conn.bio_write(ciphertext)
        if not self.handshake_done and not self._handshake():
            return b""
        out = []
        while True:
            try:
                out.append(self.conn.recv(CHUNK))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closed = True
                break
            except SSL.Error as e:
                raise TLSError(describe(e)) from None
        return b"".join(out)

    def _handshake(self) -> bool:
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.Error as e:
            raise TLSError(describe(e)) from None
        self.handshake_done = True
        return True

    def accept(self) -> None:
        """The handshake is done and the peer passed the worker's checks (a verified certificate
        may still name another host): encrypt what was written meanwhile, and all from now on."""
        self.accepted = True
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            self.send(data)

    def send(self, plaintext: bytes) -> None:
        """Encrypt application data (buffered until the peer is accepted)."""
        if not self.accepted:
            self.pending += plaintext
            return
        view = memoryview(plaintext)
        while view:
            try:
                sent = self.conn.send(view[:CHUNK])
            except SSL.Error as e:
                raise TLSError(describe(e)) from None
            view = view[sent:]

    def outgoing(self) -> bytes:
        """Everything TLS wants written to the socket now."""
        out = []
        while True:
            try:
                chunk = self.conn.bio_read(CHUNK)
            except SSL.WantReadError:
                break
            out.append(chunk)
            if len(chunk) < CHUNK:      # a memory BIO hands over all it holds, up to CHUNK
                break
        return b"".join(out)

    def shutdown(self) -> bytes:
        """A close_notify alert to send before closing the socket (best effort)."""
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass
        return self.outgoing()
