"""postgres: OpenSER's PostgreSQL driver module, accepted and doing nothing (see _drivers.py)."""

from ._drivers import no_op_driver

EXPORTS = no_op_driver("postgres", "PostgreSQL")
