"""mysql: OpenSER's MySQL driver module, accepted and doing nothing (see _drivers.py)."""

from ._drivers import no_op_driver

EXPORTS = no_op_driver("mysql", "MySQL")
