"""pyproxy.sip: the sans-IO SIP message layer (bytes in, objects out, no I/O at all).

- parse_message() / StreamParser: framing and start-line/header splitting (parser.py)
- Request / Response: lazy header access, recorded edits, serialize() (message.py, serialize.py)
- validate(): what a proxy checks before routing (validate.py)
- URIs, name-addr values and Vias (uri.py, address.py, via.py), the grammar (grammar.py)
- make_response(): stateless replies (response.py); errors (errors.py)
"""

from .address import STAR, NameAddr, Wildcard, parse_name_addr
from .errors import LocalSIPError, MessageTooLarge, RemoteSIPError, SIPError
from .headers import canonical as canonical_name
from .message import Message, Request, Response
from .parser import KeepAlive, StreamParser, parse_message, parse_without_content_length
from .response import make_response
from .uri import URI, is_ipv4, is_ipv6_reference, parse_uri
from .via import Via, parse_via

__all__ = [
    "parse_message", "parse_without_content_length", "StreamParser", "KeepAlive",
    "Message", "Request", "Response", "make_response",
    "URI", "parse_uri", "NameAddr", "parse_name_addr", "Wildcard", "STAR", "Via", "parse_via",
    "is_ipv4", "is_ipv6_reference", "canonical_name",
    "SIPError", "RemoteSIPError", "MessageTooLarge", "LocalSIPError",
]
