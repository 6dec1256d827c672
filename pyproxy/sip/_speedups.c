/* Optional accelerator of pyproxy's SIP parser (pyproxy/sip/accel.py loads it).
 *
 * scan_head() does in one pass what parser.parse_head() does in several Python steps for a
 * well-formed head: split the start line and the header lines, check that no bare CR or LF is
 * left, find each header's canonical name in the parser's cache, read Content-Length and split
 * the start line; and it reads what routing reads first (the top two Vias, CSeq, Max-Forwards,
 * whether the Call-ID is well-formed) into the message's cache. scan_via() parses a common Via
 * value for via.parse_via().
 *
 * Neither ever decides that a message is bad: for anything unusual (a folded line, a header
 * name the cache has not learnt, a bare CR, a second Content-Length, another SIP version, a
 * malformed start line, a Via beyond the common shape) they return None or leave the fact out,
 * and the pure-Python path, the reference, parses it and gives the verdict. So both paths answer
 * alike by construction; tests/sip runs the conformance corpus and the property tests through
 * both, and checks that every result of C is what Python finds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>      /* T_OBJECT_EX: how a class's __slots__ are stored */
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

/* What accel.py expects of this module's functions (their arguments and results): a module built
 * from another version of this file is not used. */
#define SPEEDUPS_API 10

#define VERSION "SIP/2.0"
#define VERSION_LEN 7

/* A tuple of ``n`` new references, which it steals; NULL, each released, when one is NULL.
 * (Py_BuildValue parses its format string on every call: a third of the scan's time.) */
static PyObject *
tuple_of(Py_ssize_t n, ...)
{
    va_list args;
    PyObject *tuple = PyTuple_New(n);
    int failed = tuple == NULL;
    va_start(args, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = va_arg(args, PyObject *);
        failed |= item == NULL;
        if (tuple != NULL)
            PyTuple_SET_ITEM(tuple, i, item);
        else
            Py_XDECREF(item);
    }
    va_end(args);
    if (failed) {
        Py_XDECREF(tuple);      /* (a tuple's items may be NULL: released with it) */
        return NULL;
    }
    return tuple;
}

/* The canonical names of raw header names (the octets before the ":"), as the parser's dict
 * gives them, in a small table of their own: looking the dict up needs a bytes object made and
 * hashed for every header line. Filled on a miss from the dict, never past half full; emptied
 * when another dict is given. A name's canonical form never changes, and the parser's dict only
 * ever learns names (headers._by_bytes): one it dropped would still be found here. */
#define NAME_SLOTS 512
#define NAME_MAX_LEN 64

static struct {
    Py_ssize_t len;
    char raw[NAME_MAX_LEN];
    PyObject *name;
} name_table[NAME_SLOTS];
static int name_count;
static PyObject *name_table_dict;   /* the dict the table was filled from (held: see below) */

static PyObject *
canonical_name(PyObject *known, const char *p, Py_ssize_t n)
{
    uint32_t hash = 2166136261u;        /* FNV-1a */
    unsigned slot = 0;
    if (known != name_table_dict) {     /* (held, so that no other dict can take its address) */
        for (int i = 0; i < NAME_SLOTS; i++)
            Py_CLEAR(name_table[i].name);
        name_count = 0;
        Py_XSETREF(name_table_dict, Py_NewRef(known));
    }
    if (n <= NAME_MAX_LEN) {
        for (Py_ssize_t i = 0; i < n; i++)
            hash = (hash ^ (unsigned char)p[i]) * 16777619u;
        for (unsigned probe = 0; probe < NAME_SLOTS; probe++) {
            slot = (hash + probe) & (NAME_SLOTS - 1);
            if (name_table[slot].name == NULL)
                break;
            if (name_table[slot].len == n && memcmp(name_table[slot].raw, p, n) == 0)
                return name_table[slot].name;
        }
    }
    PyObject *raw = PyBytes_FromStringAndSize(p, n);
    if (raw == NULL)
        return NULL;
    PyObject *name = PyDict_GetItemWithError(known, raw);     /* borrowed */
    Py_DECREF(raw);
    if (name != NULL && !PyUnicode_CheckExact(name))
        return NULL;                    /* (no error set: not the common case) */
    if (name != NULL && n <= NAME_MAX_LEN && name_count < NAME_SLOTS / 2 &&
        name_table[slot].name == NULL) {
        name_table[slot].len = n;
        memcpy(name_table[slot].raw, p, n);
        name_table[slot].name = Py_NewRef(name);
        name_count++;
    }
    return name;
}

/* Whether the head [p, end) holds a CR not followed by LF or an LF not preceded by CR. */
static int
has_bare_cr_or_lf(const char *p, const char *end)
{
    const char *q = p;
    while ((q = memchr(q, '\r', end - q)) != NULL) {
        if (q + 1 >= end || q[1] != '\n')
            return 1;
        q += 2;
    }
    q = p;
    while ((q = memchr(q, '\n', end - q)) != NULL) {
        if (q == p || q[-1] != '\r')
            return 1;
        q++;
    }
    return 0;
}

static int
is_content_length(PyObject *name)
{
    return PyUnicode_GET_LENGTH(name) == 14 &&
           PyUnicode_CompareWithASCIIString(name, "content-length") == 0;
}

/* A header line's name and value, as serialize._wire_name and Message._value read them: the
 * name ends at *name_end (SP/HT before the ":" left out), the value is [*value, *value_end) (SP/HT
 * around it left out). 0 when the line has no ":". */
static int
split_line(const char *line, Py_ssize_t len, const char **name_end, const char **value,
           const char **value_end)
{
    const char *colon = memchr(line, ':', len), *p, *end = line + len;
    if (colon == NULL)
        return 0;
    for (p = colon; p > line && (p[-1] == ' ' || p[-1] == '\t'); p--)
        ;
    *name_end = p;
    for (p = colon + 1; p < end && (*p == ' ' || *p == '\t'); p++)
        ;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *value = p;
    *value_end = end;
    return 1;
}

/* The number [p, p+n) is when it is 1 to ``max_digits`` digits and at most ``max_value``; -1
 * otherwise. */
static long
bounded_number(const char *p, Py_ssize_t n, int max_digits, long max_value)
{
    long long value = 0;
    if (n < 1 || n > max_digits)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        value = value * 10 + (p[i] - '0');
    }
    return value <= max_value ? (long)value : -1;
}

/* Content-Length's value: digits between optional SP/HT; -1 when it is anything else. */
static long
content_length(const char *line, Py_ssize_t len)
{
    const char *name_end, *p, *end;
    if (!split_line(line, len, &name_end, &p, &end) || end == p)
        return -1;
    for (const char *d = p; d < end; d++)
        if (*d < '0' || *d > '9')
            return -1;
    if (end - p > 9)                /* no message can match it: as the Python path, 10**9 */
        return 1000000000L;
    return bounded_number(p, end - p, 9, 999999999L);
}

static PyObject *
decode(const char *s, Py_ssize_t n)
{
    return PyUnicode_DecodeUTF8(s, n, "surrogateescape");
}

/* The start line's parts: (False, method, ruri) or (True, status, reason); NULL without an
 * exception when the line is not a plain SIP/2.0 one (the Python path judges it). */
static PyObject *
scan_start(const char *s, Py_ssize_t n)
{
    const char *end = s + n, *sp1, *sp2;
    if (n >= 4 && memcmp(s, "SIP/", 4) == 0) {
        /* SIP/2.0 SP 3DIGIT SP Reason-Phrase */
        if (n < VERSION_LEN + 5 || memcmp(s, VERSION " ", VERSION_LEN + 1) != 0)
            return NULL;
        const char *code = s + VERSION_LEN + 1;
        if (code[3] != ' ' || code[0] < '0' || code[0] > '9' || code[1] < '0' || code[1] > '9' ||
            code[2] < '0' || code[2] > '9')
            return NULL;
        long status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
        PyObject *reason = decode(code + 4, end - code - 4);
        if (reason == NULL)
            return NULL;
        return tuple_of(3, Py_NewRef(Py_True), PyLong_FromLong(status), reason);
    }
    /* Method SP Request-URI SP SIP/2.0: exactly two SPs, no empty part */
    sp1 = memchr(s, ' ', n);
    if (sp1 == NULL || sp1 == s)
        return NULL;
    sp2 = memchr(sp1 + 1, ' ', end - sp1 - 1);
    if (sp2 == NULL || sp2 == sp1 + 1 || end - sp2 - 1 != VERSION_LEN ||
        memcmp(sp2 + 1, VERSION, VERSION_LEN) != 0)
        return NULL;
    PyObject *method = decode(s, sp1 - s);
    if (method == NULL)
        return NULL;
    PyObject *ruri = decode(sp1 + 1, sp2 - sp1 - 1);
    if (ruri == NULL) {
        Py_DECREF(method);
        return NULL;
    }
    return tuple_of(3, Py_NewRef(Py_False), method, ruri);
}

/* -- Via ------------------------------------------------------------------------------------- */

static unsigned char token_chars[256];      /* 1 for the octets of RFC 3261's token (module init) */

static int
is_token_char(unsigned char c)
{
    return token_chars[c];
}

static int
is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static const char *
skip_token(const char *p, const char *end)
{
    while (p < end && is_token_char((unsigned char)*p))
        p++;
    return p;
}

