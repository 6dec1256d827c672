"""Request and Response: lazy header access and recorded edits.

A message keeps the octets it was parsed from (``raw``), its header lines as raw bytes and their
canonical names. Nothing in a header value is decoded or parsed until something reads it; results
are cached per message.

Reads show the message as received. Edits (add/remove/replace headers, Via and Record-Route
insertion, received/rport, the body) are recorded like OpenSER's lumps and only show up in
serialize() and make_response(). Two exceptions, because the script works with the current value:
``Request.ruri``/``Request.uri`` reflect set_ruri(), and ``body`` reflects set_body().
"""

from __future__ import annotations

from . import grammar
from .address import STAR, NameAddr, Wildcard, parse_name_addr
from .errors import LocalSIPError, RemoteSIPError
from .headers import MULTI_VALUE, canonical, split_header_lines, split_list, unfold
from .serialize import Edits, header_line, serialize
from .uri import URI, parse_uri
from .validate import validate as _validate
from .via import Via, parse_via

__all__ = ["Message", "Request", "Response"]

_cseqs: dict[str, tuple[int, str]] = {}     # CSeq text -> (number, method): "1 INVITE" comes again and again


class Message:
    """Base of Request and Response; see the module comment for read/edit semantics."""

    __slots__ = ("raw", "body", "version", "_start", "_names", "_lines", "_hstart", "_hend",
                 "_cl", "_cache", "_edits")

    def __init__(self, start: bytes, names: list[str], lines: list[bytes], hstart: int, hend: int,
                 cl: int | None, version: str) -> None:
        self.raw = b""
        self.body = b""
        self.version = version
        self._start = start          # the start line as received
        self._names = names          # canonical name of each header line, in order
        self._lines = lines          # each header line as received (folds kept), no CRLF
        self._hstart = hstart        # raw[_hstart:_hend] is the header block as received
        self._hend = hend
        self._cl = cl                # Content-Length as received, None if absent
        self._cache: dict = {}       # int -> decoded value of that line; str -> parsed property
                                     # (the C scan may start it with some: parser.parse_head)
        self._edits: Edits | None = None

    # --- reading headers ------------------------------------------------------------------
    def _value(self, i: int) -> str:
        value = self._cache.get(i)      # (decoded values are cached under their line's index)
        if value is None:
            value = self._lines[i].partition(b":")[2].strip(b" \t").decode("utf-8", "surrogateescape")
            if "\r\n" in value:         # a folded line: each fold becomes one SP, then strip
                value = unfold(self._lines[i].partition(b":")[2]).strip(b" \t").decode("utf-8", "surrogateescape")
            self._cache[i] = value
        return value

    def _indices(self, key: str) -> list[int]:
        """Indices of the header lines called ``key``, in order. (count() and index() run in C,
        and nothing is raised: a generator here cost a ValueError at its end, or a
        GeneratorExit when its caller stopped early, on most messages.)"""
        names = self._names
        count = names.count(key)
        if count < 2:
            return [names.index(key)] if count else []
        found = []
        i = -1
        for _ in range(count):
            i = names.index(key, i + 1)
            found.append(i)
        return found

    def header(self, name: str) -> str | None:
        """The value of the first header line called ``name`` (any case, compact form ok)."""
        return self._get(canonical(name))

    def _get(self, key: str) -> str | None:
        names = self._names
        return self._value(names.index(key)) if key in names else None

    def received_line(self, key: str) -> bytes:
        """The first header line called ``key`` (a canonical name) as received; b"" if none."""
        names = self._names
        return self._lines[names.index(key)] if key in names else b""

    def header_values(self, name: str) -> list[str]:
        """All values of ``name``; list-valued headers (Via, Contact...) are split on commas."""
        key = canonical(name)
        values = list(map(self._value, self._indices(key)))
        if key not in MULTI_VALUE:
            return values
        return [piece for value in values for piece in split_list(value) if piece]

    def values_to_send(self, name: str) -> list[str]:
        """The lines of ``name`` as the message would leave now: those added on top, the received
        ones not removed (as edited), those added below. One value per line, not split."""
        key = canonical(name)
        edits = self._edits
        if edits is None:
            return [self._value(i) for i, n in enumerate(self._names) if n == key]

        def added(entries):
            return [line.split(b":", 1)[1].strip().decode("utf-8", "surrogateescape") for k, line in entries
                    if k == key]
        received = [edits.subst[i].split(b":", 1)[1].strip().decode("utf-8", "surrogateescape")
                    if i in edits.subst else self._value(i)
                    for i, n in enumerate(self._names) if n == key and i not in edits.drop]
        return added(edits.top) + received + added(edits.bottom)

    def has_header(self, name: str) -> bool:
        return canonical(name) in self._names

    def header_names(self) -> list[str]:
        return list(self._names)

    def _list(self, key: str) -> list[str]:
        """All comma-separated elements of ``key``, empty ones kept (they are errors)."""
        return [piece for i in self._indices(key) for piece in split_list(self._value(i))]

    def _single(self, key: str, what: str) -> str:
        try:
            return self._value(self._names.index(key))
        except ValueError:
            raise RemoteSIPError(f"missing {what} header") from None

    # --- parsed headers (cached) ------------------------------------------------------------
    @property
    def call_id(self) -> str | None:
        return self._get("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        cached = self._cache.get("cseq")
        if cached is None:
            value = self._single("cseq", "CSeq")
            cached = _cseqs.get(value)
            if cached is None:
                match = grammar.CSEQ.fullmatch(value)
                if match is None:
                    raise RemoteSIPError(f"bad CSeq header {value[:60]!r}")
                number = match.group(1)
                # RFC 3261 8.1.1.5: the number "MUST be less than 2**31"
                if len(number) > 10 or int(number) >= 2**31:
                    raise RemoteSIPError(f"bad CSeq header: number {number[:20]} is out of range")
                if len(_cseqs) >= 1024:
                    _cseqs.clear()
                cached = _cseqs[value] = (int(number), match.group(2))
            self._cache["cseq"] = cached
        return cached

    @property
    def vias(self) -> list[Via]:
        cached = self._cache.get("vias")
        if cached is None:
            values = self._list("via")
            cached = self._cache["vias"] = [self.top_via] + [parse_via(v) for v in values[1:]] if values else []
        return cached

    @property
    def second_via(self) -> Via | None:
        """The Via under the top one (where a response goes next), parsed alone: a response
        forwarded by its Vias needs no more of them."""
        cached = self._cache.get("second_via", False)
        if cached is False:
            cached = None
            seen = 0                    # Via values on the lines before this one
            for i in self._indices("via"):
                value = self._value(i)
                values = split_list(value) if "," in value else (value,)
                if seen + len(values) > 1:
                    cached = parse_via(values[1 - seen])
                    break
                seen += len(values)
            self._cache["second_via"] = cached
        return cached

    @property
    def top_via(self) -> Via:
        cached = self._cache.get("top_via")
        if cached is None:
            value = self._single("via", "Via")
            if "," in value:
                value = split_list(value)[0]
            cached = self._cache["top_via"] = parse_via(value)
        return cached

    @property
    def from_(self) -> NameAddr:
        return self._name_addr("from", "From")

    @property
    def to(self) -> NameAddr:
        return self._name_addr("to", "To")

    def _name_addr(self, key: str, what: str) -> NameAddr:
        cached = self._cache.get(key)
        if cached is None:
            value = self._single(key, what)
            try:
                cached = self._cache[key] = parse_name_addr(value)
            except RemoteSIPError as exc:
                raise RemoteSIPError(f"bad {what} header: {exc.reason}") from None
        return cached

    @property
    def max_forwards(self) -> int | None:
        cached = self._cache.get("max-forwards", False)
        if cached is False:
            value = self._get("max-forwards")
            # RFC 3261 20.22: "The Max-Forwards value is an integer in the range 0-255"
            if value is not None and (not (value.isascii() and value.isdigit()) or len(value) > 10
                                      or int(value) > 255):
                raise RemoteSIPError(f"bad Max-Forwards header {value[:20]!r}")
            cached = self._cache["max-forwards"] = None if value is None else int(value)
        return cached

    @property
    def contacts(self) -> list[NameAddr | Wildcard]:
        """Contact values; "Contact: *" gives [STAR] (a lone Wildcard.STAR)."""
        cached = self._cache.get("contact")
        if cached is None:
            values = self._list("contact")
            cached = self._cache["contact"] = [
                STAR if v == "*" else _named(parse_name_addr, v, "Contact") for v in values]
        return cached

    @property
    def routes(self) -> list[NameAddr]:
        return self._addresses("route", "Route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._addresses("record-route", "Record-Route")

    def _addresses(self, key: str, what: str) -> list[NameAddr]:
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = [_named(parse_name_addr, v, what) for v in self._list(key)]
        return cached

    def validate(self, deep: bool = True) -> None:
        """Check the message; RemoteSIPError with the status to answer (see validate.validate)."""
        _validate(self, deep)

    # --- recorded edits --------------------------------------------------------------------
    def _ed(self) -> Edits:
        edits = self._edits
        if edits is None:
            edits = self._edits = Edits()
        return edits

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Add ``name: value`` after the last header, or above the first one."""
        entry = header_line(name, value)
        if first:
            self._ed().top.insert(0, entry)
        else:
            self._ed().bottom.append(entry)

    def add_header_raw(self, text: str) -> None:
        """Append header line(s) given as text, e.g. "P-hint: x\\r\\n" (OpenSER append_hf)."""
        data = text.encode("utf-8", "surrogateescape")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        try:
            names, lines = split_header_lines(data)
        except RemoteSIPError as exc:
            raise LocalSIPError(f"add_header_raw({text[:40]!r}): {exc.reason}") from None
        if not lines or "content-length" in names:
            raise LocalSIPError(f"add_header_raw({text[:40]!r}): no header, or Content-Length")
        self._ed().bottom.extend(zip(names, lines))

    def remove_header(self, name: str) -> int:
        """Remove every header called ``name`` (received or added); returns how many."""
        key = canonical(name)
        if key == "content-length":
            raise LocalSIPError("Content-Length is managed by serialize(); use set_body()")
        edits = self._ed()
        count = 0
        for i, n in enumerate(self._names):
            if n == key and i not in edits.drop:
                edits.drop.add(i)
                edits.subst.pop(i, None)
                count += 1
        for added in (edits.top, edits.bottom):
            kept = [entry for entry in added if entry[0] != key]
            count += len(added) - len(kept)
            added[:] = kept
        return count

    def remove_header_line(self, name: str, nth: int) -> bool:
        """Remove the ``nth`` (0-based) received line of header ``name``; False when there is none."""
        key = canonical(name)
        lines = [i for i, n in enumerate(self._names) if n == key]
        if nth >= len(lines):
            return False
        edits = self._ed()
        edits.drop.add(lines[nth])
        edits.subst.pop(lines[nth], None)
        return True

    def replace_header(self, name: str, value: str) -> None:
        """Put ``name: value`` in place of the first ``name`` header and remove the others."""
        self.replace_line(*header_line(name, value))

    def replace_line(self, key: str, line: bytes) -> None:
        """replace_header() of a line our own code made well-formed (``key``: its canonical
        name): Max-Forwards on every forwarded request skips header_line()'s checks."""
        edits = self._edits or self._ed()
        names = self._names
        if not edits.top and not edits.bottom and names.count(key) == 1:
            i = names.index(key)        # the common case: one line, replaced in place
            if i not in edits.drop:
                edits.subst[i] = line
                return
        alive = [i for i, n in enumerate(names) if n == key and i not in edits.drop]
        self.remove_header(key)
        if alive:
            edits.drop.discard(alive[0])
            edits.subst[alive[0]] = line
        else:
            edits.bottom.append((key, line))

    def insert_via(self, via: str) -> None:
        """Add a new top Via; ``via`` is the value only ("SIP/2.0/UDP host;branch=...")."""
        self._ed().top.insert(0, ("via", _via_line(via)))

    def remove_top_via(self) -> None:
        """Remove the top Via value: an added one first, else the first received one.

        A received value alone on its line removes the line; one of a folded "Via: a, b" line
        is cut from it, keeping the rest.
        """
        edits = self._edits or self._ed()
        for n, entry in enumerate(edits.top):
            if entry[0] == "via":
                del edits.top[n]
                return
        position = edits.via_pop  # received values already cut from the top of folded lines
        names = self._names
        if not position and "via" in names:     # the common cases, without parsing the line:
            i = names.index("via")
            line = self._lines[i]
            if i not in edits.drop:
                if b"," not in line:            # a first line of one value goes
                    edits.drop.add(i)
                    edits.subst.pop(i, None)
                    return
                if b'"' not in line:            # "Via: ours, theirs" (sipp's replies): ours is cut
                    edits.via_pop = 1
                    return
        for i in self._indices("via"):
            if i in edits.drop:
                continue
            value = self._value(i)
            count = len(split_list(value)) if "," in value else 1
            if position < count:
                if count == 1:
                    edits.drop.add(i)
                    edits.subst.pop(i, None)
                else:
                    edits.via_pop += 1
                return
            position -= count
        raise LocalSIPError("remove_top_via(): no Via left to remove")

    def set_top_via_params(self, received: str | None = None, rport: int | None = None) -> None:
        """Set received= and/or rport= on the top received Via (RFC 3261 18.2.1, RFC 3581).

        "Top" is counted after remove_top_via() edits; Vias added by insert_via() never count.
        """
        if "top_via" not in self._cache:
            self.top_via  # the sender's Via must parse; raises RemoteSIPError if it does not
        if received is not None and (not isinstance(received, str) or not received
                                     or any(c in received for c in " \t\r\n;,")):
            raise LocalSIPError(f"bad received value {received!r}")
        if rport is not None and not (isinstance(rport, int) and 0 <= rport <= 65535):
            raise LocalSIPError(f"bad rport value {rport!r}")
        edits = self._edits or self._ed()
        old = edits.via_params
        edits.via_params = (received, rport) if old is None else \
            (old[0] if received is None else received, old[1] if rport is None else rport)

    @property
    def rport_recorded(self) -> bool:
        """Whether set_top_via_params() wrote an rport value (force_rport(), or ;rport answered)."""
        return self._edits is not None and self._edits.via_params is not None and \
            self._edits.via_params[1] is not None

    def add_record_route(self, value: str) -> None:
        """Add a Record-Route value (e.g. "<sip:1.2.3.4;lr>") above all others."""
        self._ed().top.insert(0, header_line("Record-Route", value))

    def set_body(self, body: bytes) -> None:
        """Replace the body; serialize() then rewrites Content-Length."""
        self.body = bytes(body)
        self._ed().body_changed = True

    def serialize(self, top: bytes | None = None) -> bytes:
        """The message with all recorded edits applied, in one pass; repeatable. ``top``: a
        header line to write above everything (our Via, made by our own code), not recorded."""
        return serialize(self, top)

    def checkpoint(self) -> tuple:
        """The edits so far, to go back to with rollback() (once): edits made for one branch of
        a request (its Via, Record-Route, what branch_route changed) stay out of the others."""
        return (None if self._edits is None else self._edits.copy()), self.body

    def rollback(self, checkpoint: tuple) -> None:
        self._edits, self.body = checkpoint


class Request(Message):
    __slots__ = ("method", "ruri", "_uri")
    is_request = True

    def __init__(self, start, names, lines, hstart, hend, cl, version, method: str, ruri: str):
        super().__init__(start, names, lines, hstart, hend, cl, version)
        self.method = method
        self.ruri = ruri
        self._uri: URI | None = None

    @property
    def uri(self) -> URI:
        """The current Request-URI, parsed (cached until set_ruri())."""
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self.ruri)
        return uri

    @property
    def received_ruri(self) -> str:
        """The Request-URI as received, whatever set_ruri() did since."""
        return self._start.split(b" ", 2)[1].decode("utf-8", "surrogateescape")

    def set_ruri(self, uri: str) -> None:
        if not uri or any(c in uri for c in " \t\r\n"):
            raise LocalSIPError(f"bad Request-URI {uri!r}")
        self.ruri = uri
        self._uri = None
        self._ed().ruri_changed = True

    def checkpoint(self) -> tuple:
        return super().checkpoint(), self.ruri, self._uri

    def rollback(self, checkpoint: tuple) -> None:
        base, self.ruri, self._uri = checkpoint
        super().rollback(base)

    def _start_line(self) -> bytes:
        """The request line after set_ruri() (serialize() writes it)."""
        return f"{self.method} {self.ruri} {self.version}".encode("utf-8", "surrogateescape")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.ruri}>"


class Response(Message):
    __slots__ = ("status", "reason")
    is_request = False

    def __init__(self, start, names, lines, hstart, hend, cl, version, status: int, reason: str):
        super().__init__(start, names, lines, hstart, hend, cl, version)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _via_line(via: str) -> bytes:
    """The header line of a Via value of ours."""
    if "\r" in via or "\n" in via:
        raise LocalSIPError(f"Via value with CR/LF: {via[:40]!r}")
    return b"Via: " + via.encode("utf-8", "surrogateescape")


def _named(parse, value: str, what: str):
    try:
        return parse(value)
    except RemoteSIPError as exc:
        raise RemoteSIPError(f"bad {what} header: {exc.reason}") from None

