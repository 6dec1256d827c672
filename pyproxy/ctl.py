"""The ``pyproxyctl`` command, pyproxy's counterpart of ``openserctl``: administration that runs
beside the server rather than in it.

Each command is one small ``_add_<name>`` function that declares its arguments and sets ``run``,
a function of the parsed arguments that returns the lines to print. Expected failures are
exceptions listed in `_FAILURES`: main prints them as ``pyproxyctl: message`` and exits 1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import ipaddress
import sys
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .certs import CertError, make_root_ca, make_user_cert
from .cli import DEFAULT_CONFIG
from .db import DEFAULT_URL, DatabaseError, connect, module_url, schema, subscribers
from .db.subscribers import SubscriberError
from .mi.client import DEFAULT_SOCKET, MIClientError, call_fifo, call_socket

DEFAULT_CA_DIR = "./tls/rootCA"



class CtlError(Exception):
    """A failure of the command line itself (an unreadable passphrase file, ...)."""


_FAILURES = (CertError, CtlError, MIClientError, DatabaseError, SubscriberError)


# --- argument types --------------------------------------------------------------------------

def _days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, found {text!r}")
    return int(text)


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


# --- passphrases -----------------------------------------------------------------------------

def _read_passphrase_file(path: str) -> bytes:
    """The first line of `path`, as ``openssl -passin file:`` reads it."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CtlError(f"{path}: cannot read the passphrase file: {e.strerror}") from None
    lines = data.splitlines()
    if not lines or not lines[0]:
        raise CtlError(f"{path}: the passphrase file is empty")
    return lines[0]


def _ask_passphrase(prompt: str, confirm: bool) -> bytes:
    first = getpass.getpass(prompt)
    if not first:
        raise CtlError("empty passphrase")
    if confirm and getpass.getpass("Again: ") != first:
        raise CtlError("the passphrases differ")
    return first.encode()


def _passphrase(file: str | None, ask: bool, prompt: str, confirm: bool) -> bytes | None:
    if file:
        return _read_passphrase_file(file)
    if ask:
        return _ask_passphrase(prompt, confirm)
    return None


# --- tls -------------------------------------------------------------------------------------

def _add_tls(commands) -> None:
    tls = commands.add_parser("tls", help="make TLS certificates (a root CA, host certificates)",
                              description="Make the TLS files of OpenSER's TLS manual, section 1.5.")
    sub = tls.add_subparsers(title="tls commands", metavar="COMMAND", required=True)
    _add_tls_root_ca(sub)
    _add_tls_user_cert(sub)


def _add_tls_root_ca(sub) -> None:
    p = sub.add_parser("rootCA", help="make a root CA (once for all the servers)",
                       description="Make a root CA: DIR/cacert.pem and DIR/private/cakey.pem. "
                                   "Refuses to overwrite existing files.")
    p.add_argument("dir", metavar="DIR", nargs="?", default=DEFAULT_CA_DIR,
                   help=f"where to write it (default {DEFAULT_CA_DIR})")
    p.add_argument("--cn", default="pyproxy root CA", help="the CA's common name")
    p.add_argument("--days", type=_days, default=3650, help="validity in days (default 3650)")
    p.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                   help="EC P-256 (default) or RSA 2048")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-file", metavar="FILE",
                        help="encrypt the CA key with the first line of FILE")
    secret.add_argument("--ask-passphrase", action="store_true",
                        help="encrypt the CA key with a passphrase read from the terminal")
    p.set_defaults(run=_run_root_ca)


def _run_root_ca(args) -> list[Path]:
    passphrase = _passphrase(args.passphrase_file, args.ask_passphrase,
                             "Passphrase for the new CA key: ", confirm=True)
    return list(make_root_ca(args.dir, common_name=args.cn, days=args.days,
                             passphrase=passphrase, key_type=args.key_type))


