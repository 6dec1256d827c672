"""mysql: accepted so that OpenSER configs load unchanged, and does nothing.

OpenSER loaded a database driver as a module; pyproxy chooses the driver from each module's
db_url (mysql://... uses PyMySQL, postgres://... psycopg, sqlite:///... the embedded SQLite).
"""

from __future__ import annotations

import logging

from ..script.exports import ModuleExports


def mod_init(config) -> None:
    logging.getLogger("pyproxy").info("module mysql: nothing to load; the database driver is chosen by "
                                      "each module's db_url")


EXPORTS = ModuleExports(name="mysql", doc="OpenSER's MySQL driver module: a no-op (see db_url).", mod_init=mod_init)
