"""The SIP grammar in one place: RFC 3261 section 25 rules as compiled regexes.

Each regex sits under a comment quoting the rule it implements. Where we deliberately differ from
the ABNF (RFC 3261 grammar bugs, RFC 5118 robustness), the comment says so and why.

Every pattern here is meant for ``fullmatch`` on text that has already been unfolded (folded
lines replaced by one SP, RFC 3261 7.3.1) and decoded as UTF-8 with ``surrogateescape``, so a
non-UTF-8 octet shows up as a lone surrogate U+DC80..U+DCFF and never matches UTF8-NONASCII.
Patterns avoid nested quantifiers so hostile input cannot make them backtrack for long.
"""

from __future__ import annotations

import re

# alphanum = ALPHA / DIGIT
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
_TOKEN_CHAR = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = rf"[{_TOKEN_CHAR}]+"
TOKEN = re.compile(_TOKEN)

# Method = INVITEm / ACKm / OPTIONSm / BYEm / CANCELm / REGISTERm / extension-method
# extension-method = token
METHOD = TOKEN

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
SIP_VERSION_BYTES = re.compile(rb"SIP/[0-9]+\.[0-9]+")

# header-name = token  (the same rule, on the raw octets of a header line)
HEADER_NAME_BYTES = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]+")

# LWS = [*WSP CRLF] 1*WSP ; linear whitespace. A fold (CRLF followed by WSP) is unfolded to one SP:
# "all linear white space, including folding, has the same semantics as SP" (RFC 3261 7.3.1).
FOLD = re.compile(rb"[ \t]*\r\n[ \t]+")

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
_QDTEXT = r"[ \t\x21\x23-\x5b\x5d-\x7e\x80-\ud7ff\ue000-\U0010ffff]"
_QUOTED_PAIR = r"\\[\x00-\x09\x0b\x0c\x0e-\x7f]"
_QUOTED = rf'"(?:{_QDTEXT}|{_QUOTED_PAIR})*"'
QUOTED_STRING = re.compile(_QUOTED)
# Used to undo quoted-pairs when we hand a display name to the caller.
QUOTED_PAIR = re.compile(r"\\(.)", re.S)

# display-name = *(token LWS) / quoted-string
# We accept tokens not followed by LWS before "<" ("caller<sip:...>", RFC 4475 3.1.1.6 lwsdisp:
# the RFC 3261 grammar demands the LWS by mistake).
DISPLAY_TOKENS = re.compile(rf"{_TOKEN}(?:[ \t]+{_TOKEN})*")

# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
# (tightened to 0..255 per octet so is_ipv4() means what it says)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
IPV4 = re.compile(_IPV4)

# IPv6address = hexpart [ ":" IPv4address ]
# hexpart = hexseq / hexseq "::" [ hexseq ] / "::" [ hexseq ]
# hexseq = hex4 *( ":" hex4) ; hex4 = 1*4HEXDIG
# This is RFC 3261's rule verbatim, bug included: it accepts "2001:db8:::192.0.2.1" (three colons)
# and rejects "2001:db8::192.0.2.1". RFC 5118 4.10 asks to tolerate the first and accept the
# second, so uri.is_ipv6_reference() also accepts whatever the stdlib ipaddress module accepts.
_HEX4 = r"[0-9A-Fa-f]{1,4}"
_HEXSEQ = rf"{_HEX4}(?::{_HEX4})*"
_HEXPART = rf"(?:{_HEXSEQ}(?:::(?:{_HEXSEQ})?)?|::(?:{_HEXSEQ})?)"
IPV6_RFC3261 = re.compile(rf"{_HEXPART}(?::{_IPV4})?")
# IPv6reference = "[" IPv6address "]"  (the characters only; the address is checked separately)
IPV6_REFERENCE_CHARS = re.compile(r"\[[0-9A-Fa-f:.]+\]")

# hostname = *( domainlabel "." ) toplabel [ "." ]
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
# toplabel = ALPHA / ALPHA *( alphanum / "-" ) alphanum
# Liberal on purpose: "_" is tolerated (seen in the wild) and label shapes are not checked; the
# pattern only rules out characters that cannot be in a host name at all.
HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?")

# port = 1*DIGIT  (we also require it to fit 0..65535 where it is converted)
PORT = re.compile(r"[0-9]{1,5}")

# escaped = "%" HEXDIG HEXDIG. Character-class patterns below include "%"; this one finds a "%"
# that does not start a valid escape, which makes the whole component invalid.
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"

