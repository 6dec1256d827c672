"""pyproxy: a scriptable, multi-process SIP proxy and registrar with first-class TLS."""

__version__ = "0.1.0"
