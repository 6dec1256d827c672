"""A small authoritative DNS server on 127.0.0.1 for tests: a dict of records in, answers out
(NXDOMAIN for unknown names), every question counted; ``silent`` makes it drop questions."""

from __future__ import annotations

import socket
import threading
from collections import Counter

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DNSServer:
    def __init__(self, records: dict[tuple[str, str], list[str]], ttl: int = 300):
        self.records = {(name.lower().rstrip("."), rdtype): values for (name, rdtype), values in records.items()}
        self.ttl = ttl
        self.silent = False
        self.servfail: set[str] = set()     # names answered SERVFAIL
        self.questions: Counter = Counter()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.running:
            try:
                data, client = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue        # not a DNS question (another test's packet on a reused port)
            question = query.question[0]
            name, rdtype = question.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(question.rdtype)
            self.questions[(name, rdtype)] += 1
            if self.silent:
                continue
            response = dns.message.make_response(query)
            values = self.records.get((name, rdtype))
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif values:
                response.answer.append(dns.rrset.from_text(name + ".", self.ttl, "IN", rdtype, *values))
            elif not any(n == name for n, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), client)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()