def _add_tls_user_cert(sub) -> None:
    p = sub.add_parser("userCERT", help="make a host's key and certificate, signed by the CA",
                       description="Make DIR/cert.pem, DIR/privkey.pem and DIR/calist.pem for the "
                                   "host NAME (a DNS name or an IP address), signed by the CA. "
                                   "Refuses to overwrite existing files.")
    p.add_argument("name", metavar="NAME", help="the host name the certificate is for")
    p.add_argument("dir", metavar="DIR", nargs="?", help="where to write it (default ./tls/NAME)")
    p.add_argument("--ca-dir", metavar="DIR", default=DEFAULT_CA_DIR,
                   help=f"the CA made by 'tls rootCA' (default {DEFAULT_CA_DIR})")
    p.add_argument("--ip", metavar="ADDR", type=_ip_address, action="append", default=[],
                   help="an IP address to name in the certificate too; may repeat")
    p.add_argument("--days", type=_days, default=825, help="validity in days (default 825)")
    p.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                   help="EC P-256 (default) or RSA 2048")
    p.add_argument("--server-only", action="store_true",
                   help="TLS server authentication only (default: server and client)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--ca-passphrase-file", metavar="FILE",
                        help="the CA key's passphrase is the first line of FILE")
    secret.add_argument("--ask-ca-passphrase", action="store_true",
                        help="read the CA key's passphrase from the terminal")
    p.set_defaults(run=_run_user_cert)


def _run_user_cert(args) -> list[Path]:
    passphrase = _passphrase(args.ca_passphrase_file, args.ask_ca_passphrase,
                             "Passphrase of the CA key: ", confirm=False)
    paths = make_user_cert(args.name, args.dir or Path("tls", args.name), ca_dir=args.ca_dir,
                           ca_passphrase=passphrase, days=args.days, ip_addresses=args.ip,
                           client_and_server=not args.server_only, key_type=args.key_type)
    return [paths["cert"], paths["key"], paths["calist"]]


# --- mi: the management interface of a running pyproxy ----------------------------------------

def _add_mi(commands) -> None:
    mi = commands.add_parser("mi", help="send a management command to a running pyproxy",
                             description="Run a management command (version, uptime, ps, which, "
                                         "get_statistics, tls_list, tls_reload) in a running pyproxy.")
    door = mi.add_mutually_exclusive_group()
    door.add_argument("-s", "--socket", default=DEFAULT_SOCKET,
                      help=f"its mi_socket (JSON-RPC; default {DEFAULT_SOCKET})")
    door.add_argument("-f", "--fifo", help="use its FIFO (OpenSER's text protocol) instead")
    mi.add_argument("name", metavar="CMD")
    mi.add_argument("params", metavar="ARG", nargs="*")
    mi.set_defaults(run=_run_mi)


def _run_mi(args) -> list[str]:
    if args.fifo:
        return [call_fifo(args.fifo, args.name, args.params)]
    return [json.dumps(call_socket(args.socket, args.name, args.params), indent=2)]


# --- the database: tables and subscribers ----------------------------------------------------
# The database is the one the config given with -f uses (auth_db's db_url, else uri_db's, else
# usrloc's, else the default), or --db-url.

DB_MODULES = ("auth_db", "uri_db", "usrloc")


def _config(args):
    from .config.errors import ConfigErrors
    from .assembly.loader import load_config
    try:
        return load_config(args.config)
    except ConfigErrors as e:
        raise CtlError(f"{args.config}: cannot find the database in it:\n" + str(e)) from None


def _database(args):
    if args.db_url:
        return connect(args.db_url)
    config = _config(args)
    module = next((m for m in DB_MODULES if config.modparams.get(m, {}).get("db_url")), None)
    return connect(module_url(config, module) if module else DEFAULT_URL)


@contextmanager
def _opened(args):
    """The database, closed when the command is done with it."""
    db = _database(args)
    try:
        yield db
    finally:
        db.close()


