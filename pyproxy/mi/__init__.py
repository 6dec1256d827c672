"""The management interface: the "pyproxy: mi" process, its commands, and its two doors (OpenSER's
FIFO text protocol and a JSON-RPC 2.0 Unix socket)."""