static int
is_blank(char c)            /* SP or HTAB */
{
    return c == ' ' || c == '\t';
}

/* [p, end) past its leading blanks */
static const char *
skip_blanks(const char *p, const char *end)
{
    while (p < end && is_blank(*p))
        p++;
    return p;
}

/* the end of [p, end) before its trailing blanks */
static const char *
trim_blanks(const char *p, const char *end)
{
    while (end > p && is_blank(end[-1]))
        end--;
    return end;
}

/* An ASCII str of [p, p+n), each letter moved to upper (or lower) case. */
static PyObject *
ascii_case(const char *p, Py_ssize_t n, int upper)
{
    PyObject *text = PyUnicode_New(n, 127);
    if (text == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (upper && c >= 'a' && c <= 'z')
            c -= 32;
        else if (!upper && c >= 'A' && c <= 'Z')
            c += 32;
        out[i] = c;
    }
    return text;
}

/* params[the name lowercased] = the value (None for NULL): 0, or -1 with an exception; with
 * ``only_new``, 1 (and nothing set) when the name is there already. */
static int
set_param(PyObject *params, const char *name, Py_ssize_t name_n, const char *value, Py_ssize_t value_n,
          int only_new)
{
    PyObject *key = ascii_case(name, name_n, 0);
    if (key == NULL)
        return -1;
    int present = only_new ? PyDict_Contains(params, key) : 0;
    if (present != 0) {
        Py_DECREF(key);
        return present;         /* 1, or -1 with an exception */
    }
    PyObject *val = value != NULL ? PyUnicode_FromStringAndSize(value, value_n) : Py_NewRef(Py_None);
    int failed = val == NULL || PyDict_SetItem(params, key, val) < 0;
    Py_DECREF(key);
    Py_XDECREF(val);
    return failed ? -1 : 0;
}

/* The octets of ``arg``, a str: 1 and [*p, *end) when it is ASCII, 0 when not (the Python
 * path's), -1 with a TypeError naming ``signature`` for anything but a str. */
static int
ascii_text(PyObject *arg, const char *signature, const char **p, const char **end)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, signature);
        return -1;
    }
    if (!PyUnicode_IS_ASCII(arg))
        return 0;
    *p = (const char *)PyUnicode_1BYTE_DATA(arg);
    *end = *p + PyUnicode_GET_LENGTH(arg);
    return 1;
}

/* Whether [p, p+n) is ``word`` (lowercase) in any ASCII case. (Not strncasecmp: it follows the
 * locale, where a Turkish one has no capital of "i".) */
static int
eq_ascii(const char *p, Py_ssize_t n, const char *word)
{
    if ((Py_ssize_t)strlen(word) != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)word[i])
            return 0;
    }
    return 1;
}

/* A port: 1 to 5 digits, at most 65535 (uri.parse_port). */
static long
port_value(const char *p, Py_ssize_t n)
{
    return bounded_number(p, n, 5, 65535);
}

/* IPv4address with octets 0-255 and no leading zeros (grammar.IPV4). */
static int
is_ipv4(const char *p, Py_ssize_t n)
{
    const char *end = p + n;
    for (int octet = 0; octet < 4; octet++) {
        const char *start = p;
        int value = 0;
        while (p < end && *p >= '0' && *p <= '9' && p - start < 3)
            value = value * 10 + (*p++ - '0');
        if (p == start || value > 255 || (p - start > 1 && *start == '0'))
            return 0;
        if (octet < 3) {
            if (p >= end || *p != '.')
                return 0;
            p++;
        }
    }
    return p == end;
}

/* via.parse_via's common case ("SIP/2.0/" transport SP hostname-or-IPv4 [":" port]
 * *(";" token ["=" token]), grammar.FAST_VIA) with via._check_params' checks, on the octets
 * [s, s+n): (transport, host, port, params), or None for anything else (the Python path judges
 * it), or NULL with an exception. */
static PyObject *
via_tuple(const char *s, Py_ssize_t n)
{
    const char *p, *end = s + n, *transport, *host, *host_end, *name, *name_end, *value;
    long port = -1;
    PyObject *params = NULL, *result = NULL;

    if (n < 10 || memcmp(s, "SIP/2.0/", 8) != 0)
        Py_RETURN_NONE;
    transport = s + 8;
    p = skip_token(transport, end);
    if (p == transport || p >= end || *p != ' ')
        Py_RETURN_NONE;
    host = ++p;
    while (p < end && (is_alnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
        p++;
    host_end = p;
    if (host_end == host || !is_alnum((unsigned char)host[0]) ||
        !(is_alnum((unsigned char)host_end[-1]) || host_end[-1] == '.'))
        Py_RETURN_NONE;
    if (p < end && *p == ':') {
        const char *digits = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if ((port = port_value(digits, p - digits)) < 0)
            Py_RETURN_NONE;
    }
    if ((params = PyDict_New()) == NULL)
        return NULL;
    while (p < end) {
        if (*p != ';')
            goto fallback;
        name = ++p;
        p = name_end = skip_token(name, end);
        if (name_end == name)
            goto fallback;
        value = NULL;
        if (p < end && *p == '=') {
            value = ++p;
            p = skip_token(value, end);
            if (p == value)
                goto fallback;
        }
        /* via._check_params: a received that is an IPv4 address, an rport that is a port, a
         * branch with a value (anything else: the Python path explains what is wrong) */
        if (eq_ascii(name, name_end - name, "received") && (value == NULL || !is_ipv4(value, p - value)))
            goto fallback;
        if (eq_ascii(name, name_end - name, "rport") && value != NULL && port_value(value, p - value) < 0)
            goto fallback;
        if (eq_ascii(name, name_end - name, "branch") && value == NULL)
            goto fallback;
        if (set_param(params, name, name_end - name, value, value ? p - value : 0, 0) < 0)
            goto done;
    }
    result = tuple_of(4, ascii_case(transport, host - 1 - transport, 1),
                      PyUnicode_FromStringAndSize(host, host_end - host),
                      port < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(port), params);
    return result;      /* (params stolen) */
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(params);
    return result;
}


/* scan_via(text: str) -> (transport, host, port, params) or None: see via_tuple. */
static PyObject *
scan_via(PyObject *module, PyObject *text)
{
    (void)module;
    const char *p, *end;
    int ascii = ascii_text(text, "scan_via(text: str)", &p, &end);
    return ascii < 0 ? NULL : ascii ? via_tuple(p, end - p) : Py_NewRef(Py_None);
}

/* -- what routing reads first: facts for the message's cache ------------------------------ */

/* their keys in Message._cache, made once (PyDict_SetItemString interns its key on each call) */
static PyObject *key_top_via, *key_second_via, *key_cseq, *key_max_forwards, *key_call_id_ok, *key_head_ok;

/* The headers the scan counts: those the facts are made of, and the others validate() wants
 * present, or present once (validate._REQUIRED, _SINGLE). */
enum { VIA, CSEQ, MAX_FORWARDS, CALL_ID, FROM, TO, CONTENT_TYPE, DATE, EXPIRES, OTHER };

static int
is_name(PyObject *name, const char *text)
{
    return PyUnicode_CompareWithASCIIString(name, text) == 0;
}

static int
name_kind(PyObject *name)
{
    switch (PyUnicode_GET_LENGTH(name)) {
    case 2: return is_name(name, "to") ? TO : OTHER;
    case 3: return is_name(name, "via") ? VIA : OTHER;
    case 4: return is_name(name, "cseq") ? CSEQ : is_name(name, "from") ? FROM : is_name(name, "date") ? DATE : OTHER;
    case 7: return is_name(name, "call-id") ? CALL_ID : is_name(name, "expires") ? EXPIRES : OTHER;
    case 12: return is_name(name, "max-forwards") ? MAX_FORWARDS : is_name(name, "content-type") ? CONTENT_TYPE : OTHER;
    default: return OTHER;
    }
}

/* A header line's value (the line has a ":"). */
static void
line_value(const char *line, Py_ssize_t len, const char **value, Py_ssize_t *n)
{
    const char *name_end, *end;
    split_line(line, len, &name_end, value, &end);
    *n = end - *value;
}

/* CSeq = 1*DIGIT LWS Method, the number below 2**31 (Message.cseq): (number, method) or None. */
static PyObject *
cseq_tuple(const char *p, Py_ssize_t n)
{
    const char *end = p + n, *digits = p, *method;
    long long number = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
        if (p - digits < 11)            /* (more digits are refused below; no overflow) */
            number = number * 10 + (*p - '0');
    if (p == digits || p - digits > 10 || number >= 2147483648LL || p >= end || (*p != ' ' && *p != '\t'))
        Py_RETURN_NONE;
    method = p = skip_blanks(p, end);
    if ((p = skip_token(p, end)) == method || p != end)
        Py_RETURN_NONE;
    return tuple_of(2, PyLong_FromLongLong(number), PyUnicode_FromStringAndSize(method, end - method));
}


/* callid = word ["@" word] (grammar.CALL_ID) */
static int
is_call_id(const char *p, Py_ssize_t n)
{
    const char *at = memchr(p, '@', n);
    Py_ssize_t words[2] = {at ? at - p : n, at ? n - (at - p) - 1 : -1};
    if (words[0] < 1 || (at != NULL && words[1] < 1))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (p + i == at)
            continue;
        if (!is_token_char(c) && (c == 0 || strchr("()<>:\\\"/[]?{}", c) == NULL))
            return 0;
    }
    return 1;
}

/* A Via line's comma-separated value as headers.split_list() splits it, when that is plain:
 * no quote or angle bracket (the quote-aware split), no octet that str.strip() would take but
 * SP and HT do not cover (other whitespace, controls, non-ASCII). */
static int
plain_list(const char *value, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '"' || c == '<' || c >= 0x7f || (c < 0x20 && c != '\t'))
            return 0;
    }
    return 1;
}

