"""Helpers shared by the certificate tests: `openssl` itself, and one real TLS handshake over
loopback with Python's ssl module, so that generated files are judged by the tools that read
them."""

import shutil
import socket
import ssl
import subprocess
import threading


OPENSSL = shutil.which("openssl") or "openssl"     # .ci/run installs it: a missing one fails the tests


def openssl(*args, check=True):
    """Run openssl; the CompletedProcess (text), stdout and stderr apart."""
    proc = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def handshake(cert, key, cafile, server_hostname, client_cert=None):
    """Serve one TLS connection on 127.0.0.1 with `cert`/`key` and connect to it trusting only
    `cafile` and checking `server_hostname`. With client_cert=(cert, key) the server requires and
    verifies a client certificate too. Returns the server's view of the peer's certificate (or
    None); raises the client's ssl error when the handshake fails."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    if client_cert:
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        server_ctx.load_verify_locations(cafile)
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    if client_cert:
        client_ctx.load_cert_chain(*client_cert)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        result = {}
        thread = threading.Thread(target=_serve_one, args=(listener, server_ctx, result))
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                    tls.sendall(b"ping")
                    assert tls.recv(4) == b"pong"
        finally:
            thread.join(10)
    assert not thread.is_alive()
    if "server_error" in result:
        raise result["server_error"]
    return result.get("peer")


def _serve_one(listener, ctx, result):
    try:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            result["peer"] = tls.getpeercert()
            if tls.recv(4) == b"ping":
                tls.sendall(b"pong")
    except (OSError, ssl.SSLError) as e:
        # The client's failure is the one the test asserts on; the server's is kept for the
        # cases where the client succeeded.
        result["server_error"] = e
