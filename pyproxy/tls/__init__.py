"""TLS for pyproxy, split by concern (STYLE.md guideline 12).

- ``domains``: the TLS domains of the config and how a connection finds its own (``DomainTable``);
- ``context``: building one OpenSSL Context from one domain's parameters, in small named steps;
- ``verify``: what verification decided (and about whose certificate), RFC 5922 identity, the peer
  summary for ``$tls_*``;
- ``keylog``: ``tls_keylog_file``, the connections' secrets for Wireshark;
- ``pipe`` (the runtime's): the per-connection TLS state over memory BIOs.
"""

from .context import TLSConfigError
from .domains import DomainTable, TLSDomain, select_by_server_name
from .verify import certificate_names, is_verified, matches_sip_domain, peer_summary, verify_error

__all__ = ["DomainTable", "TLSConfigError", "TLSDomain", "certificate_names", "is_verified", "matches_sip_domain",
           "peer_summary", "select_by_server_name", "verify_error"]