/* The next element of a plain list at *p (before end), stripped of SP/HT; *p moves past its
 * comma. 0 when there is none left. */
static int
next_element(const char **p, const char *end, const char **piece, Py_ssize_t *piece_n)
{
    const char *start = *p, *stop;
    if (start == NULL)
        return 0;
    const char *comma = memchr(start, ',', end - start);
    stop = comma ? comma : end;
    *p = comma ? comma + 1 : NULL;
    while (start < stop && (*start == ' ' || *start == '\t'))
        start++;
    while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
        stop--;
    *piece = start;
    *piece_n = stop - start;
    return 1;
}

/* Set facts[key] to the Via of [piece, piece+n) when it is the common shape; 0, or -1 error. */
static int
via_fact(PyObject *facts, PyObject *key, const char *piece, Py_ssize_t n)
{
    PyObject *fact = via_tuple(piece, n);
    int failed;
    if (fact == NULL)
        return -1;
    failed = fact != Py_None && PyDict_SetItem(facts, key, fact) < 0;
    Py_DECREF(fact);
    return failed ? -1 : 0;
}

/* The facts the message's cache starts with (Message._cache's keys): "top_via" (a Via's
 * fields, when the first Via line holds one value), "second_via" (then the next line's, or None
 * when there is none), "cseq", "max-forwards" and "call-id-ok"
 * (when there is one such line and it is well-formed). Each one left out is worked out by the
 * Python path when read, with its own verdict. scan_head() adds "head-ok" (head_ok()). */
static PyObject *
head_facts(const char *first[], Py_ssize_t first_len[], int count[], const char *second_via,
           Py_ssize_t second_via_len)
{
    PyObject *facts = PyDict_New(), *fact;
    const char *value;
    Py_ssize_t n;
    if (facts == NULL)
        return NULL;
    if (count[VIA] >= 1) {      /* the top Via, and the one under it (where a response goes) */
        const char *piece, *next;
        Py_ssize_t piece_n;
        line_value(first[VIA], first_len[VIA], &value, &n);
        next = value;
        if (plain_list(value, n) && next_element(&next, value + n, &piece, &piece_n)) {
            if (via_fact(facts, key_top_via, piece, piece_n) < 0)
                goto error;
            if (next_element(&next, value + n, &piece, &piece_n)) {        /* "Via: top, second" */
                if (via_fact(facts, key_second_via, piece, piece_n) < 0)
                    goto error;
            } else if (count[VIA] == 1) {
                if (PyDict_SetItem(facts, key_second_via, Py_None) < 0)
                    goto error;
            } else {
                line_value(second_via, second_via_len, &value, &n);
                next = value;
                if (plain_list(value, n) && next_element(&next, value + n, &piece, &piece_n) &&
                    via_fact(facts, key_second_via, piece, piece_n) < 0)
                    goto error;
            }
        }
    }
    if (count[CSEQ] == 1) {
        line_value(first[CSEQ], first_len[CSEQ], &value, &n);
        if ((fact = cseq_tuple(value, n)) == NULL)
            goto error;
        if (fact != Py_None && PyDict_SetItem(facts, key_cseq, fact) < 0) {
            Py_DECREF(fact);
            goto error;
        }
        Py_DECREF(fact);
    }
    if (count[MAX_FORWARDS] <= 1) {
        long hops = 0;
        if (count[MAX_FORWARDS] == 1) {
            line_value(first[MAX_FORWARDS], first_len[MAX_FORWARDS], &value, &n);
            hops = bounded_number(value, n, 10, 255);     /* (Message.max_forwards) */
        }
        if (hops >= 0) {
            fact = count[MAX_FORWARDS] ? PyLong_FromLong(hops) : Py_NewRef(Py_None);
            if (fact == NULL || PyDict_SetItem(facts, key_max_forwards, fact) < 0) {
                Py_XDECREF(fact);
                goto error;
            }
            Py_DECREF(fact);
        }
    }
    if (count[CALL_ID] == 1) {
        line_value(first[CALL_ID], first_len[CALL_ID], &value, &n);
        if (is_call_id(value, n) && PyDict_SetItem(facts, key_call_id_ok, Py_True) < 0)
            goto error;
    }
    return facts;
error:
    Py_DECREF(facts);
    return NULL;
}

/* validate.check_head()'s verdict on a head the scan took, from its counts and facts: 1 when
 * every check passes (the headers each message must have, once each where only one is allowed,
 * a good Call-ID, CSeq, Max-Forwards and top Via, a status code in range, a request's method
 * named by its CSeq); else 0, and the Python path makes the checks. -1 on error. */
static int
head_ok(PyObject *parts, const int count[], PyObject *facts)
{
    PyObject *cseq, *first = PyTuple_GET_ITEM(parts, 1);
    if (count[VIA] < 1 || count[FROM] != 1 || count[TO] != 1 || count[CALL_ID] != 1 || count[CSEQ] != 1 ||
            count[CONTENT_TYPE] > 1 || count[DATE] > 1 || count[EXPIRES] > 1)
        return 0;
    if (PyDict_GetItemWithError(facts, key_top_via) == NULL ||
            PyDict_GetItemWithError(facts, key_call_id_ok) == NULL ||
            PyDict_GetItemWithError(facts, key_max_forwards) == NULL ||
            (cseq = PyDict_GetItemWithError(facts, key_cseq)) == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (PyTuple_GET_ITEM(parts, 0) == Py_True) {
        long status = PyLong_AsLong(first);
        return status >= 100 && status <= 699;
    }
    int differ = PyUnicode_Compare(PyTuple_GET_ITEM(cseq, 1), first);
    return differ == -1 && PyErr_Occurred() ? -1 : differ == 0;
}

/* scan_head(head: bytes, names: dict[bytes, str]) -> (start, is_response, a, b, names, lines,
 * content_length, facts) or None. ``names`` maps the octets before a header line's ":" to its
 * canonical name (headers._by_bytes); ``facts``: see head_facts. */
static PyObject *
scan_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *head, *known, *names = NULL, *lines = NULL, *start = NULL, *parts = NULL;
    PyObject *result = NULL, *facts;
    const char *p, *end, *eol, *colon, *first[OTHER] = {NULL}, *second_via = NULL;
    Py_ssize_t n, first_len[OTHER] = {0}, second_via_len = 0;
    int count[OTHER + 1] = {0}, kind;
    long cl = -2;   /* -2: no Content-Length header seen */

    (void)module;
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "scan_head(head: bytes, names: dict)");
        return NULL;
    }
    head = args[0];
    known = args[1];
    p = PyBytes_AS_STRING(head);
    n = PyBytes_GET_SIZE(head);
    end = p + n;
    if (has_bare_cr_or_lf(p, end))
        Py_RETURN_NONE;
    eol = memchr(p, '\r', n);
    if (eol == NULL)
        eol = end;
    parts = scan_start(p, eol - p);
    if (parts == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t line_count = 0, i = 0;       /* a header line after each CR (each ends a line) */
    for (const char *cr = eol; cr < end && (cr = memchr(cr, '\r', end - cr)) != NULL; cr++)
        line_count++;
    if ((start = PyBytes_FromStringAndSize(p, eol - p)) == NULL ||
        (names = PyList_New(line_count)) == NULL || (lines = PyList_New(line_count)) == NULL)
        goto done;
    while (eol < end) {         /* (eol + 1 is its LF: no bare CR or LF is left) */
        p = eol + 2;
        eol = memchr(p, '\r', end - p);
        if (eol == NULL)
            eol = end;
        colon = memchr(p, ':', eol - p);
        if (colon == NULL)
            goto fallback;
        PyObject *name = canonical_name(known, p, colon - p);      /* borrowed */
        if (name == NULL) {
            if (PyErr_Occurred())
                goto done;
            goto fallback;      /* folded, unknown or garbage: the careful Python loop */
        }
        kind = name_kind(name);
        if (kind != OTHER && count[kind]++ == 0) {
            first[kind] = p;
            first_len[kind] = eol - p;
        } else if (kind == VIA && count[VIA] == 2) {
            second_via = p;
            second_via_len = eol - p;
        }
        if (kind == OTHER && is_content_length(name)) {
            if (cl != -2)
                goto fallback;
            if ((cl = content_length(p, eol - p)) < 0)
                goto fallback;
        }
        PyObject *line = PyBytes_FromStringAndSize(p, eol - p);
        if (line == NULL)
            goto done;
        PyList_SET_ITEM(names, i, Py_NewRef(name));
        PyList_SET_ITEM(lines, i, line);
        i++;
    }
    if ((facts = head_facts(first, first_len, count, second_via, second_via_len)) == NULL)
        goto done;
    int ok = head_ok(parts, count, facts);
    if (ok < 0 || (ok && PyDict_SetItem(facts, key_head_ok, Py_True) < 0)) {
        Py_DECREF(facts);
        goto done;
    }
    result = tuple_of(8, start, Py_NewRef(PyTuple_GET_ITEM(parts, 0)), Py_NewRef(PyTuple_GET_ITEM(parts, 1)),
                      Py_NewRef(PyTuple_GET_ITEM(parts, 2)), names, lines,
                      cl == -2 ? Py_NewRef(Py_None) : PyLong_FromLong(cl), facts);
    start = names = lines = NULL;       /* stolen */
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(start);
    Py_XDECREF(parts);
    Py_XDECREF(names);
    Py_XDECREF(lines);
    return result;
}