def _user_and_domain(args, text: str) -> tuple[str, str]:
    """USER@DOMAIN, or USER in the config's only domain (its one alias)."""
    user, at, domain = text.partition("@")
    if at:
        return user, domain
    if args.db_url:
        raise CtlError(f"give the user as {text}@DOMAIN (with --db-url there is no config to name the domain)")
    aliases = sorted({a.host for a in _config(args).settings.alias})
    if len(aliases) != 1:
        named = f"{len(aliases)}: {', '.join(aliases)}" if aliases else "none"
        raise CtlError(f"give the user as {text}@DOMAIN: {args.config} names {named} (alias=) "
                       f"where one would be the default")
    return user, aliases[0]


def _add_db(commands) -> None:
    db = commands.add_parser("db", help="the database: create its tables",
                             description="Create the tables pyproxy uses (subscriber, location, uri, "
                                         "version) on the configured database, leaving existing ones.")
    sub = db.add_subparsers(title="db commands", metavar="COMMAND", required=True)
    init = sub.add_parser("init", help="create the missing tables")
    init.set_defaults(run=_run_db_init)


def _run_db_init(args) -> list[str]:
    with _opened(args) as db:
        made = []
        for table in schema.TABLES:
            made += schema.create(db, [table])
            print(f"  {table}: {'created' if table in made else 'exists'}", file=sys.stderr)
    return [f"{db.url}: {len(made)} table(s) created" + (f": {', '.join(made)}" if made else "")]


def _add_subscribers(commands) -> None:
    add = commands.add_parser("add", help="add a subscriber (a user who may register and call)",
                              description="Add USER (alice, in the config's domain, or alice@domain) with "
                                          "PASSWORD; or every line 'USER PASSWORD [EMAIL]' of --file.")
    add.add_argument("user", metavar="USER", nargs="?")
    add.add_argument("password", metavar="PASSWORD", nargs="?")
    add.add_argument("--email", default="", help="the user's e-mail address")
    add.add_argument("--file", metavar="FILE", help="add the users listed in FILE ('-': standard input)")
    add.set_defaults(run=_run_add)
    passwd = commands.add_parser("passwd", help="change a subscriber's password")
    passwd.add_argument("user", metavar="USER")
    passwd.add_argument("password", metavar="PASSWORD")
    passwd.set_defaults(run=_run_passwd)
    rm = commands.add_parser("rm", help="remove a subscriber")
    rm.add_argument("user", metavar="USER")
    rm.set_defaults(run=_run_rm)


def _run_add(args) -> list[str]:
    if args.file:
        return _add_file(args)
    if not (args.user and args.password):
        raise CtlError("add needs USER PASSWORD (or --file FILE)")
    user, domain = _user_and_domain(args, args.user)
    with _opened(args) as db:
        schema.require(db, ["subscriber"])
        subscribers.add(db, user, domain, args.password, args.email)
    return [f"{user}@{domain} added"]


def _add_file(args) -> list[str]:
    source = sys.stdin if args.file == "-" else _open(args.file)
    lines = [(n, line.split()) for n, line in enumerate(source, 1) if line.strip() and not line.startswith("#")]
    added = 0
    with _opened(args) as db:
        schema.require(db, ["subscriber"])
        for done, (n, fields) in enumerate(lines, 1):
            if len(fields) not in (2, 3):
                raise CtlError(f"{args.file}:{n}: expected 'USER PASSWORD [EMAIL]'")
            user, domain = _user_and_domain(args, fields[0])
            try:
                subscribers.add(db, user, domain, fields[1], fields[2] if len(fields) == 3 else "")
            except SubscriberError as e:
                raise CtlError(f"{args.file}:{n}: {e} ({added} added before it)") from None
            added += 1
            if done % 500 == 0 or done == len(lines):
                print(f"\r  {done}/{len(lines)} users", end="" if done < len(lines) else "\n", file=sys.stderr)
    return [f"{added} subscriber(s) added"]


