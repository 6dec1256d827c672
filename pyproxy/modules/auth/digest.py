"""HTTP digest for SIP, pure: credentials parsed from an Authorization header (RFC 2617 3.2.2,
RFC 3261 25.1), the expected response for MD5 and SHA-256 (RFC 7616, RFC 8760), and nonces any
worker can check.

A nonce is ``expiry (8 hex) + id (8 hex) + BLAKE2s-128 keyed with the secret (expiry + id) (32 hex)``:
signed with a secret made at start, so no worker has to remember the nonces it gave. (Keyed BLAKE2
is a MAC by design, RFC 7693 2.9, in one call: a third of HMAC-SHA-256's time, which every
challenge and every authorized request paid.) Each id owns a slot
of a table in shared memory that records the highest nonce-count seen with it: a qop=auth request
replaying a count is refused, whichever worker it reaches.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import re
import struct
from binascii import Error as BinasciiError, unhexlify
from typing import NamedTuple

from ...sip import accel

HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
RESPONSE_LENGTH = {"MD5": 32, "SHA-256": 64}
MAX_VALUE = 1024            # a parameter longer than this is an attack, not a phone
NONCE_LENGTH = 48
SLOTS = 1 << 18             # nonce-count slots: 2 MiB of shared memory
SLOT = struct.Struct("<II")     # (nonce id, highest nonce-count seen)

_PARAM = re.compile(r'[ \t]*([A-Za-z0-9_.!%*+`\'~-]+)[ \t]*=[ \t]*(?:"((?:[^"\\\r\n]|\\[^\r\n])*)"|([^ \t,"]*))[ \t]*')
_QUOTED_PAIR = re.compile(r"\\(.)")
REQUIRED_ORDER = ("username", "realm", "nonce", "uri", "response")
REQUIRED = frozenset(REQUIRED_ORDER)


def _is_hex(text: str) -> bool:
    """Hex digits only, an even number of them (the lengths checked here are): unhexlify() takes
    half what a regular expression costs."""
    try:
        unhexlify(text)
    except BinasciiError:
        return False
    return True


class Malformed(ValueError):
    """Credentials that cannot be read (the request gets 400)."""


class Credentials(NamedTuple):
    """(A named tuple: one is made per authenticated request, three times faster than a frozen
    dataclass.)"""
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


_make = tuple.__new__       # a named tuple's own __new__ is Python code; parse_credentials() gives every field


def parse_credentials(value: str) -> Credentials | None:
    """The Digest credentials in a header value; None for another scheme; Malformed when broken."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params = accel.digest_params(rest) if accel.digest_params is not None else None    # (in C)
    if params is None:
        params = _params(rest)
    if not REQUIRED <= params.keys():
        raise Malformed(f"no {', '.join(p for p in REQUIRED_ORDER if p not in params)}")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in HASHES:
        raise Malformed(f"algorithm {algorithm[:20]} is not supported")
    response = params["response"].lower()
    if len(response) != RESPONSE_LENGTH[algorithm] or not _is_hex(response):
        raise Malformed("the response is not a digest")
    qop = params.get("qop")
    if qop is not None:
        qop = qop.lower()
        if qop != "auth":
            raise Malformed(f"qop {qop[:20]} is not supported")
        nc = params.get("nc", "")
        if len(nc) != 8 or not _is_hex(nc) or not params.get("cnonce"):
            raise Malformed("qop=auth needs nc (8 hex digits) and cnonce")
    return _make(Credentials, (params["username"], params["realm"], params["nonce"], params["uri"], response,
                               algorithm, qop, params.get("nc"), params.get("cnonce"), params.get("opaque")))


def _params(rest: str) -> dict[str, str]:
    """The parameters of Digest credentials (the text after "Digest "); Malformed when broken."""
    params: dict[str, str] = {}
    pos, end = 0, len(rest)
    while True:
        m = _PARAM.match(rest, pos)
        if m is None:
            raise Malformed("unreadable parameter (an unterminated quote?)")
        name, quoted, token = m.groups()
        name = name.lower()
        raw = token if quoted is None else quoted
        if name in params:
            raise Malformed(f"{name} given twice")
        if len(raw) > MAX_VALUE:
            raise Malformed(f"{name} is longer than {MAX_VALUE} characters")
        params[name] = _QUOTED_PAIR.sub(r"\1", raw) if quoted is not None and "\\" in raw else raw
        pos = m.end()
        if pos >= end:
            break
        if rest[pos] != ",":
            raise Malformed("parameters must be separated by commas")
        pos += 1
    return params


def ha1(algorithm: str, user: str, realm: str, password: str) -> str:
    return HASHES[algorithm](f"{user}:{realm}:{password}".encode()).hexdigest()


def expected_response(creds: Credentials, ha1_hex: str, method: str) -> str:
    """RFC 2617 3.2.2.1 (RFC 7616 3.4.1 for SHA-256); qop=auth-int is not offered."""
    h = HASHES[creds.algorithm]
    ha2 = h(f"{method}:{creds.uri}".encode()).hexdigest()
    if creds.qop:
        text = f"{ha1_hex}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}"
    else:
        text = f"{ha1_hex}:{creds.nonce}:{ha2}"
    return h(text.encode()).hexdigest()


class Nonces:
    """Makes and checks this server's nonces. ``table`` is shared memory (made before fork);
    ``first_id``/``step`` keep the ids of different workers apart."""

    def __init__(self, secret: bytes, lifetime: int, table: mmap.mmap | None = None) -> None:
        # BLAKE2s takes a key of up to 32 bytes: a longer secret (auth's "secret" modparam) is
        # hashed down to one
        self.key = secret if len(secret) <= 32 else hashlib.blake2s(secret).digest()
        self.lifetime = lifetime
        self.table = table if table is not None else new_table()
        self.next_id, self.step = 1, 1

    def for_worker(self, index: int, count: int) -> None:
        self.next_id, self.step = index + 1, count

    def make(self, now: float) -> str:
        nid = self.next_id & 0xFFFFFFFF
        self.next_id += self.step
        SLOT.pack_into(self.table, (nid % SLOTS) * SLOT.size, nid, 0)
        head = f"{int(now) + self.lifetime:08x}{nid:08x}"
        return head + self._sign(head)

    def _sign(self, head: str) -> str:
        return hashlib.blake2s(head.encode(), key=self.key, digest_size=16).hexdigest()

    def check(self, nonce: str, now: float) -> str:
        """"ok", "stale" (ours, but expired or its slot reused) or "bad" (not ours)."""
        if len(nonce) != NONCE_LENGTH or not nonce.isascii():     # (compare_digest takes ASCII only)
            return "bad"        # (a nonce of other characters fails its signature: not ours either)
        head, sig = nonce[:16], nonce[16:]
        if not hmac.compare_digest(sig, self._sign(head)):
            return "bad"
        return "stale" if int(head[:8], 16) < now else "ok"

    def count(self, nonce: str, nc: str) -> str:
        """qop=auth: "ok" for a nonce-count higher than any seen with this nonce, and records
        it; "replay" for one not higher; "stale" when the nonce's slot went to a newer nonce."""
        nid, value = int(nonce[8:16], 16), int(nc, 16)
        offset = (nid % SLOTS) * SLOT.size
        owner, seen = SLOT.unpack_from(self.table, offset)
        if owner != nid:
            return "stale"
        if value <= seen:
            return "replay"
        SLOT.pack_into(self.table, offset, nid, value)
        return "ok"


def new_table() -> mmap.mmap:
    """Anonymous shared memory: the workers forked after it see and write the same pages."""
    return mmap.mmap(-1, SLOTS * SLOT.size)
