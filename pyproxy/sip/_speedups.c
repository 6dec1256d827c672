/* Optional accelerator of pyproxy's SIP parser (pyproxy/sip/accel.py loads it).
 *
 * scan_head() does in one pass what parser.parse_head() does in several Python steps for a
 * well-formed head: split the start line and the header lines, check that no bare CR or LF is
 * left, find each header's canonical name in the parser's cache, read Content-Length and split
 * the start line. It never decides that a message is bad: for anything unusual (a folded line,
 * a header name the cache has not learnt, a bare CR, a second Content-Length, another SIP
 * version, a malformed start line) it returns None, and the pure-Python path, the reference,
 * parses the head and gives the verdict. So both paths answer alike by construction; the tests
 * run the conformance corpus through both and compare.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define VERSION "SIP/2.0"
#define VERSION_LEN 7

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

/* Content-Length's value: digits between optional SP/HT; -1 when it is anything else. */
static long
content_length(const char *line, Py_ssize_t len)
{
    const char *colon = memchr(line, ':', len), *end = line + len, *p;
    long value = 0;
    Py_ssize_t digits;
    if (colon == NULL)
        return -1;
    p = colon + 1;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    digits = end - p;
    if (digits == 0)
        return -1;
    for (const char *d = p; d < end; d++)
        if (*d < '0' || *d > '9')
            return -1;
    if (digits > 9)                 /* no message can match it: as the Python path, 10**9 */
        return 1000000000L;
    for (; p < end; p++)
        value = value * 10 + (*p - '0');
    return value;
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
        return Py_BuildValue("(OlN)", Py_True, status, reason);
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
    return Py_BuildValue("(ONN)", Py_False, method, ruri);
}

/* scan_head(head: bytes, names: dict[bytes, str]) -> (start, is_response, a, b, names, lines,
 * content_length) or None. ``names`` maps the octets before a header line's ":" to its
 * canonical name (headers._by_bytes). */
static PyObject *
scan_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *head, *known, *names = NULL, *lines = NULL, *start = NULL, *parts = NULL;
    PyObject *result = NULL;
    const char *p, *end, *eol, *colon;
    Py_ssize_t n;
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
    if ((start = PyBytes_FromStringAndSize(p, eol - p)) == NULL ||
        (names = PyList_New(0)) == NULL || (lines = PyList_New(0)) == NULL)
        goto done;
    for (p = eol + 2; p < end + 2 && eol < end; p = eol + 2) {
        eol = memchr(p, '\r', end - p);
        if (eol == NULL)
            eol = end;
        colon = memchr(p, ':', eol - p);
        if (colon == NULL)
            goto fallback;
        PyObject *raw = PyBytes_FromStringAndSize(p, colon - p);
        if (raw == NULL)
            goto done;
        PyObject *name = PyDict_GetItemWithError(known, raw);    /* borrowed */
        Py_DECREF(raw);
        if (name == NULL) {
            if (PyErr_Occurred())
                goto done;
            goto fallback;      /* folded, unknown or garbage: the careful Python loop */
        }
        if (is_content_length(name)) {
            if (cl != -2)
                goto fallback;
            if ((cl = content_length(p, eol - p)) < 0)
                goto fallback;
        }
        PyObject *line = PyBytes_FromStringAndSize(p, eol - p);
        if (line == NULL || PyList_Append(names, name) < 0 || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            goto done;
        }
        Py_DECREF(line);
    }
    if (cl == -2)
        result = Py_BuildValue("(NOOOOOO)", start, PyTuple_GET_ITEM(parts, 0),
                               PyTuple_GET_ITEM(parts, 1), PyTuple_GET_ITEM(parts, 2), names,
                               lines, Py_None);
    else
        result = Py_BuildValue("(NOOOOOl)", start, PyTuple_GET_ITEM(parts, 0),
                               PyTuple_GET_ITEM(parts, 1), PyTuple_GET_ITEM(parts, 2), names,
                               lines, cl);
    start = NULL;   /* stolen by "N" */
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

static PyMethodDef methods[] = {
    {"scan_head", (PyCFunction)(void (*)(void))scan_head, METH_FASTCALL,
     "scan_head(head, names) -> (start, is_response, method|status, ruri|reason, names, lines, "
     "content_length) or None: see parser.parse_head."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Optional C accelerator of pyproxy.sip's parser.", 0,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&module);
}
