"""The subscriber table: users, their passwords and the HA1 digests auth_db checks against.

OpenSER's columns: ``password`` (auth_db's calculate_ha1=1 reads it), ``ha1`` = MD5(user:realm:
password) and ``ha1b`` = MD5(user@domain:realm:password) (calculate_ha1=0); pyproxy adds
``ha1_sha256`` for RFC 7616's SHA-256. The realm is the user's domain, as openserctl made it.
The clear-text password is kept only when asked (``keep_password``: a calculate_ha1=1 setup
needs it); else its column stays empty, and a stolen table gives digests, not passwords.
"""

from __future__ import annotations

import hashlib
import re

from . import Database, DatabaseError

USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64}")     # RFC 3261's user, unreserved and escaped
DOMAIN = re.compile(r"[A-Za-z0-9\-.\[\]:]{1,64}")


class SubscriberError(Exception):
    """A refused change: the text says why (no such user, already there, a bad name)."""


def digests(user: str, domain: str, password: str) -> tuple[str, str, str]:
    """(ha1, ha1b, ha1_sha256) for ``user`` in the realm ``domain``."""
    def md5(text):
        return hashlib.md5(text.encode("utf-8")).hexdigest()
    return (md5(f"{user}:{domain}:{password}"), md5(f"{user}@{domain}:{domain}:{password}"),
            hashlib.sha256(f"{user}:{domain}:{password}".encode()).hexdigest())


def check_names(user: str, domain: str, password: str | None = None) -> None:
    if not USER.fullmatch(user):
        raise SubscriberError(f"'{user}' is not a SIP user name (1 to 64 characters of RFC 3261's user part)")
    if not DOMAIN.fullmatch(domain):
        raise SubscriberError(f"'{domain}' is not a domain name")
    if password is not None and not 1 <= len(password) <= 64:
        raise SubscriberError("the password must be 1 to 64 characters long")


def add(db: Database, user: str, domain: str, password: str, email: str = "", keep_password: bool = False) -> None:
    check_names(user, domain, password)
    with db.transaction():
        if db.query("SELECT 1 FROM subscriber WHERE username = ? AND domain = ?", (user, domain)):
            raise SubscriberError(f"{user}@{domain} exists already (use passwd to change the password)")
        db.execute("INSERT INTO subscriber (username, domain, password, email_address, ha1, ha1b, ha1_sha256) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (user, domain, password if keep_password else "", email,
                                                     *digests(user, domain, password)))


def set_password(db: Database, user: str, domain: str, password: str, keep_password: bool = False) -> None:
    check_names(user, domain, password)
    changed = db.execute("UPDATE subscriber SET password = ?, ha1 = ?, ha1b = ?, ha1_sha256 = ? "
                         "WHERE username = ? AND domain = ?",
                         (password if keep_password else "", *digests(user, domain, password), user, domain))
    if not changed:
        raise SubscriberError(f"no subscriber {user}@{domain}")


def remove(db: Database, user: str, domain: str) -> None:
    check_names(user, domain)
    if not db.execute("DELETE FROM subscriber WHERE username = ? AND domain = ?", (user, domain)):
        raise SubscriberError(f"no subscriber {user}@{domain}")


def listing(db: Database) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in db.query("SELECT username, domain, email_address FROM subscriber "
                                        "ORDER BY domain, username")]


__all__ = ["DatabaseError", "SubscriberError", "add", "digests", "listing", "remove", "set_password"]