/* -- SIP URIs ---------------------------------------------------------------------------------- */

static unsigned char uri_user_chars[256];     /* unreserved and user-unreserved (module init) */
static unsigned char uri_param_chars[256];    /* grammar._FAST_PCHAR */

static int
is_host_char(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '_' || c == '.';
}

/* The parts of the common SIP URI, grammar.FAST_SIP_URI, in the text after "sip:" (ASCII):
 * [user "@"] host [":" port] *(";" name ["=" value]), the names lowercased (a later one of a name
 * wins), port None or at most 65535, user None when absent: a new (user, host, port, params), or
 * None for anything else (the Python path judges it), or NULL with an exception. */
static PyObject *
uri_parts(const char *text, const char *end)
{
    const char *p = text, *user = NULL, *user_end = NULL, *host, *at = memchr(text, '@', end - text);
    long port = -1;
    if (at != NULL) {
        if (at == text)
            Py_RETURN_NONE;
        for (const char *c = text; c < at; c++)
            if (!uri_user_chars[(unsigned char)*c])
                Py_RETURN_NONE;
        user = text, user_end = at, p = at + 1;
    }
    host = p;
    while (p < end && is_host_char((unsigned char)*p))
        p++;
    if (p == host || !is_alnum((unsigned char)*host) || !(is_alnum((unsigned char)p[-1]) || p[-1] == '.'))
        Py_RETURN_NONE;
    const char *host_end = p;
    if (p < end && *p == ':') {
        const char *digits = ++p;
        port = 0;
        while (p < end && *p >= '0' && *p <= '9' && p - digits < 6)
            port = port * 10 + (*p++ - '0');
        if (p == digits || p - digits > 5 || port > 65535)
            Py_RETURN_NONE;
    }
    PyObject *params = PyDict_New(), *result = NULL;
    if (params == NULL)
        return NULL;
    while (p < end) {           /* *(";" name ["=" value]): anything else, and nothing is returned */
        if (*p++ != ';')
            goto refused;
        const char *name = p, *value = NULL, *value_end = NULL;
        while (p < end && uri_param_chars[(unsigned char)*p])
            p++;
        const char *name_end = p;
        if (p == name)
            goto refused;
        if (p < end && *p == '=') {
            value = ++p;
            while (p < end && uri_param_chars[(unsigned char)*p])
                p++;
            if (p == value)
                goto refused;
            value_end = p;
        }
        if (set_param(params, name, name_end - name, value, value_end - value, 0) < 0)
            goto done;
    }
    result = tuple_of(4, user ? PyUnicode_FromStringAndSize(user, user_end - user) : Py_NewRef(Py_None),
                      PyUnicode_FromStringAndSize(host, host_end - host),
                      port < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(port), Py_NewRef(params));
    goto done;
refused:
    result = Py_NewRef(Py_None);
done:
    Py_DECREF(params);
    return result;
}

/* sip_uri_parts(rest) -> (user, host, port, params) or None: uri._parse_sip()'s common case
 * (uri_parts() above) on the text after "sip:". */
static PyObject *
sip_uri_parts(PyObject *module, PyObject *arg)
{
    (void)module;
    const char *p, *end;
    int ascii = ascii_text(arg, "sip_uri_parts(rest: str)", &p, &end);
    return ascii < 0 ? NULL : ascii ? uri_parts(p, end) : Py_NewRef(Py_None);
}

static PyObject *scheme_sip, *scheme_sips;      /* "sip", "sips" */

/* qdtext without the quoted-pair: what a quoted string of the common case holds (grammar._QDTEXT,
 * ASCII; a backslash is left to the Python path, which undoes quoted-pairs). */
static int
is_plain_qdtext(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\');
}

/* A quoted string without quoted-pairs at ``p`` (at its opening quote): the end of it, after the
 * closing quote, or NULL when it is not one. */
static const char *
plain_quoted(const char *p, const char *end)
{
    for (p++; p < end && *p != '"'; p++)
        if (!is_plain_qdtext((unsigned char)*p))
            return NULL;
    return p < end ? p + 1 : NULL;
}

/* name_addr_parts(text) -> (display, scheme, uri_text, user, host, port, uri_params, params) or
 * None: address.parse_name_addr()'s common case, in ASCII: optional blanks around the whole,
 * [display] "<" sip/sips URI of uri_parts()'s grammar ">" then *(";" token ["=" value]) without
 * blanks, a value being token characters and ":[]" or a quoted string; a display name being a
 * quoted string (without quoted-pairs) or tokens separated by blanks. Names lowercased, a later
 * one of a name winning, as parse_generic_params() does. None for anything else. */
static PyObject *
name_addr_parts(PyObject *module, PyObject *arg)
{
    (void)module;
    const char *p, *end;
    int ascii = ascii_text(arg, "name_addr_parts(text: str)", &p, &end);
    if (ascii <= 0)
        return ascii < 0 ? NULL : Py_NewRef(Py_None);
    p = skip_blanks(p, end);
    end = trim_blanks(p, end);
    const char *display = NULL, *display_end = NULL, *lt;
    if (p < end && *p == '"') {
        const char *closed = plain_quoted(p, end);
        if (closed == NULL)
            Py_RETURN_NONE;
        display = p + 1, display_end = closed - 1;
        lt = skip_blanks(closed, end);
        if (lt == end || *lt != '<')
            Py_RETURN_NONE;
    } else {
        if ((lt = memchr(p, '<', end - p)) == NULL)
            Py_RETURN_NONE;         /* an addr-spec */
        const char *tokens_end = trim_blanks(p, lt);
        for (const char *c = p; c < tokens_end; c++)
            if (!is_token_char((unsigned char)*c) && !is_blank(*c))
                Py_RETURN_NONE;
        if (tokens_end > p)
            display = p, display_end = tokens_end;
    }
    const char *uri = lt + 1, *gt = memchr(uri, '>', end - uri), *colon;
    if (gt == NULL || (colon = memchr(uri, ':', gt - uri)) == NULL)
        Py_RETURN_NONE;
    PyObject *scheme;
    if (colon - uri == 3 && (uri[0] | 0x20) == 's' && (uri[1] | 0x20) == 'i' && (uri[2] | 0x20) == 'p')
        scheme = scheme_sip;
    else if (colon - uri == 4 && (uri[0] | 0x20) == 's' && (uri[1] | 0x20) == 'i' && (uri[2] | 0x20) == 'p' &&
             (uri[3] | 0x20) == 's')
        scheme = scheme_sips;
    else
        Py_RETURN_NONE;
    PyObject *parts = uri_parts(colon + 1, gt);
    if (parts == NULL || parts == Py_None)
        return parts;
    PyObject *params = PyDict_New(), *result = NULL;
    if (params == NULL)
        goto done;
    for (p = gt + 1; p < end;) {       /* *(";" token ["=" value]) */
        if (*p++ != ';')
            goto refused;
        const char *name = p, *value = NULL;
        const char *name_end = p = skip_token(p, end);
        if (p == name)
            goto refused;
        if (p < end && *p == '=') {
            value = ++p;
            if (p < end && *p == '"') {
                if ((p = plain_quoted(p, end)) == NULL)
                    goto refused;
            } else {
                while (p < end && (is_token_char((unsigned char)*p) || *p == ':' || *p == '[' || *p == ']'))
                    p++;
                if (p == value)
                    goto refused;
            }
            if (p < end && *p != ';')
                goto refused;
        }
        if (set_param(params, name, name_end - name, value, value ? p - value : 0, 0) < 0)
            goto done;
    }
    result = tuple_of(8, display ? PyUnicode_FromStringAndSize(display, display_end - display) : Py_NewRef(Py_None),
                      Py_NewRef(scheme), PyUnicode_FromStringAndSize(uri, gt - uri),
                      Py_NewRef(PyTuple_GET_ITEM(parts, 0)), Py_NewRef(PyTuple_GET_ITEM(parts, 1)),
                      Py_NewRef(PyTuple_GET_ITEM(parts, 2)), Py_NewRef(PyTuple_GET_ITEM(parts, 3)),
                      Py_NewRef(params));
    goto done;
refused:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(params);
    Py_DECREF(parts);
    return result;
}

/* -- digest credentials --------------------------------------------------------------------- */

#define DIGEST_MAX_VALUE 1024       /* auth.digest.MAX_VALUE: longer is the Python path's error */

