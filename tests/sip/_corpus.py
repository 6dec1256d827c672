"""The RFC 4475 / RFC 5118 torture-message corpora, as wire bytes plus the manifest's verdict.

The corpus lives beside the repository (``../shared/conformance``) or wherever the environment
variable PYPROXY_CONFORMANCE points. If it is missing the suite must fail, not skip:
test_sip_corpus.test_corpus_is_present checks the counts.

RFC 5118 files use bare LF and some lack the empty line ending the header section; the harness
(never the parser) turns them into wire bytes: LF -> CRLF, close the header section, and set
Content-Length to the real body length.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

CONFORMANCE = Path(os.environ.get("PYPROXY_CONFORMANCE")
                   or Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance")


@dataclass(frozen=True)
class Case:
    suite: str          # "rfc4475" or "rfc5118"
    name: str           # file name
    verdict: str        # valid / invalid / either / unspecified
    action: str         # the manifest's "what an element should do"
    data: bytes         # wire bytes

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"

    @property
    def is_response(self) -> bool:
        return self.data.startswith(b"SIP/")

    @property
    def expected_status(self) -> int:
        """The status the manifest's action names for an invalid request (400 unless said)."""
        for status in (505, 501):
            if f"respond {status}" in self.action:
                return status
        return 400


def wire_bytes_5118(data: bytes) -> bytes:
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if b"\r\n\r\n" not in data:
        data = data.rstrip(b"\r\n") + b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    head = re.sub(rb"(?im)^(content-length|l)([ \t]*:[ \t]*)[0-9]+",
                  lambda m: m.group(1) + m.group(2) + str(len(body)).encode(), head)
    return head + b"\r\n\r\n" + body


def load(suite: str) -> list[Case]:
    folder = CONFORMANCE / suite
    manifest = folder / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    cases = []
    with manifest.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            verdict, _, action = row["verdict"].partition(";")
            data = (folder / row["file"]).read_bytes()
            if suite == "rfc5118":
                data = wire_bytes_5118(data)
            cases.append(Case(suite, row["file"], verdict.strip(), action.strip(), data))
    return cases


CASES = load("rfc4475") + load("rfc5118")
BY_NAME = {case.name: case for case in CASES}


def case_ids(cases):
    return [case.id for case in cases]