def _open(path: str):
    try:
        return open(path, encoding="utf-8")
    except OSError as e:
        raise CtlError(f"{path}: {e.strerror}") from None


def _run_passwd(args) -> list[str]:
    user, domain = _user_and_domain(args, args.user)
    with _opened(args) as db:
        subscribers.set_password(db, user, domain, args.password)
    return [f"password of {user}@{domain} changed"]


def _run_rm(args) -> list[str]:
    user, domain = _user_and_domain(args, args.user)
    with _opened(args) as db:
        subscribers.remove(db, user, domain)
    return [f"{user}@{domain} removed"]


# --- ul: the registrations of a running pyproxy (through its management socket) --------------

def _add_ul(commands) -> None:
    ul = commands.add_parser("ul", help="show or remove registrations in a running pyproxy",
                             description="The location service of a running pyproxy, through its mi_socket.")
    ul.add_argument("-s", "--socket", default=DEFAULT_SOCKET, help=f"its mi_socket (default {DEFAULT_SOCKET})")
    sub = ul.add_subparsers(title="ul commands", metavar="COMMAND", required=True)
    show = sub.add_parser("show", help="every registration, or one address of record's")
    show.add_argument("aor", metavar="AOR", nargs="?", help="USER or USER@DOMAIN")
    show.set_defaults(run=_run_ul_show)
    rm = sub.add_parser("rm", help="remove every contact of an address of record")
    rm.add_argument("aor", metavar="AOR")
    rm.set_defaults(run=_run_ul_rm)


def _run_ul_show(args) -> list[str]:
    if args.aor:
        table = {args.aor: call_socket(args.socket, "ul_show_contact", [args.aor])}
    else:
        table = call_socket(args.socket, "ul_dump", [])
    lines = []
    for aor, contacts in table.items():
        lines.append(f"{aor}: {len(contacts)} contact(s)")
        lines += [f"  <{c['contact']}>;expires={c['expires']};q={c['q']:g}  from {c['received']} on "
                  f"{c['socket']}" + (f"  {c['user_agent']}" if c["user_agent"] else "") for c in contacts]
    return lines or ["no registrations"]


def _run_ul_rm(args) -> list[str]:
    removed = call_socket(args.socket, "ul_rm", [args.aor])["removed"]
    return [f"{args.aor}: {removed} contact(s) removed"]


# --- service: pyproxy as a systemd service (pyproxy/service.py) ------------------------------

def _add_service(commands) -> None:
    from . import service
    p = commands.add_parser("service", help="install pyproxy as a systemd service",
                            description="Lay pyproxy out as a systemd service.")
    sub = p.add_subparsers(title="service commands", metavar="COMMAND", required=True)
    install = sub.add_parser("install", help=f"write {service.CONFIG} (unless it exists) and {service.UNIT}, "
                                              f"create the {service.USER} user",
                             description="Write the shipped config (mi_socket in /run/pyproxy) unless it "
                                         "exists and the unit, its ExecStart naming this Python's pyproxy; "
                                         "create the pyproxy system user (as root).")
    install.add_argument("--root", metavar="DIR", default="/", help="install under DIR (packagers, tests)")
    install.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    install.set_defaults(run=service.run_install)


# --- the command -----------------------------------------------------------------------------

COMMANDS = (_add_tls, _add_mi, _add_db, _add_subscribers, _add_ul, _add_service)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyproxyctl",
                                description="Administration of pyproxy, like openserctl.")
    p.add_argument("-V", "--version", action="version", version=f"pyproxyctl {__version__}")
    p.add_argument("-f", dest="config", metavar="FILE", default=DEFAULT_CONFIG,
                   help=f"the pyproxy config that names the database (default {DEFAULT_CONFIG})")
    p.add_argument("--db-url", metavar="URL", help="the database, instead of the config's "
                                                    "(sqlite:///path, postgres://..., mysql://...)")
    commands = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(commands)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lines = args.run(args)
    except _FAILURES as e:
        print(f"pyproxyctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