/* digest_params(rest) -> {name: value} or None: what auth.digest's parameter loop makes of the
 * text after "Digest ": ``name = value`` pairs separated by commas, blanks (SP, HTAB) around
 * each part, a value quoted or not ([^ \t,"]*), names lowercased. None for anything else (a
 * quoted-pair, a name given twice, a value longer than DIGEST_MAX_VALUE, non-ASCII, any
 * error), which the Python path then judges. */
static PyObject *
digest_params(PyObject *module, PyObject *arg)
{
    (void)module;
    const char *p, *end;
    int ascii = ascii_text(arg, "digest_params(rest: str)", &p, &end);
    if (ascii <= 0)
        return ascii < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *params = PyDict_New();
    if (params == NULL)
        return NULL;
    for (;;) {
        p = skip_blanks(p, end);
        const char *name = p;
        const char *name_end = p = skip_token(p, end);
        p = skip_blanks(p, end);
        if (name_end == name || p == end || *p++ != '=')
            goto refused;
        p = skip_blanks(p, end);
        const char *value, *value_end;
        if (p < end && *p == '"') {
            value = ++p;
            while (p < end && *p != '"' && *p != '\\' && *p != '\r' && *p != '\n')
                p++;
            if (p == end || *p != '"')
                goto refused;           /* unterminated, or a quoted-pair */
            value_end = p++;
        } else {
            value = p;
            while (p < end && *p != ' ' && *p != '\t' && *p != ',' && *p != '"')
                p++;
            value_end = p;
        }
        if (value_end - value > DIGEST_MAX_VALUE)
            goto refused;
        p = skip_blanks(p, end);
        int set = set_param(params, name, name_end - name, value, value_end - value, 1);
        if (set < 0) {
            Py_DECREF(params);
            return NULL;
        }
        if (set)
            goto refused;               /* given twice */
        if (p == end)
            return params;
        if (*p++ != ',')
            goto refused;
    }
refused:
    Py_DECREF(params);
    Py_RETURN_NONE;
}

/* -- the message objects themselves (head_message) ---------------------------------------
 * parser.parse_head() would build them from scan_head()'s tuple with Request/Response.__init__
 * and Via(): a Python call, a frame and a store per attribute for each, a tenth of a forwarded
 * message's instructions. Here they are allocated and their slots filled directly, at the
 * offsets use_types() read from the classes' own slot descriptors (so a slot renamed, added or
 * removed in message.py or via.py fails use_types() at import rather than going unnoticed). */
static const char *const message_slots[] = {
    "raw", "body", "version", "_start", "_names", "_lines", "_hstart", "_hend", "_cl", "_cache",
    "_edits", NULL};
static const char *const request_slots[] = {"method", "ruri", "_uri", NULL};
static const char *const response_slots[] = {"status", "reason", NULL};
static const char *const via_slots[] = {"protocol", "transport", "host", "port", "params", NULL};
static const char *const edits_slots[] = {"top", "bottom", "drop", "subst", "via_pop", "via_params", "body_changed",
                                          "ruri_changed", NULL};
enum { E_TOP, E_BOTTOM, E_DROP, E_SUBST, E_VIA_POP, E_VIA_PARAMS, E_BODY_CHANGED, E_RURI_CHANGED };
enum { RAW, BODY, VERSION_, START, NAMES, LINES, HSTART, HEND, CL, CACHE, EDITS, MESSAGE_SLOTS };
#define MAX_SLOTS 16

static struct built_type {
    PyTypeObject *type;
    Py_ssize_t offsets[MAX_SLOTS];
    Py_ssize_t count;
} request_type, response_type, via_type, edits_type;

/* The value of the slot numbered ``n`` of ``built``'s class in ``obj`` (borrowed; NULL unset). */
#define SLOT(obj, built, n) (*(PyObject **)((char *)(obj) + (built)->offsets[n]))
static PyObject *version_str;       /* "SIP/2.0" */

/* The offsets of ``names`` (then of ``more``) among the slots of ``type``, into ``built`` (its
 * type not set: use_types() keeps all four or none); -1 when one is not a plain object slot, or
 * the class has more slots than these (an __init__ of its own to mirror). */
static int
slot_offsets(struct built_type *built, PyObject *type, const char *const *names, const char *const *more)
{
    Py_ssize_t count = 0;
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "use_types() takes classes");
        return -1;
    }
    for (int list = 0; list < 2; list++) {
        for (const char *const *name = list ? more : names; name && *name; name++) {
            PyObject *descr = PyObject_GetAttrString(type, *name);
            if (descr == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
                    ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
                Py_XDECREF(descr);
                PyErr_Format(PyExc_TypeError, "%s has no slot %s", ((PyTypeObject *)type)->tp_name, *name);
                return -1;
            }
            built->offsets[count++] = ((PyMemberDescrObject *)descr)->d_member->offset;
            Py_DECREF(descr);
        }
    }
    /* every slot is one of ours: tp_basicsize is the object header, the slots, and what an
     * instance dict or weak references would add (the classes have neither) */
    if ((Py_ssize_t)(((PyTypeObject *)type)->tp_basicsize - sizeof(PyObject)) != count * (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_Format(PyExc_TypeError, "%s has slots the accelerator does not know", ((PyTypeObject *)type)->tp_name);
        return -1;
    }
    built->count = count;
    return 0;
}

/* use_types(Request, Response, Via, Edits): the classes head_message() builds and serialized()
 * reads. */
static PyObject *
use_types(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "use_types(Request, Response, Via, Edits)");
        return NULL;
    }
    struct built_type found[4] = {{0}};
    struct built_type *kept[4] = {&request_type, &response_type, &via_type, &edits_type};
    if (slot_offsets(&found[0], args[0], message_slots, request_slots) < 0 ||
        slot_offsets(&found[1], args[1], message_slots, response_slots) < 0 ||
        slot_offsets(&found[2], args[2], via_slots, NULL) < 0 ||
        slot_offsets(&found[3], args[3], edits_slots, NULL) < 0)
        return NULL;            /* (the classes in use, if any, stay as they were) */
    for (int i = 0; i < 4; i++) {
        found[i].type = (PyTypeObject *)Py_NewRef(args[i]);
        Py_XDECREF(kept[i]->type);
        *kept[i] = found[i];
    }
    Py_RETURN_NONE;
}

/* An instance of ``built``'s class with its slots set to ``values`` (new references, stolen,
 * as many as it has slots); NULL when one is NULL, or allocation fails. */
static PyObject *
instance_of(struct built_type *built, PyObject **values)
{
    PyObject *obj = NULL;
    int failed = 0;
    for (Py_ssize_t i = 0; i < built->count; i++)
        failed |= values[i] == NULL;
    if (!failed)
        obj = built->type->tp_alloc(built->type, 0);
    for (Py_ssize_t i = 0; i < built->count; i++) {
        if (obj != NULL)
            *(PyObject **)((char *)obj + built->offsets[i]) = values[i];
        else
            Py_XDECREF(values[i]);
    }
    return obj;
}

/* facts[key], a Via's fields (transport, host, port, params), made a Via. */
static int
via_object(PyObject *facts, PyObject *key)
{
    PyObject *fields = PyDict_GetItemWithError(facts, key), *via;     /* borrowed */
    if (fields == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(fields))
        return 0;                               /* None: there is no second Via */
    PyObject *values[5] = {Py_NewRef(version_str)};
    for (int i = 0; i < 4; i++)
        values[i + 1] = Py_NewRef(PyTuple_GET_ITEM(fields, i));
    if ((via = instance_of(&via_type, values)) == NULL)
        return -1;
    int failed = PyDict_SetItem(facts, key, via);
    Py_DECREF(via);
    return failed;
}

/* head_message(head, names) -> Request | Response | None: what parser.parse_head() makes of
 * scan_head()'s result (raw and body are left empty, for its caller), built here. */
static PyObject *
head_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (request_type.type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "head_message() before use_types()");
        return NULL;
    }
    PyObject *scanned = scan_head(module, args, nargs), *empty, *msg;
    if (scanned == NULL || scanned == Py_None)
        return scanned;
    PyObject *start = PyTuple_GET_ITEM(scanned, 0), *facts = PyTuple_GET_ITEM(scanned, 7);
    int is_response = PyObject_IsTrue(PyTuple_GET_ITEM(scanned, 1));
    if (via_object(facts, key_top_via) < 0 || via_object(facts, key_second_via) < 0 ||
            (empty = PyBytes_FromStringAndSize(NULL, 0)) == NULL) {
        Py_DECREF(scanned);
        return NULL;
    }
    PyObject *values[MAX_SLOTS] = {
        [RAW] = empty, [BODY] = Py_NewRef(empty), [VERSION_] = Py_NewRef(version_str),
        [START] = Py_NewRef(start), [NAMES] = Py_NewRef(PyTuple_GET_ITEM(scanned, 4)),
        [LINES] = Py_NewRef(PyTuple_GET_ITEM(scanned, 5)),
        [HSTART] = PyLong_FromSsize_t(PyBytes_GET_SIZE(start) + 2),
        [HEND] = PyLong_FromSsize_t(PyBytes_GET_SIZE(args[0])),
        [CL] = Py_NewRef(PyTuple_GET_ITEM(scanned, 6)), [CACHE] = Py_NewRef(facts), [EDITS] = Py_NewRef(Py_None),
        [MESSAGE_SLOTS] = Py_NewRef(PyTuple_GET_ITEM(scanned, 2)),
        [MESSAGE_SLOTS + 1] = Py_NewRef(PyTuple_GET_ITEM(scanned, 3)),
        [MESSAGE_SLOTS + 2] = is_response ? NULL : Py_NewRef(Py_None),     /* Request._uri */
    };
    msg = instance_of(is_response ? &response_type : &request_type, values);
    Py_DECREF(scanned);
    return msg;
}

