"""Transaction keys: how a message finds its transaction (RFC 3261 17.1.3 and 17.2.3).

A request carries the key of its server transaction in its top Via: the branch (when it starts
with the magic cookie), the sent-by and the method, ACK counting as INVITE. A request of an RFC
2543 peer (no cookie) is known by what 17.2.3 lists for it: Request-URI, From tag, Call-ID, CSeq
number and top Via; the To tag is left out, so that the ACK of our final response, which has
one, finds its INVITE. A response finds its client transaction by the branch of its top Via and
its CSeq method: a CANCEL shares its INVITE's branch (RFC 3261 9.1).
"""

from __future__ import annotations

MAGIC = "z9hG4bK"


def server_key(msg, method: str | None = None) -> tuple:
    """The server transaction key of a request (as the method ``method`` when given: a CANCEL
    looks for its INVITE). Raises SIPError when the headers it needs are malformed."""
    via = msg.top_via
    method = method or msg.method
    if method == "ACK":
        method = "INVITE"
    branch = via.branch
    if branch and branch.startswith(MAGIC) and len(branch) > len(MAGIC):
        return branch, via.host.lower(), via.port, method
    return msg.call_id, msg.cseq[0], msg.from_.tag, msg.received_ruri, str(via), method


def client_key(response) -> tuple[str, str] | None:
    """The client transaction key of a response; None without a branch."""
    branch = response.top_via.branch
    return (branch, response.cseq[1]) if branch else None