# user = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
USER = re.compile(rf"[{_UNRESERVED}%&=+$,;?/]+")

# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = re.compile(rf"[{_UNRESERVED}%&=+$,]*")

# uri-parameter = transport-param / user-param / method-param / ttl-param / maddr-param / lr-param
#                 / other-param
# other-param = pname [ "=" pvalue ] ; pname = 1*paramchar ; pvalue = 1*paramchar
# paramchar = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
URI_PARAM = re.compile(rf"[{_UNRESERVED}%\[\]/:&+$]+(?:=[{_UNRESERVED}%\[\]/:&+$]+)?")

# headers = "?" header *( "&" header ) ; header = hname "=" hvalue
# hname = 1*( hnv-unreserved / unreserved / escaped ) ; hvalue = *( hnv-unreserved / unreserved / escaped )
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
_HCHAR = rf"[{_UNRESERVED}%\[\]/?:+$]"
URI_HEADERS = re.compile(rf"{_HCHAR}+={_HCHAR}*(?:&{_HCHAR}+={_HCHAR}*)*")

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

# absoluteURI = scheme ":" ( hier-part / opaque-part )
# hier-part = ( net-path / abs-path ) [ "?" query ] ; opaque-part = uric-no-slash *uric
# uric = reserved / unreserved / escaped
# reserved = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","
ABS_URI_REST = re.compile(rf"[{_UNRESERVED}%;/?:@&=+$,]+")

# telephone-subscriber (RFC 3966 global-number-digits / local-number-digits, as used in a tel URI
# before its first ";"): "+"? followed by digits, hex digits, "*", "#" and visual separators.
TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")

# generic-param = token [ EQUAL gen-value ] ; gen-value = token / host / quoted-string
# (EQUAL = SWS "=" SWS; callers strip the SWS around the pieces first)
PARAM_NAME = TOKEN
GEN_VALUE = re.compile(rf"[{_TOKEN_CHAR}:\[\]]+|{_QUOTED}")

# Call-ID = ( "Call-ID" / "i" ) HCOLON callid ; callid = word [ "@" word ]
# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" / "(" / ")" / "<" /
#        ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
_WORD = rf"[{_TOKEN_CHAR}()<>:\\\"/\[\]?{{}}]+"
CALL_ID = re.compile(rf"{_WORD}(?:@{_WORD})?")

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
CSEQ = re.compile(rf"([0-9]+)[ \t]+({_TOKEN})")

# Date = "Date" HCOLON SIP-date ; SIP-date = rfc1123-date
# rfc1123-date = wkday "," SP date1 SP time SP "GMT" ; date1 = 2DIGIT SP month SP 4DIGIT
# time = 2DIGIT ":" 2DIGIT ":" 2DIGIT
DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)

# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport
# protocol-name = "SIP" / token ; protocol-version = token
# transport = "UDP" / "TCP" / "TLS" / "SCTP" / other-transport ; other-transport = token
# sent-by = host [ COLON port ] ; SLASH = SWS "/" SWS ; COLON = SWS ":" SWS
# The host is captured loosely here and checked by uri.check_host(); group 6 ends at the first
# ";" (or the end), where the via-params begin.
VIA = re.compile(
    rf"({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9\-_.]+)(?:[ \t]*:[ \t]*([0-9]+))?[ \t]*(;.*)?"
)

# Fast paths. These accept a subset of what the rules above accept (no escapes, no IPv6, no
# whitespace, no quoted strings), so a match is always valid; anything else takes the careful
# path. They exist because every forwarded message parses its R-URI and top Via.
# SIP-URI, common case: [ user "@" ] hostname-or-IPv4 [ ":" port ] *( ";" uri-parameter )
_FAST_PCHAR = rf"[{_UNRESERVED}\[\]/:&+$]"
FAST_SIP_URI = re.compile(
    rf"(?:([{_UNRESERVED}&=+$,;?/]+)@)?([A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)"
    rf"(?::([0-9]{{1,5}}))?((?:;{_FAST_PCHAR}+(?:={_FAST_PCHAR}+)?)*)"
)
# via-parm, common case: "SIP/2.0/" transport SP hostname-or-IPv4 [ ":" port ] *( ";" token [ "=" token ] )
FAST_VIA = re.compile(
    rf"SIP/2\.0/({_TOKEN}) ([A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)(?::([0-9]{{1,5}}))?"
    rf"((?:;{_TOKEN}(?:={_TOKEN})?)*)"
)
