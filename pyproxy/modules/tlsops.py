"""tlsops: TLS checks in the script. ``is_peer_verified()`` is true when the message came over a
TLS connection whose peer presented a certificate that verified. (The ``$tls_*`` variables are
always available.)"""

from __future__ import annotations

from ..script.exports import Function, ModuleExports


def is_peer_verified(ctx):
    tls = ctx.rcv.tls
    return 1 if tls and tls.get("verified") else -1


EXPORTS = ModuleExports(
    name="tlsops",
    doc="TLS checks.",
    functions=(
        Function("is_peer_verified", is_peer_verified, (0,),
                 "True if the peer's TLS certificate was presented and verified."),
    ),
)
