"""Raw-socket SIP phones for the registrar and auth tests: a UDP or TCP endpoint that sends
REGISTERs and INVITEs and reads what the proxy sends it, with bounded waits."""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import time
import uuid

from ._harness import LOOP, read_tcp_message, status_of, udp_socket


class Phone:
    """A SIP endpoint on 127.0.0.1 over UDP (its own socket) or TCP (one connection)."""

    def __init__(self, proxy_port: int, proto: str = "udp", user: str = "alice", domain: str = LOOP,
                 proxy_host: str = LOOP):
        self.proxy_port, self.proto, self.user, self.domain = proxy_port, proto, user, domain
        self.proxy_host = proxy_host
        if proto == "udp":
            self.sock = udp_socket(5.0)
        else:
            self.sock = socket.create_connection((proxy_host, proxy_port), 5.0)
            if proto == "tls":      # a phone that trusts the proxy's certificate blindly, as many do
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                self.sock = context.wrap_socket(self.sock)
        self.port = self.sock.getsockname()[1]
        self.buf = bytearray()
        self.call_id = f"{uuid.uuid4().hex[:16]}@{LOOP}"
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    # -- sending ------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.proto == "udp":
            self.sock.sendto(data, (self.proxy_host, self.proxy_port))
        else:
            self.sock.sendall(data)

    def request(self, method: str, ruri: str, headers: str = "", to: str | None = None,
                call_id: str | None = None, body: str = "") -> bytes:
        self.cseq += 1
        return (f"{method} {ruri} SIP/2.0\r\n"
                f"Via: SIP/2.0/{self.proto.upper()} {LOOP}:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:{self.user}@{self.domain}>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"To: <{to or f'sip:{self.user}@{self.domain}'}>\r\n"
                f"Call-ID: {call_id or self.call_id}\r\n"
                f"CSeq: {self.cseq} {method}\r\n"
                f"{headers}"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def register(self, contact: str | None = "default", expires: int | None = None, headers: str = "",
                 to: str | None = None) -> bytes | None:
        """REGISTER (this phone's own Contact by default; None: a query) and its final reply."""
        if contact == "default":
            contact = f"<sip:{self.user}@{LOOP}:{self.port};transport={self.proto}>"
        extra = (f"Contact: {contact}\r\n" if contact else "") + \
                (f"Expires: {expires}\r\n" if expires is not None else "") + headers
        self.send(self.request("REGISTER", f"sip:{self.domain}", extra, to=to))
        return self.final()

    # -- receiving ----------------------------------------------------------------------------
    def receive(self, timeout: float = 5.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        if self.proto != "udp":
            return read_tcp_message(self.sock, deadline, self.buf)
        self.sock.settimeout(timeout)
        try:
            return self.sock.recvfrom(65535)[0]
        except TimeoutError:
            return None

    def final(self, timeout: float = 5.0) -> bytes | None:
        """The next final response (provisional ones skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is None:
                return None
            status = status_of(msg)
            if status is not None and status >= 200:
                return msg
        return None

    def expect_request(self, method: str, timeout: float = 5.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is None:
                return None
            if msg.startswith(method.encode() + b" "):
                return msg
        return None

    def answer(self, request: bytes, status: int, reason: str) -> None:
        """Reply to a request the proxy sent us (Vias, From, To, Call-ID, CSeq copied)."""
        head = request.split(b"\r\n\r\n", 1)[0].decode()
        keep = [line for line in head.split("\r\n")[1:]
                if re.match(r"(?i)(via|from|to|call-id|cseq)\s*:", line)]
        keep = [line + ";tag=callee" if re.match(r"(?i)to\s*:", line) else line for line in keep]
        self.send((f"SIP/2.0 {status} {reason}\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode())


def contacts(reply: bytes) -> list[bytes]:
    """The Contact values of a reply, one per header line or comma-separated in one (RFC 3261
    7.3.1; a comma inside <...> or quotes is not a separator)."""
    lines = re.findall(rb"(?im)^(?:contact|m)\s*:\s*(.+?)\r?$", reply.split(b"\r\n\r\n")[0])
    return [value.strip() for line in lines for value in re.findall(rb'(?:[^,"<]|"[^"]*"|<[^>]*>)+', line)]


def header(msg: bytes, name: str) -> str | None:
    m = re.search(rf"(?im)^{name}\s*:\s*(.+?)\r?$".encode(), msg.split(b"\r\n\r\n")[0])
    return m.group(1).decode() if m else None


def first_line(msg: bytes) -> str:
    return msg.split(b"\r\n", 1)[0].decode()


def challenges(reply: bytes, header_name: str = "WWW-Authenticate") -> list[dict]:
    """The digest challenges of a 401/407, as dicts (realm, nonce, algorithm, qop, stale)."""
    out = []
    for value in re.findall(rf"(?im)^{header_name}\s*:\s*Digest\s+(.+?)\r?$".encode(), reply.split(b"\r\n\r\n")[0]):
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', value.decode()))
        out.append({k.lower(): v for k, v in params.items()})
    return out


def credentials(challenge: dict, method: str, uri: str, user: str, password: str, nc: int = 1,
                header: str = "Authorization", algorithm: str | None = None) -> str:
    """The header line answering ``challenge`` (RFC 2617 / RFC 7616)."""
    algorithm = algorithm or challenge.get("algorithm", "MD5")
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = h(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = h(f"{method}:{uri}".encode()).hexdigest()
    extra = ""
    if challenge.get("qop"):
        cnonce = "0a4f113b"
        response = h(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        extra = f', qop=auth, nc={nc:08x}, cnonce="{cnonce}"'
    else:
        response = h(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (f'{header}: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}{extra}\r\n')