/* The first CRLF CRLF of [p, p + n), or NULL. */
static const char *
find_empty_line(const char *p, Py_ssize_t n)
{
    const char *end = p + n, *cr;
    while (end - p >= 4 && (cr = memchr(p, '\r', end - p - 3)) != NULL) {
        if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n')
            return cr;
        p = cr + 1;
    }
    return NULL;
}

/* The message at the start of [p, p + size) framed by its Content-Length, raw and body set
 * (raw is ``data`` itself when given and the message is all of it), or None: leading CRLFs, no
 * empty line, a head scan_head() does not take, a body shorter than Content-Length; and on a
 * stream (``stream``), no Content-Length. */
static PyObject *
framed_message(PyObject *module, PyObject *data, const char *p, Py_ssize_t size, PyObject *names, int stream)
{
    const char *empty_line;
    if ((size >= 2 && p[0] == '\r' && p[1] == '\n') || (empty_line = find_empty_line(p, size)) == NULL)
        Py_RETURN_NONE;
    Py_ssize_t head_end = empty_line - p, body_start = head_end + 4, end = size;
    PyObject *head = PyBytes_FromStringAndSize(p, head_end), *msg;
    if (head == NULL)
        return NULL;
    PyObject *pair[2] = {head, names};
    msg = head_message(module, pair, 2);
    Py_DECREF(head);
    if (msg == NULL || msg == Py_None)
        return msg;
    struct built_type *built = Py_IS_TYPE(msg, response_type.type) ? &response_type : &request_type;
    if (SLOT(msg, built, CL) != Py_None) {
        Py_ssize_t cl = PyLong_AsSsize_t(SLOT(msg, built, CL));
        if (cl == -1 && PyErr_Occurred()) {
            Py_DECREF(msg);
            return NULL;
        }
        if (cl > size - body_start) {           /* (the Python path says by how much, or waits) */
            Py_DECREF(msg);
            Py_RETURN_NONE;
        }
        end = body_start + cl;                  /* octets after it are not the message's */
    } else if (stream) {                        /* (mandatory on streams: the Python path says so) */
        Py_DECREF(msg);
        Py_RETURN_NONE;
    }
    PyObject *raw = data != NULL && end == size ? Py_NewRef(data) : PyBytes_FromStringAndSize(p, end);
    PyObject *body = PyBytes_FromStringAndSize(p + body_start, end - body_start);
    if (raw == NULL || body == NULL) {
        Py_XDECREF(raw);
        Py_XDECREF(body);
        Py_DECREF(msg);
        return NULL;
    }
    Py_SETREF(SLOT(msg, built, RAW), raw);
    Py_SETREF(SLOT(msg, built, BODY), body);
    return msg;
}

static int
framing_args(PyObject *const *args, Py_ssize_t nargs, const char *signature, Py_ssize_t *max_size)
{
    if (nargs != 3 || !PyDict_CheckExact(args[1]) || !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, signature);
        return -1;
    }
    *max_size = PyLong_AsSsize_t(args[2]);
    return *max_size == -1 && PyErr_Occurred() ? -1 : 0;
}

/* datagram_message(data, names, max_size) -> Request | Response | None: what
 * parser.parse_message() makes of a datagram, framed by its Content-Length (raw and body set),
 * when it is the plain common case; None for everything else (too large, and what
 * framed_message() leaves), which the Python path then judges. */
static PyObject *
datagram_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_size;
    if (framing_args(args, nargs, "datagram_message(data: bytes, names: dict, max_size: int)", &max_size) < 0)
        return NULL;
    if (!PyBytes_CheckExact(args[0]) || PyBytes_GET_SIZE(args[0]) > max_size)
        Py_RETURN_NONE;
    return framed_message(module, args[0], PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), args[1], 0);
}

/* stream_message(buffer, names, max_size) -> Request | Response | None: the first message of a
 * stream's buffer (a bytearray), as StreamParser frames it, when it is whole, within max_size
 * and the plain common case; None for everything else (a keep-alive, a message not all there
 * yet, too large, no Content-Length, a head scan_head() does not take), which the Python path
 * then judges. The buffer is left as it is: the caller removes len(raw) octets. */
static PyObject *
stream_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_size;
    if (framing_args(args, nargs, "stream_message(buffer: bytearray, names: dict, max_size: int)", &max_size) < 0)
        return NULL;
    if (!PyByteArray_CheckExact(args[0]))
        Py_RETURN_NONE;
    Py_ssize_t size = PyByteArray_GET_SIZE(args[0]);
    /* a message within max_size is within its first max_size octets: not found there, it is
     * not whole yet or too large */
    return framed_message(module, NULL, PyByteArray_AS_STRING(args[0]), size < max_size ? size : max_size,
                          args[1], 1);
}

/* -- serializing: the received header lines with the edits recorded on them --------------- */

/* Whether the Via parameter [seg, seg_end) (after its ";") is ``word``, with or without a
 * value, in any case, with SP/HT around the name (serialize._RECEIVED and _RPORT). */
static int
param_is(const char *seg, const char *seg_end, const char *word)
{
    size_t n = strlen(word);
    seg = skip_blanks(seg, seg_end);
    if ((size_t)(seg_end - seg) < n || !eq_ascii(seg, (Py_ssize_t)n, word))
        return 0;
    seg = skip_blanks(seg + n, seg_end);
    return seg == seg_end || *seg == '=';
}

typedef struct {        /* the octets of a header block being written */
    char *data;
    Py_ssize_t len, size;
} buffer;

