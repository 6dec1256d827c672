"""``tls_method``: the seed's method names, today's version names, and ranges.

The seed's ``SSLv23`` meant "negotiate the best version"; today that is TLS 1.2 or 1.3. ``TLSv1`` is
honoured as TLS 1.0 exactly (with a warning: RFC 8996 deprecates it). SSL 2.0 and 3.0 are refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .ast import Value


class TLSVersion(enum.IntEnum):
    TLSv1 = 0x0301
    TLSv1_1 = 0x0302
    TLSv1_2 = 0x0303
    TLSv1_3 = 0x0304

    @property
    def label(self) -> str:
        return {0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}[self.value]


@dataclass(frozen=True, slots=True)
class TLSMethod:
    low: TLSVersion
    high: TLSVersion
    spelling: str

    @property
    def deprecated(self) -> bool:
        return self.low < TLSVersion.TLSv1_2

    def __str__(self) -> str:
        return self.spelling


_NAMES = {v.name.lower(): v for v in TLSVersion}
_NAMES.update({"tlsv1_0": TLSVersion.TLSv1, "tlsv1.0": TLSVersion.TLSv1, "tlsv1.1": TLSVersion.TLSv1_1,
               "tlsv1.2": TLSVersion.TLSv1_2, "tlsv1.3": TLSVersion.TLSv1_3})
_REFUSED = {"sslv2": "SSL 2.0 (RFC 6176)", "sslv3": "SSL 3.0 (RFC 7568)"}


class TLSMethodType:
    describe = ("SSLv23 (TLS 1.2 and 1.3), TLSv1, TLSv1_1, TLSv1_2, TLSv1_3, "
                "a range TLSv1_2+ or TLSv1_2-TLSv1_3")

    def __call__(self, v: Value) -> TLSMethod:
        word = v.text.strip().lower()
        if word in _REFUSED:
            raise ValueError(f"tls_method {v.text} is refused: {_REFUSED[word]} is broken and prohibited; "
                             f"use SSLv23 (negotiates TLS 1.2 or 1.3) or TLSv1_2+")
        if word == "sslv23":
            return TLSMethod(TLSVersion.TLSv1_2, TLSVersion.TLSv1_3, v.text)
        if word.endswith("+") and word[:-1] in _NAMES:
            return TLSMethod(_NAMES[word[:-1]], TLSVersion.TLSv1_3, v.text)
        low, sep, high = word.partition("-")
        if sep and low in _NAMES and high in _NAMES:
            if _NAMES[low] > _NAMES[high]:
                first, last = v.text.strip().split("-", 1)
                raise ValueError(f"tls_method range {v.text} is empty: {first} is newer than {last}")
            return TLSMethod(_NAMES[low], _NAMES[high], v.text)
        if word in _NAMES:
            return TLSMethod(_NAMES[word], _NAMES[word], v.text)
        raise ValueError(f"unknown tls_method {v.describe()}: expected {self.describe}")


def deprecation_warning(method: TLSMethod) -> str | None:
    if method.deprecated:
        return (f"tls_method {method.spelling} allows {method.low.label}, deprecated by RFC 8996; "
                f"OpenSSL's security level is lowered for this domain so that it can work")
    return None
