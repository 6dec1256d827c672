"""Log lines stay valid UTF-8 whatever a peer sent (the syslog handler encodes them)."""

import logging
import logging.handlers
import socket

from pyproxy.kernel.logs import SafeFormatter


def test_a_peers_non_utf8_bytes_do_not_cost_the_log_line():
    text = b"From: <sip:jos\xe9@example.com>".decode("utf-8", "surrogateescape")   # as headers are read
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        handler = logging.handlers.SysLogHandler(address=receiver.getsockname())
        handler.setFormatter(SafeFormatter("%(message)s"))
        handler.handleError = lambda record: (_ for _ in ()).throw(AssertionError("the line was lost"))
        handler.emit(logging.LogRecord("pyproxy", logging.WARNING, __file__, 1, text, None, None))
        handler.close()
        assert b"jos\\udce9@example.com" in receiver.recv(4096)
