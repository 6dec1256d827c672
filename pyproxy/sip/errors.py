"""The error hierarchy of the SIP layer.

Two kinds of failure, told apart by who is to blame:

- ``RemoteSIPError``: the peer sent something that is not acceptable SIP. It carries the status a
  request deserves (400 unless said otherwise) and a short ``reason`` naming what was wrong. A
  response that raises it is simply dropped by the caller.
- ``LocalSIPError``: our own code misused the API (an edit that cannot be serialized, a header
  value with CRLF in it...). It is a bug to fix, never an answer to send.
"""

from __future__ import annotations

__all__ = ["SIPError", "RemoteSIPError", "MessageTooLarge", "LocalSIPError"]


class SIPError(Exception):
    """Base of every error the SIP layer raises."""


class RemoteSIPError(SIPError):
    """The peer sent garbage; ``status`` is what a request deserves as an answer."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status={self.status})"


class MessageTooLarge(RemoteSIPError):
    """A message (or a header section still growing) is larger than the size limit."""

    def __init__(self, reason: str = "message too large", message=None) -> None:
        super().__init__(reason, status=513)
        self.message = message      # on streams: the parsed head, when it was complete (to answer)


class LocalSIPError(SIPError):
    """Our own misuse of the API, e.g. an edit that cannot be serialized."""