static int
put(buffer *b, const char *p, Py_ssize_t n)
{
    if (b->len + n > b->size) {
        Py_ssize_t size = (b->len + n) * 2;
        char *data = PyMem_Realloc(b->data, size);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = data;
        b->size = size;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int
put_rport(buffer *b, long rport)
{
    char param[32];
    return put(b, param, snprintf(param, sizeof param, ";rport=%ld", rport));
}

/* The Via line ``line`` ("Via: value") with received=/rport= set, as serialize._with_params does
 * it (each replaces the first parameter of its name where it stands, else is added at the end),
 * into ``b``: 1 done, 0 not the common case (a quote, a folded line, a non-ASCII octet), -1 error. */
static int
put_via_with_params(buffer *b, const char *line, Py_ssize_t len, const char *received,
                    Py_ssize_t received_len, long rport)
{
    const char *end, *name_end, *value, *seg, *next;
    int received_done = received == NULL, rport_done = rport < 0;
    if (!split_line(line, len, &name_end, &value, &end))
        return 0;
    for (const char *c = value; c < end; c++)   /* a quote, a fold, or what Python's */
        if (*c == '"' || *c == '\r' || (unsigned char)*c >= 0x80)     /* case-insensitive match knows */
            return 0;
    if (put(b, line, name_end - line) < 0 || put(b, ": ", 2) < 0)
        return -1;
    seg = memchr(value, ';', end - value);
    if (put(b, value, (seg ? seg : end) - value) < 0)
        return -1;
    for (; seg != NULL; seg = next) {           /* each ";param" of the value */
        next = memchr(seg + 1, ';', end - seg - 1);
        const char *seg_end = next ? next : end;
        if (!received_done && param_is(seg + 1, seg_end, "received")) {
            received_done = 1;
            if (put(b, ";received=", 10) < 0 || put(b, received, received_len) < 0)
                return -1;
        } else if (!rport_done && param_is(seg + 1, seg_end, "rport")) {
            rport_done = 1;
            if (put_rport(b, rport) < 0)
                return -1;
        } else if (put(b, seg, seg_end - seg) < 0)
            return -1;
    }
    if (!received_done && (put(b, ";received=", 10) < 0 || put(b, received, received_len) < 0))
        return -1;
    if (!rport_done && put_rport(b, rport) < 0)
        return -1;
    return 1;
}

/* The Via line ``line`` ("Via: a, b, c") without its first value, as via_lines() writes it
 * ("Via: b, c": each value stripped, joined by ", "), into ``b``: 1 done, 0 not the common case
 * (not a plain list, a folded line), -1 error. */
static int
put_without_first_value(buffer *b, const char *line, Py_ssize_t len)
{
    const char *end, *name_end, *value, *next, *piece;
    Py_ssize_t piece_n;
    if (!split_line(line, len, &name_end, &value, &end))
        return 0;
    next = value;
    if (!plain_list(value, end - value) || !next_element(&next, end, &piece, &piece_n) || next == NULL)
        return 0;
    if (put(b, line, name_end - line) < 0 || put(b, ":", 1) < 0)
        return -1;
    for (int first = 1; next_element(&next, end, &piece, &piece_n); first = 0)
        if (put(b, first ? " " : ", ", first ? 1 : 2) < 0 || put(b, piece, piece_n) < 0)
            return -1;
    return 1;
}

/* Message.set_top_via_params()'s (received, rport) edit, ``params``: into *received (NULL: none)
 * and *rport (-1: none); 0 when not the common case (not ASCII, a number too large for C). */
static int
via_params_of(PyObject *params, const char **received, Py_ssize_t *received_len, long *rport)
{
    if (!PyTuple_CheckExact(params) || PyTuple_GET_SIZE(params) != 2)
        return 0;
    PyObject *r = PyTuple_GET_ITEM(params, 0), *p = PyTuple_GET_ITEM(params, 1);
    if (r != Py_None) {
        if (!PyUnicode_CheckExact(r) || !PyUnicode_IS_ASCII(r))
            return 0;
        *received = (const char *)PyUnicode_1BYTE_DATA(r);
        *received_len = PyUnicode_GET_LENGTH(r);
    }
    if (p != Py_None && (!PyLong_CheckExact(p) || (*rport = PyLong_AsLong(p)) < 0)) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* The header lines as serialize._edited_lines() gives them (joined by CRLF), for the common Via
 * edits on the first Via line that is not dropped: its first value removed (via_pop 1, no
 * params; the line goes when it holds one), or received=/rport= set on its one value (via_pop
 * 0), written into ``b``. args: lines, names, subst, drop, via_pop, via_params, their types
 * checked by the caller. 1 done, 0 anything else (the Python path does it), -1 error. */
static int
write_edited_block(buffer *b, PyObject *const *args)
{
    PyObject *lines, *names, *subst, *drop, *params;
    Py_ssize_t count, via = -1, pop, received_len = 0;
    const char *received = NULL;
    long rport = -1;
    int split = 0;      /* the first Via line holds several values */
    const Py_ssize_t begin = b->len;    /* (where the block starts in b) */

    lines = args[0], names = args[1], subst = args[2], drop = args[3], params = args[5];
    count = PyList_GET_SIZE(lines);
    if (PyList_GET_SIZE(names) != count || (pop = PyLong_AsSsize_t(args[4])) < 0 || pop > 1) {
        PyErr_Clear();          /* (a number too large for C: not the common case either) */
        return 0;
    }
    if (params != Py_None && (pop || !via_params_of(params, &received, &received_len, &rport)))
        return 0;
    if (pop || params != Py_None) {             /* the first Via line not dropped */
        for (Py_ssize_t i = 0; i < count && via < 0; i++) {
            PyObject *name = PyList_GET_ITEM(names, i);
            if (!PyUnicode_Check(name))
                return 0;
            if (is_name(name, "via")) {
                PyObject *index = PyLong_FromSsize_t(i);
                int dropped = index == NULL ? -1 : PySet_Contains(drop, index);
                Py_XDECREF(index);
                if (dropped < 0)
                    return -1;
                if (!dropped)
                    via = i;
            }
        }
        if (via < 0)
            return 0;
        PyObject *index = PyLong_FromSsize_t(via);      /* replaced: the Python path says whether */
        int replaced = index == NULL ? -1 : PyDict_Contains(subst, index);     /* its edit stands */
        Py_XDECREF(index);
        if (replaced < 0)
            return -1;
        if (replaced)
            return 0;
        PyObject *line = PyList_GET_ITEM(lines, via);
        if (!PyBytes_CheckExact(line))
            return 0;
        const char *text = PyBytes_AS_STRING(line), *colon = memchr(text, ':', PyBytes_GET_SIZE(line));
        if (colon == NULL)
            return 0;
        split = memchr(colon, ',', PyBytes_GET_SIZE(line) - (colon - text)) != NULL;
        if (split && !pop)
            return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *index = PyLong_FromSsize_t(i), *line;
        if (index == NULL)
            return -1;
        int dropped = PySet_Contains(drop, index);
        line = dropped ? NULL : PyDict_GetItemWithError(subst, index);     /* borrowed */
        Py_DECREF(index);
        if (dropped < 0 || (line == NULL && PyErr_Occurred()))
            return -1;
        int replaced = line != NULL;    /* (a replaced line beats a Via value edit) */
        if (dropped || (i == via && pop && !replaced && !split))
            continue;
        if (!replaced)
            line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_CheckExact(line))
            return 0;
        if (b->len > begin && put(b, "\r\n", 2) < 0)
            return -1;
        if (i == via && pop && !replaced) {     /* a line of several values: its first goes */
            Py_ssize_t before = b->len;
            int done = put_without_first_value(b, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line));
            if (done < 0)
                return -1;
            if (done == 0) {
                b->len = before;
                return 0;
            }
        } else if (i == via && !pop && !replaced) {
            Py_ssize_t before = b->len;
            int done = put_via_with_params(b, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), received,
                                           received_len, rport);
            if (done < 0)
                return -1;
            if (done == 0) {
                b->len = before;
                return 0;
            }
        } else if (put(b, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line)) < 0)
            return -1;
    }
    return 1;
}

static int
edited_block_args(PyObject *const *args)
{
    return PyList_CheckExact(args[0]) && PyList_CheckExact(args[1]) && PyDict_CheckExact(args[2]) &&
           PyAnySet_Check(args[3]) && PyLong_CheckExact(args[4]);
}

/* edited_block(lines, names, subst, drop, via_pop, via_params) -> bytes or None: see
 * write_edited_block(). */
static PyObject *
edited_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    buffer b = {NULL, 0, 0};
    PyObject *result = NULL;
    (void)module;
    if (nargs != 6 || !edited_block_args(args)) {
        PyErr_SetString(PyExc_TypeError, "edited_block(lines, names, subst, drop, via_pop, via_params)");
        return NULL;
    }
    int done = write_edited_block(&b, args);
    if (done > 0)
        result = PyBytes_FromStringAndSize(b.data ? b.data : "", b.len);
    else if (done == 0)
        result = Py_NewRef(Py_None);
    PyMem_Free(b.data);
    return result;
}

/* response_head(status_line, names, lines, via_params, to_tag) -> bytes or None: the head of
 * response.make_response()'s reply before its own header lines: ``status_line``, every Via
 * line of the request as received (the first with ``via_params``, Message.set_top_via_params()'s
 * edit, as write_edited_block() writes it), then its first From, To (with ";tag=" ``to_tag``
 * when that is not None), Call-ID and CSeq lines, joined by CRLF. None where the Python path
 * decides (a first Via line of several values to edit, an edit not the common case). */
static PyObject *
response_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const copied[] = {"from", "to", "call-id", "cseq"};
    PyObject *names, *lines, *params, *tag, *line, *result = NULL;
    const char *received = NULL;
    Py_ssize_t count, received_len = 0;
    long rport = -1;
    int edit;
    buffer b = {NULL, 0, 0};
    (void)module;
    if (nargs != 5 || !PyBytes_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
            !PyList_CheckExact(args[2]) || (args[4] != Py_None && !PyBytes_CheckExact(args[4]))) {
        PyErr_SetString(PyExc_TypeError, "response_head(status_line, names, lines, via_params, to_tag)");
        return NULL;
    }
    names = args[1], lines = args[2], params = args[3], tag = args[4];
    count = PyList_GET_SIZE(names);
    if (PyList_GET_SIZE(lines) != count ||
            (params != Py_None && !via_params_of(params, &received, &received_len, &rport)))
        Py_RETURN_NONE;
    edit = params != Py_None;
    if (put(&b, PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0])) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        if (!PyUnicode_Check(name) || !is_name(name, "via"))
            continue;
        line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_CheckExact(line) || put(&b, "\r\n", 2) < 0)
            goto fallback_or_error;
        const char *text = PyBytes_AS_STRING(line);
        Py_ssize_t len = PyBytes_GET_SIZE(line);
        if (edit) {         /* the top Via: its one value with received=/rport= */
            edit = 0;
            const char *colon = memchr(text, ':', len);
            if (colon == NULL || memchr(colon, ',', len - (colon - text)) != NULL)
                goto fallback_or_error;
            int done = put_via_with_params(&b, text, len, received, received_len, rport);
            if (done <= 0)
                goto fallback_or_error;
        } else if (put(&b, text, len) < 0)
            goto done;
    }
    if (edit)       /* no Via to edit: the Python path's error */
        goto fallback_or_error;
    for (int k = 0; k < 4; k++) {
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *name = PyList_GET_ITEM(names, i);
            if (!PyUnicode_Check(name) || !is_name(name, copied[k]))
                continue;
            line = PyList_GET_ITEM(lines, i);
            if (!PyBytes_CheckExact(line))
                goto fallback_or_error;
            const char *text = PyBytes_AS_STRING(line);
            Py_ssize_t len = PyBytes_GET_SIZE(line);
            if (k == 1 && tag != Py_None) {      /* To: the tag after the value, trailing SP/HT gone */
                while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
                    len--;
            }
            if (put(&b, "\r\n", 2) < 0 || put(&b, text, len) < 0)
                goto done;
            if (k == 1 && tag != Py_None &&
                    (put(&b, ";tag=", 5) < 0 || put(&b, PyBytes_AS_STRING(tag), PyBytes_GET_SIZE(tag)) < 0))
                goto done;
            break;
        }
    }
    result = PyBytes_FromStringAndSize(b.data, b.len);
    goto done;
