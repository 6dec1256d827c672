"""pyproxy: a scriptable, multi-process SIP proxy with first-class TLS."""

__version__ = "0.1.0"
