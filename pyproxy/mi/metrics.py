"""Prometheus metrics (``metrics_listen=``), served by the mi process: what it can see, written in
Prometheus's text format 0.0.4, and the little HTTP that hands the text out on ``GET /metrics``.

The two halves know nothing of each other. ``Exposition`` gathers and writes the text:

- every shared-memory statistic of every process (what ``get_statistics`` shows) with its
  OpenSER group (``core``, ``tm``, ``tls``) and process as labels: ``pyproxy_<name>_total``, or
  the gauge ``pyproxy_<name>`` for an in-use value; the TLS handshake failures are one family,
  ``pyproxy_tls_handshakes_failed_total``, with a ``reason`` label;
- every process's resident memory (as ``ps`` shows it) and when pyproxy started;
- the established TLS connections by domain and direction, asked of the workers as ``tls_list``
  asks them: when they do not answer, that family is left out and the reason logged, and the
  rest is served all the same;
- each TLS domain's certificate's notAfter, read from its file at every scrape (what the next
  ``tls_reload`` loads), so that an expiry can be alerted on before it happens.

``MetricsServer`` answers one request per connection (HTTP/1.0 or 1.1, ``Connection: close``). The
mi process does one thing at a time, so no client may hold it: sockets are non-blocking, a
request head is at most ``HEAD_LIMIT`` bytes, a client has ``CLIENT_TIMEOUT`` seconds for the
whole exchange, and ``MAX_CLIENTS`` are served at once.
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from dataclasses import dataclass, field

from cryptography import x509

from ..config.values import config_path
from ..kernel.logs import log
from ..kernel.loop import accept_client
from ..kernel.shm import GAUGES
from ..tls.domains import DomainTable, TLSConfigError
from .commands import MIError, processes

GAUGE_NAMES = {g.name.lower() for g in GAUGES}

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HEAD_LIMIT = 8192           # bytes of a request's line and headers
CLIENT_TIMEOUT = 10.0       # seconds a client has to send its request and read the answer
MAX_CLIENTS = 32

GROUPS = ("tm", "tls")      # a statistic named <group>_...; the others are "core"
FAILED = "tls_failed_"      # tls_failed_<reason>: one family, the reason a label
HELP = {
    "requests_in": "SIP requests received",
    "replies_in": "SIP replies received",
    "requests_out": "SIP requests sent",
    "replies_out": "SIP replies relayed statelessly (the ones tm relays count in tm_relayed_replies)",
    "local_replies": "SIP replies sent on a request's behalf: pyproxy's own and those tm relays "
                     "(tm_local_replies and tm_relayed_replies tell them apart)",
    "bad_messages": "messages that did not parse or were too large",
    "dropped": "messages lost: unanswerable bad ones, failed replies, lost hand-offs, internal errors",
    "handoffs_out": "messages handed to the worker that owns their call or connection",
    "handoffs_in": "messages handed over by another worker",
    "tcp_accepted": "TCP and TLS connections accepted",
    "tcp_closed": "TCP and TLS connections closed",
    "send_errors": "messages that could not be sent",
    "tm_transactions": "server transactions made (OpenSER's tm UAS_transactions)",
    "tm_inuse": "server transactions alive now (tm inuse_transactions)",
    "tm_branches": "client transactions made (tm UAC_transactions)",
    "tm_2xx": "transactions ended with a 2xx",
    "tm_3xx": "transactions ended with a 3xx",
    "tm_4xx": "transactions ended with a 4xx",
    "tm_5xx": "transactions ended with a 5xx",
    "tm_6xx": "transactions ended with a 6xx",
    "tm_replies_in": "replies that found their transaction (tm received_replies)",
    "tm_relayed_replies": "replies relayed by tm",
    "tm_local_replies": "final replies made by tm (t_reply, timeouts, errors)",
    "tls_handshakes": "TLS handshakes done that passed pyproxy's checks of the peer",
    "tls_handshakes_failed": "TLS handshakes that failed, by reason: verify (the peer's certificate), "
                             "protocol (another OpenSSL error), timeout (tls_handshake_timeout), other "
                             "(the connection closed first)",
}


# --- the text -----------------------------------------------------------------------------------

@dataclass
class Family:
    name: str
    kind: str                   # "counter" or "gauge"
    help: str
    samples: list[tuple[dict, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def render(families: list[Family]) -> str:
    lines = []
    for f in families:
        lines += [f"# HELP {f.name} {_escape(f.help, label=False)}", f"# TYPE {f.name} {f.kind}"]
        for labels, value in f.samples:
            text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{f.name}{{{text}}} {value!r}" if text else f"{f.name} {value!r}")
    return "\n".join(lines) + "\n"


def _escape(text: str, label: bool = True) -> str:
    """Backslash and line feed escaped (and a label value's double quote), as the format says."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if label else text


def statistics(stats: dict[str, dict[str, int]]) -> list[Family]:
    """``get_statistics`` (process -> name -> value) as families, one sample per process."""
    families: dict[str, Family] = {}
    for process, counters in stats.items():
        for name, value in counters.items():
            prefix = name.split("_", 1)[0]
            labels = {"group": prefix if prefix in GROUPS else "core", "process": process}
            family = name
            if name.startswith(FAILED):
                family, labels["reason"] = "tls_handshakes_failed", name[len(FAILED):]
            gauge = name in GAUGE_NAMES
            metric = f"pyproxy_{family}" if gauge else f"pyproxy_{family}_total"
            if metric not in families:
                families[metric] = Family(metric, "gauge" if gauge else "counter",
                                          HELP.get(family, f"the get_statistics value {family}"))
            families[metric].add(value, **labels)
    return list(families.values())


def resident_memory(master_pid: int) -> Family:
    family = Family("pyproxy_process_resident_memory_bytes", "gauge", "resident memory of each pyproxy process")
    for pid, role, rss in processes(master_pid):
        family.add(rss, process=role, pid=str(pid))
    return family


def tls_connections(answers: list) -> Family:
    """The workers' ``tls_list`` answers counted by domain and direction (established ones)."""
    family = Family("pyproxy_tls_connections", "gauge",
                    "TLS connections whose handshake is done, by domain and direction")
    counts = Counter((c.get("domain") or "", c.get("direction") or "") for answer in answers for c in answer
                     if c.get("established"))
    for (domain, direction), n in sorted(counts.items()):
        family.add(n, domain=domain, direction=direction)
    return family


def not_after(files: list[tuple[str, str]]) -> Family:
    """(domain label, certificate file) -> the first certificate's notAfter, in seconds."""
    family = Family("pyproxy_tls_certificate_not_after_seconds", "gauge",
                    "notAfter of each TLS domain's certificate (the first in its file), seconds since the epoch")
    for domain, path in files:
        try:
            with open(path, "rb") as f:
                cert = x509.load_pem_x509_certificates(f.read())[0]
        except FileNotFoundError:
            continue        # a client domain may go without a certificate of its own
        except (OSError, ValueError) as e:
            log.warning(f"metrics: {domain}: cannot read the certificate {path}: {getattr(e, 'strerror', None) or e}")
            continue
        family.add(int(cert.not_valid_after_utc.timestamp()), domain=domain, file=path)
    return family


class Exposition:
    """The whole text, gathered afresh at every scrape from the mi process's view."""

    def __init__(self, mi) -> None:
        self.mi = mi
        self.files: list[tuple[str, str]] | None = None     # the domains' certificate files

    def text(self) -> str:
        mi = self.mi
        families = statistics(mi.statistics())
        families.append(resident_memory(mi.master_pid))
        started = Family("pyproxy_start_time_seconds", "gauge", "when pyproxy started, seconds since the epoch")
        started.add(float(mi.started))
        families.append(started)
        if not mi.tls_disabled:
            families += self.tls_families()
        return render(families)

    def tls_families(self) -> list[Family]:
        out = []
        try:
            answers = self.mi.ask_workers("tls_list")
        except (MIError, OSError) as e:
            answers = [{"error": str(e)}]
        failed = [a["error"] for a in answers if isinstance(a, dict)]
        if failed:
            log.warning(f"metrics: TLS connections left out of this scrape: the workers: {'; '.join(failed)}")
        else:
            out.append(tls_connections(answers))
        files = self.certificate_files()
        if files is not None:
            out.append(not_after(files))
        return out

    def certificate_files(self) -> list[tuple[str, str]] | None:
        """Every domain's tls_certificate, with the domain's name as tls_list gives it: found once
        per mi process, which a reload replaces (the files themselves are read at every scrape)."""
        config = self.mi.config
        if self.files is None:
            try:
                table = DomainTable.build(config.settings, config.tls_domains, config.cfg_dir)
            except TLSConfigError as e:
                log.warning(f"metrics: certificate expiry left out of this scrape: {'; '.join(e.messages)}")
                return None
            self.files = list(dict.fromkeys((d.label, config_path(d.params["tls_certificate"], config.cfg_dir))
                                            for d in table.domains()))
        return self.files


# --- the HTTP -----------------------------------------------------------------------------------

# RFC 9112 3: request-line = method SP request-target SP HTTP-version (method = token, RFC 9110 9.1)
REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/1\.[01]")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error"}


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound by the master before it forks (OSError as bind() raises it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # a restart within TIME_WAIT
        sock.bind((host, port))
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _Client:
    __slots__ = ("sock", "head", "out", "timer")

    def __init__(self, sock: socket.socket, timer) -> None:
        self.sock, self.head, self.out, self.timer = sock, bytearray(), b"", timer


class MetricsServer:
    def __init__(self, listener: socket.socket, loop, text) -> None:
        self.listener = listener
        self.loop = loop
        self.text = text                    # () -> the exposition
        self.clients: dict[int, _Client] = {}
        loop.add_reader(listener.fileno(), self.accept)

    def accept(self) -> None:
        sock = accept_client(self.loop, self.listener, self.accept, "metrics_listen")
        if sock is None:
            return
        if len(self.clients) >= MAX_CLIENTS:
            sock.close()
            return
        sock.setblocking(False)
        fd = sock.fileno()
        self.clients[fd] = _Client(sock, self.loop.call_later(CLIENT_TIMEOUT, lambda: self.drop(fd)))
        self.loop.add_reader(fd, lambda: self.on_readable(fd))

    def on_readable(self, fd: int) -> None:
        client = self.clients[fd]
        try:
            data = client.sock.recv(HEAD_LIMIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(fd)
            return
        client.head += data
        end = re.search(rb"\r?\n\r?\n", client.head)
        if end is None and len(client.head) <= HEAD_LIMIT:
            return
        self.loop.add_reader(fd, None)      # one request per connection: nothing more is read
        status, body, extra = self.answer(bytes(client.head[:end.start()])) if end else (431, b"", "")
        head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode()
        client.out = head + (b"" if client.head.startswith(b"HEAD ") else body)
        self.write(fd)

    def answer(self, head: bytes) -> tuple[int, bytes, str]:
        """(status, body, extra header lines) for a request's head."""
        m = REQUEST_LINE.fullmatch(head.split(b"\n", 1)[0].rstrip(b"\r"))
        if m is None:
            return 400, b"bad request\n", ""
        method, target = m.groups()
        if target.split(b"?", 1)[0] != b"/metrics":
            return 404, b"not found: the metrics are at /metrics\n", ""
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed: GET /metrics\n", "Allow: GET, HEAD\r\n"
        try:
            return 200, self.text().encode(), ""
        except Exception:       # a bug answers as an error, not as silence
            log.exception("metrics: building the exposition failed")
            return 500, b"internal error (see the log)\n", ""

    def write(self, fd: int) -> None:
        client = self.clients.get(fd)
        if client is None:
            return
        try:
            client.out = client.out[client.sock.send(client.out):]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            client.out = b""
        if client.out:
            self.loop.set_writer(fd, lambda: self.write(fd))
        else:
            self.drop(fd)

    def drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is None:
            return
        client.timer.cancel()
        self.loop.remove(fd)
        client.sock.close()
