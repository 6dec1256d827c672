"""OpenSER's database driver modules (mysql, postgres): accepted so that OpenSER configs load
unchanged, and doing nothing. OpenSER loaded a driver as a module; pyproxy picks the driver from
each module's db_url (mysql://... uses PyMySQL, postgres://... psycopg, sqlite:///... SQLite)."""

from __future__ import annotations

import logging

from ..script.exports import ModuleExports


def no_op_driver(name: str, database: str) -> ModuleExports:
    def mod_init(config) -> None:
        logging.getLogger("pyproxy").info(f"module {name}: nothing to load; the database driver is chosen "
                                          f"by each module's db_url")
    return ModuleExports(name=name, doc=f"OpenSER's {database} driver module: a no-op (see db_url).",
                         mod_init=mod_init)