fallback_or_error:
    if (!PyErr_Occurred())
        result = Py_NewRef(Py_None);
done:
    PyMem_Free(b.data);
    return result;
}

/* serialized(msg, top) -> bytes or None: what serialize.serialize() makes of a message whose
 * edits are the common ones of a forward (lines replaced or dropped, the Via edits
 * write_edited_block() takes), with ``top`` (bytes or None) above its first header line; None
 * for anything else (lines added, the Request-URI or the body changed, no Content-Length). */
static PyObject *
serialized(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "serialized(msg, top)");
        return NULL;
    }
    if (args[1] != Py_None && !PyBytes_CheckExact(args[1]))
        Py_RETURN_NONE;         /* (another bytes-like top: the Python path joins it) */
    PyObject *msg = args[0], *top = args[1] == Py_None ? NULL : args[1];
    struct built_type *built = Py_IS_TYPE(msg, request_type.type) ? &request_type :
                               Py_IS_TYPE(msg, response_type.type) ? &response_type : NULL;
    if (built == NULL || edits_type.type == NULL)
        Py_RETURN_NONE;
    PyObject *raw = SLOT(msg, built, RAW), *body = SLOT(msg, built, BODY), *start = SLOT(msg, built, START),
             *edits = SLOT(msg, built, EDITS), *cl = SLOT(msg, built, CL), *hstart = SLOT(msg, built, HSTART),
             *hend = SLOT(msg, built, HEND), *lines = SLOT(msg, built, LINES);
    if (raw == NULL || body == NULL || start == NULL || edits == NULL || cl == NULL || hstart == NULL ||
            hend == NULL || lines == NULL || cl == Py_None || !PyBytes_CheckExact(raw) ||
            !PyBytes_CheckExact(body) || !PyBytes_CheckExact(start) || !PyList_CheckExact(lines))
        Py_RETURN_NONE;
    if (edits == Py_None && top == NULL)
        return Py_NewRef(raw);
    PyObject *edit_args[6] = {NULL};
    if (edits != Py_None) {
        if (!Py_IS_TYPE(edits, edits_type.type))
            Py_RETURN_NONE;
        PyObject *added_top = SLOT(edits, &edits_type, E_TOP), *bottom = SLOT(edits, &edits_type, E_BOTTOM);
        if (added_top == NULL || bottom == NULL || !PyList_CheckExact(added_top) || !PyList_CheckExact(bottom) ||
                PyList_GET_SIZE(added_top) || PyList_GET_SIZE(bottom) ||
                SLOT(edits, &edits_type, E_BODY_CHANGED) != Py_False ||
                SLOT(edits, &edits_type, E_RURI_CHANGED) != Py_False)
            Py_RETURN_NONE;
        edit_args[0] = lines;
        edit_args[1] = SLOT(msg, built, NAMES);
        edit_args[2] = SLOT(edits, &edits_type, E_SUBST);
        edit_args[3] = SLOT(edits, &edits_type, E_DROP);
        edit_args[4] = SLOT(edits, &edits_type, E_VIA_POP);
        edit_args[5] = SLOT(edits, &edits_type, E_VIA_PARAMS);
        for (int i = 1; i < 6; i++)
            if (edit_args[i] == NULL)
                Py_RETURN_NONE;
        if (!edited_block_args(edit_args))
            Py_RETURN_NONE;
        long via_pop = PyLong_AsLong(edit_args[4]);
        if (via_pop == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (!PyDict_GET_SIZE(edit_args[2]) && !PySet_GET_SIZE(edit_args[3]) && via_pop == 0 &&
                edit_args[5] == Py_None)
            edit_args[0] = NULL;        /* no edit recorded after all: the block as received */
    }
    Py_ssize_t from = PyLong_CheckExact(hstart) ? PyLong_AsSsize_t(hstart) : -1,
               to = PyLong_CheckExact(hend) ? PyLong_AsSsize_t(hend) : -1;
    if (from < 0 || to < from || to > PyBytes_GET_SIZE(raw)) {
        PyErr_Clear();          /* (too large for C: not the common case either) */
        Py_RETURN_NONE;
    }
    buffer b = {NULL, 0, 0};
    PyObject *result = NULL;
    int done = 1;       /* 0: not the common case after all (None); a NULL result: an error */
    if (put(&b, PyBytes_AS_STRING(start), PyBytes_GET_SIZE(start)) < 0 ||
            (top != NULL && (put(&b, "\r\n", 2) < 0 || put(&b, PyBytes_AS_STRING(top), PyBytes_GET_SIZE(top)) < 0)))
        goto done;
    if (PyList_GET_SIZE(lines)) {
        Py_ssize_t before = b.len;
        if (put(&b, "\r\n", 2) < 0)
            goto done;
        if (edit_args[0] == NULL)
            done = put(&b, PyBytes_AS_STRING(raw) + from, to - from) < 0 ? -1 : 1;
        else if ((done = write_edited_block(&b, edit_args)) > 0 && b.len == before + 2)
            b.len = before;         /* every line dropped: no empty one for them */
        if (done <= 0)
            goto done;
    }
    if (put(&b, "\r\n\r\n", 4) < 0 || put(&b, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body)) < 0) {
        done = -1;
        goto done;
    }
    result = PyBytes_FromStringAndSize(b.data, b.len);
done:
    if (done == 0)
        result = Py_NewRef(Py_None);
    PyMem_Free(b.data);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_head", (PyCFunction)(void (*)(void))scan_head, METH_FASTCALL,
     "scan_head(head, names) -> (start, is_response, method|status, ruri|reason, names, lines, "
     "content_length) or None: see parser.parse_head."},
    {"sip_uri_parts", sip_uri_parts, METH_O,
     "sip_uri_parts(rest) -> (user, host, port, params) or None: uri._parse_sip's common case"},
    {"name_addr_parts", name_addr_parts, METH_O,
     "name_addr_parts(text) -> (display, scheme, uri_text, user, host, port, uri_params, params) or None: "
     "address.parse_name_addr's common case"},
    {"digest_params", digest_params, METH_O,
     "digest_params(rest) -> {name: value} or None: auth.digest's parameter loop, the common case"},
    {"response_head", (PyCFunction)(void (*)(void))response_head, METH_FASTCALL,
     "response_head(status_line, names, lines, via_params, to_tag) -> bytes or None"},
    {"edited_block", (PyCFunction)(void (*)(void))edited_block, METH_FASTCALL,
     "edited_block(lines, names, subst, drop, via_pop, via_params) -> bytes or None: see "
     "serialize._edited_lines."},
    {"head_message", (PyCFunction)(void (*)(void))head_message, METH_FASTCALL,
     "head_message(head, names) -> Request | Response | None: see parser.parse_head."},
    {"datagram_message", (PyCFunction)(void (*)(void))datagram_message, METH_FASTCALL,
     "datagram_message(data, names, max_size) -> Request | Response | None: see parser.parse_message."},
    {"stream_message", (PyCFunction)(void (*)(void))stream_message, METH_FASTCALL,
     "stream_message(buffer, names, max_size) -> Request | Response | None: see parser.StreamParser."},
    {"serialized", (PyCFunction)(void (*)(void))serialized, METH_FASTCALL,
     "serialized(msg, top) -> bytes or None: see serialize.serialize."},
    {"use_types", (PyCFunction)(void (*)(void))use_types, METH_FASTCALL,
     "use_types(Request, Response, Via, Edits): the classes head_message() builds, serialized() reads."},
    {"scan_via", scan_via, METH_O,
     "scan_via(text) -> (transport, host, port, params) or None: see via.parse_via."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *m)
{
    return PyModule_AddIntConstant(m, "API", SPEEDUPS_API);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Optional C accelerator of pyproxy.sip's parser.", 0,
    methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    for (const char *c = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"; *c; c++)
        token_chars[(unsigned char)*c] = 1;
    for (const char *c = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()"; *c; c++)
        uri_user_chars[(unsigned char)*c] = uri_param_chars[(unsigned char)*c] = 1;
    for (const char *c = "&=+$,;?/"; *c; c++)        /* grammar.FAST_SIP_URI's user */
        uri_user_chars[(unsigned char)*c] = 1;
    for (const char *c = "[]/:&+$"; *c; c++)         /* grammar._FAST_PCHAR */
        uri_param_chars[(unsigned char)*c] = 1;
    if (scheme_sip == NULL &&
        ((scheme_sip = PyUnicode_InternFromString("sip")) == NULL ||
         (scheme_sips = PyUnicode_InternFromString("sips")) == NULL))
        return NULL;
    if (key_top_via == NULL &&
        ((key_top_via = PyUnicode_InternFromString("top_via")) == NULL ||
         (key_second_via = PyUnicode_InternFromString("second_via")) == NULL ||
         (key_cseq = PyUnicode_InternFromString("cseq")) == NULL ||
         (key_max_forwards = PyUnicode_InternFromString("max-forwards")) == NULL ||
         (key_call_id_ok = PyUnicode_InternFromString("call-id-ok")) == NULL ||
         (key_head_ok = PyUnicode_InternFromString("head-ok")) == NULL ||
         (version_str = PyUnicode_InternFromString(VERSION)) == NULL))
        return NULL;
    return PyModuleDef_Init(&module);
}
