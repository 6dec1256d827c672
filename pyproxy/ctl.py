"""The ``pyproxyctl`` command, pyproxy's counterpart of ``openserctl``: administration that runs
beside the server rather than in it.

Each command is one small ``_add_<name>`` function that declares its arguments and sets ``run``,
a function of the parsed arguments that returns the lines to print, or an `Output` (data for
``--json`` and lines for a person). Expected failures are exceptions listed in `_FAILURES`: main
prints them as ``pyproxyctl: message`` and exits with the status scripts rely on (`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import ipaddress
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .certs import CA_CERT, CA_KEY, ROOT_CA, CertError, ca_dir_in, make_root_ca, make_user_cert, user_dir_in
from .cli import DEFAULT_CONFIG
from .db import DEFAULT_URL, DatabaseError, connect, module_url, schema, subscribers
from .db.subscribers import SubscriberError
from .mi.client import DEFAULT_SOCKET, MIClientError, MIUnreachable, call_fifo, call_socket

DEFAULT_TLS_DIR = "./tls"       # openserctl's was ETCDIR/tls: the CA in rootCA/, each host beside it

# Exit statuses (documented in --help): what a script can tell apart.
OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3
EXIT_CODES = """\
exit status:
  0  success
  1  the command failed (pyproxy answered with an error, a check found errors, ...)
  2  usage error (unknown command or option, bad argument)
  3  pyproxy could not be reached (no management socket or FIFO, connection refused, no answer)
"""


class CtlError(Exception):
    """A failure of the command line itself (an unreadable passphrase file, ...)."""


class UsageError(CtlError):
    """Arguments that do not fit together (exit 2, as argparse's own usage errors)."""


@dataclass
class Output:
    """What a command prints: ``data`` with --json, else ``lines``; ``failed`` exits 1 all the same
    (a check that ran and found errors)."""
    data: object
    lines: list[str] = field(default_factory=list)
    failed: bool = False


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
    tls = commands.add_parser("tls", help="make TLS certificates (a root CA, host certificates), check a config's",
                              description="Make the TLS files of OpenSER's TLS manual, section 1.5, as "
                                          "openserctl did: 'tls rootCA DIR' then 'tls userCERT NAME DIR' "
                                          "(the same DIR) make DIR/rootCA and DIR/NAME. 'tls check' looks "
                                          "at every TLS domain of the config given with -f.")
    sub = tls.add_subparsers(title="tls commands", metavar="COMMAND", required=True)
    _add_tls_root_ca(sub)
    _add_tls_user_cert(sub)
    _add_tls_check(sub)


def _add_tls_root_ca(sub) -> None:
    p = sub.add_parser("rootCA", help="make a root CA (once for all the servers)",
                       description="Make a root CA: DIR/rootCA/cacert.pem and DIR/rootCA/private/cakey.pem "
                                   "(--ca-dir: in that directory itself). Refuses to overwrite existing files.")
    p.add_argument("dir", metavar="DIR", nargs="?", default=DEFAULT_TLS_DIR,
                   help=f"the TLS directory: the CA goes in DIR/{ROOT_CA} (default {DEFAULT_TLS_DIR})")
    p.add_argument("--ca-dir", metavar="CADIR", help="put the CA in CADIR itself instead")
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
    if not args.ca_dir and Path(args.dir).name == ROOT_CA:      # a CA directory given the old way?
        print(f"pyproxyctl: note: the CA goes in {ca_dir_in(args.dir)} (DIR is the TLS directory, as "
              f"with openserctl); --ca-dir {args.dir} puts it in {args.dir} itself", file=sys.stderr)
    passphrase = _passphrase(args.passphrase_file, args.ask_passphrase,
                             "Passphrase for the new CA key: ", confirm=True)
    return list(make_root_ca(args.ca_dir or ca_dir_in(args.dir), common_name=args.cn, days=args.days,
                             passphrase=passphrase, key_type=args.key_type))


def _add_tls_user_cert(sub) -> None:
    p = sub.add_parser("userCERT", help="make a host's key and certificate, signed by the CA",
                       description="Make DIR/NAME/cert.pem, privkey.pem and calist.pem for the host NAME "
                                   f"(a DNS name or an IP address), signed by the CA in DIR/{ROOT_CA} "
                                   "(made by 'tls rootCA DIR'). Refuses to overwrite existing files.")
    p.add_argument("name", metavar="NAME", help="the host name the certificate is for")
    p.add_argument("dir", metavar="DIR", nargs="?", default=DEFAULT_TLS_DIR,
                   help=f"the TLS directory: the CA in DIR/{ROOT_CA}, the files go in DIR/NAME "
                        f"(default {DEFAULT_TLS_DIR})")
    p.add_argument("--ca-dir", metavar="CADIR", help=f"the CA's own directory, instead of DIR/{ROOT_CA}")
    p.add_argument("--out", metavar="OUTDIR", help="write the files in OUTDIR itself, instead of DIR/NAME")
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
    ca_dir = Path(args.ca_dir) if args.ca_dir else ca_dir_in(args.dir)
    if not ca_dir.is_dir():
        make = f"pyproxyctl tls rootCA --ca-dir {ca_dir}" if args.ca_dir else f"pyproxyctl tls rootCA {args.dir}"
        raise CtlError(f"no CA in {ca_dir} (looked for {ca_dir / CA_CERT} and {ca_dir / CA_KEY}): make it "
                       f"with '{make}'" + ("" if args.ca_dir else ", or name another with --ca-dir"))
    if not args.out and Path(args.dir).name == args.name:       # a host directory given the old way?
        print(f"pyproxyctl: note: the files go in {user_dir_in(args.dir, args.name)} (DIR is the TLS "
              f"directory, as with openserctl); --out {args.dir} puts them in {args.dir} itself", file=sys.stderr)
    passphrase = _passphrase(args.ca_passphrase_file, args.ask_ca_passphrase,
                             "Passphrase of the CA key: ", confirm=False)
    paths = make_user_cert(args.name, args.out or user_dir_in(args.dir, args.name), ca_dir=ca_dir,
                           ca_passphrase=passphrase, days=args.days, ip_addresses=args.ip,
                           client_and_server=not args.server_only, key_type=args.key_type)
    return [paths["cert"], paths["key"], paths["calist"]]


def _add_tls_check(sub) -> None:
    p = sub.add_parser("check", help="check every TLS domain of the config (-f) before a start",
                       description="A preflight of every TLS domain of the config given with -f: what the "
                                   "start would refuse (missing, unreadable or encrypted files, a key that "
                                   "does not match its certificate, a key group or others can read), the "
                                   "chain against the CA list, the days each certificate has left (a "
                                   "warning under 30), and whether the run user (user=, when started as "
                                   "root) can read every file. One line per finding; exit status 1 when "
                                   "there are errors.")
    _json_flag(p)
    p.set_defaults(run=_run_tls_check)


def _run_tls_check(args) -> Output:
    from .kernel.process import run_as
    from .tls.preflight import Finding, Severity, check
    config = _config(args)
    s = config.settings
    findings, ids = [], None
    try:
        ids = run_as(s.user, s.group)
    except KeyError as e:
        findings.append(Finding(Severity.ERROR, f"user={s.user} group={s.group}: no such user or group: {e}"))
    if ids is not None and os.geteuid() != 0:       # only root starts as one user and runs as another
        findings.append(Finding(Severity.OK, f"not root: the files were read as uid {os.geteuid()}, not as "
                                             f"the run user (user={s.user})"))
        ids = None
    if ids is not None:
        ids = (os.getuid() if ids[0] == -1 else ids[0], os.getgid() if ids[1] == -1 else ids[1])
    findings += check(s, config.tls_domains, config.cfg_dir, run_as=ids)
    count = {level: sum(f.severity is level for f in findings) for level in Severity}
    return Output([{"severity": f.severity.value, "text": f.text} for f in findings],
                  [str(f) for f in findings] + [f"{args.config}: {count[Severity.ERROR]} error(s), "
                                                f"{count[Severity.WARNING]} warning(s)"],
                  failed=count[Severity.ERROR] > 0)


# --- mi: the management interface of a running pyproxy ----------------------------------------
# The socket is -s, else the mi_socket= of the config given with -f (when it loads), else the
# built-in default.

def _json_flag(p) -> None:
    """--json after the command too (``pyproxyctl ps --json``); SUPPRESS keeps the global one's value."""
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def _socket_flag(p) -> None:
    p.add_argument("-s", "--socket", help="its mi_socket (default: the mi_socket of the config given with -f, "
                                          f"else {DEFAULT_SOCKET})")


def _socket(args) -> str:
    """-s, else the config's mi_socket; the built-in default only when there is no config at the
    default path (a config that does not load is said, not guessed past: under systemd the
    socket is elsewhere, and "not running" would mislead)."""
    if args.socket:
        return args.socket
    if args.config == DEFAULT_CONFIG and not os.path.exists(args.config):
        return DEFAULT_SOCKET
    return _config(args).settings.mi_socket or DEFAULT_SOCKET


def _call(args, command: str, params: list[str] | None = None):
    return call_socket(_socket(args), command, params or [], timeout=args.timeout)


def _add_mi(commands) -> None:
    mi = commands.add_parser("mi", help="send a management command to a running pyproxy",
                             description="Run a management command in a running pyproxy and print its "
                                         "JSON result; without CMD, list the commands (which).")
    door = mi.add_mutually_exclusive_group()
    _socket_flag(door)
    door.add_argument("-f", "--fifo", help="use its FIFO (OpenSER's text protocol) instead")
    mi.add_argument("name", metavar="CMD", nargs="?", help="the command (default: which, the list)")
    mi.add_argument("params", metavar="ARG", nargs="*")
    _json_flag(mi)
    mi.set_defaults(run=_run_mi)


def _run_mi(args):
    if args.fifo:
        text = call_fifo(args.fifo, args.name or "which", args.params, timeout=args.timeout)
        if not text.startswith("200 "):
            raise MIClientError(text)
        return [text]
    if args.name is None:
        names = _call(args, "which")
        return Output(names, names)
    return Output(_call(args, args.name, args.params))


# --- the operator's everyday commands, through the management socket ---------------------------

def _add_ops(commands) -> None:
    for name, text, run in (("ps", "every pyproxy process: pid, role, memory", _run_ps),
                            ("uptime", "since when pyproxy runs", _run_uptime),
                            ("stats", "the statistics of every process, and their totals", _run_stats),
                            ("reload", "re-read the configuration (SIGHUP to the master)", _run_reload),
                            ("shutdown", "stop pyproxy (SIGTERM to the master)", _run_shutdown)):
        p = commands.add_parser(name, help=text, description=f"A running pyproxy's {name}: {text}.")
        _socket_flag(p)
        _json_flag(p)
        p.set_defaults(run=run)
    p = commands.add_parser("debug", help="show or set the log level of every process",
                            description="Without LEVEL, the log level in force; with it, set it in every "
                                        "process at once (OpenSER's scale: -3 alert, -1 error, 1 warning, "
                                        "2 notice, 3 info, 4 debug).")
    p.add_argument("level", metavar="LEVEL", nargs="?", type=int)
    _socket_flag(p)
    _json_flag(p)
    p.set_defaults(run=_run_debug)


def _run_ps(args) -> Output:
    procs = _call(args, "ps")
    return Output(procs, [f"{'PID':>8}  {'RSS':>9}  ROLE"] +
                  [f"{p['pid']:>8}  {p['rss_kib']:>6} KiB  {p['role']}" for p in procs])


def _run_uptime(args) -> Output:
    up = _call(args, "uptime")
    return Output(up, [f"up {_duration(up['uptime'])}, since {up['up_since']}"])


def _duration(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    text = f"{rest // 3600:d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days} day(s) {text}" if days else text


def _run_stats(args) -> Output:
    stats = _call(args, "get_statistics")
    processes = list(stats)
    names = list(dict.fromkeys(name for counters in stats.values() for name in counters))
    head = ["counter", "total", *processes]
    rows = [[name, str(sum(stats[p].get(name, 0) for p in processes)), *(str(stats[p].get(name, 0)) for p in processes)]
            for name in names]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [head, *rows]]
    return Output(stats, lines)


def _run_debug(args) -> Output:
    answer = _call(args, "debug", [] if args.level is None else [str(args.level)])
    return Output(answer, [f"debug level {answer['debug']} ({answer['logs']})"])


def _run_reload(args) -> Output:
    return Output(_call(args, "reload"), ["reload requested"])


def _run_shutdown(args) -> Output:
    return Output(_call(args, "shutdown"), ["shutdown requested"])


# --- the database: tables and subscribers ----------------------------------------------------
# The database is the one the config given with -f uses (auth_db's db_url, else uri_db's, else
# usrloc's, else the default), or --db-url.

DB_MODULES = ("auth_db", "uri_db", "usrloc")


def _config(args):
    """The config given with -f, loaded once per command (several steps ask it)."""
    from .config.errors import ConfigErrors
    from .assembly.loader import load_config
    if getattr(args, "loaded", None) is None:
        try:
            args.loaded = load_config(args.config)
        except ConfigErrors as e:
            raise CtlError(f"{args.config}: cannot load the config:\n" + str(e)) from None
    return args.loaded


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


def _run_db_init(args) -> Output:
    with _opened(args) as db:
        made = []
        for table in schema.TABLES:
            made += schema.create(db, [table])
            print(f"  {table}: {'created' if table in made else 'exists'}", file=sys.stderr)
    return Output({"database": str(db.url), "created": made},
                  [f"{db.url}: {len(made)} table(s) created" + (f": {', '.join(made)}" if made else "")])


def _add_subscribers(commands) -> None:
    add = commands.add_parser("add", help="add a subscriber (a user who may register and call)",
                              description="Add USER (alice, in the config's domain, or alice@domain) with "
                                          "PASSWORD; or every line 'USER PASSWORD [EMAIL]' of --file.")
    add.add_argument("user", metavar="USER", nargs="?")
    add.add_argument("password", metavar="PASSWORD", nargs="?")
    add.add_argument("--email", default="", help="the user's e-mail address")
    add.add_argument("--file", metavar="FILE", help="add the users listed in FILE ('-': standard input)")
    _plaintext_flag(add)
    add.set_defaults(run=_run_add)
    passwd = commands.add_parser("passwd", help="change a subscriber's password")
    passwd.add_argument("user", metavar="USER")
    passwd.add_argument("password", metavar="PASSWORD")
    _plaintext_flag(passwd)
    passwd.set_defaults(run=_run_passwd)
    rm = commands.add_parser("rm", help="remove a subscriber")
    rm.add_argument("user", metavar="USER")
    rm.set_defaults(run=_run_rm)


def _plaintext_flag(p) -> None:
    p.add_argument("--plaintext", action="store_true",
                   help="also store the clear-text password, which auth_db's calculate_ha1=1 reads (the "
                        "default with a config that sets it; else only the HA1 digests are stored)")


def _keep_password(args) -> bool:
    """Whether the clear-text password goes in the table: asked for, or needed by the config."""
    if args.plaintext:
        return True
    if args.db_url:
        return False
    return bool(_config(args).modparams.get("auth_db", {}).get("calculate_ha1"))


def _warn_if_not_served(args, domain: str) -> None:
    """A user of a domain the config does not serve (alias=, listen=, the host's names: what
    ``myself`` matches) is added all the same (the database may serve other proxies, or the
    alias come later), with a word on stderr."""
    if args.db_url:
        return
    from .config.values import SocketSpec
    from .myself import Myself
    settings = _config(args).settings
    listening = settings.listen or [SocketSpec(None, "0.0.0.0", None)]     # (none: every address)
    if not Myself(listening, settings.alias, settings.port)(domain):
        print(f"pyproxyctl: warning: {domain} is none of {args.config}'s domains (alias=, listen=): added "
              f"all the same; its users register here once one of them names it", file=sys.stderr)


def _run_add(args) -> Output:
    if args.file:
        return _add_file(args)
    if not (args.user and args.password):
        raise UsageError("add needs USER PASSWORD (or --file FILE)")
    user, domain = _user_and_domain(args, args.user)
    keep = _keep_password(args)
    _warn_if_not_served(args, domain)
    with _opened(args) as db:
        schema.require(db, ["subscriber"])
        subscribers.add(db, user, domain, args.password, args.email, keep)
    return Output({"added": [f"{user}@{domain}"]}, [f"{user}@{domain} added"])


def _add_file(args) -> Output:
    source = sys.stdin if args.file == "-" else _open(args.file)
    lines = [(n, line.split()) for n, line in enumerate(source, 1) if line.strip() and not line.startswith("#")]
    added, keep = [], _keep_password(args)
    with _opened(args) as db:
        schema.require(db, ["subscriber"])
        for done, (n, fields) in enumerate(lines, 1):
            if len(fields) not in (2, 3):
                raise CtlError(f"{args.file}:{n}: expected 'USER PASSWORD [EMAIL]'")
            user, domain = _user_and_domain(args, fields[0])
            try:
                subscribers.add(db, user, domain, fields[1], fields[2] if len(fields) == 3 else "", keep)
            except SubscriberError as e:
                raise CtlError(f"{args.file}:{n}: {e} ({len(added)} added before it)") from None
            added.append(f"{user}@{domain}")
            if done % 500 == 0 or done == len(lines):
                print(f"\r  {done}/{len(lines)} users", end="" if done < len(lines) else "\n", file=sys.stderr)
    return Output({"added": added}, [f"{len(added)} subscriber(s) added"])


def _open(path: str):
    try:
        return open(path, encoding="utf-8")
    except OSError as e:
        raise CtlError(f"{path}: {e.strerror}") from None


def _run_passwd(args) -> Output:
    user, domain = _user_and_domain(args, args.user)
    keep = _keep_password(args)
    with _opened(args) as db:
        subscribers.set_password(db, user, domain, args.password, keep)
    return Output({"changed": f"{user}@{domain}"}, [f"password of {user}@{domain} changed"])


def _run_rm(args) -> Output:
    user, domain = _user_and_domain(args, args.user)
    with _opened(args) as db:
        subscribers.remove(db, user, domain)
    return Output({"removed": f"{user}@{domain}"}, [f"{user}@{domain} removed"])


# --- ul: the registrations of a running pyproxy (through its management socket) --------------

def _add_ul(commands) -> None:
    ul = commands.add_parser("ul", help="show or remove registrations in a running pyproxy",
                             description="The location service of a running pyproxy, through its mi_socket.")
    _socket_flag(ul)
    sub = ul.add_subparsers(title="ul commands", metavar="COMMAND", required=True)
    show = sub.add_parser("show", help="every registration, or one address of record's")
    show.add_argument("aor", metavar="AOR", nargs="?", help="USER or USER@DOMAIN")
    _json_flag(show)
    show.set_defaults(run=_run_ul_show)
    rm = sub.add_parser("rm", help="remove every contact of an address of record")
    rm.add_argument("aor", metavar="AOR")
    _json_flag(rm)
    rm.set_defaults(run=_run_ul_rm)


def _run_ul_show(args) -> Output:
    if args.aor:
        table = {args.aor: _call(args, "ul_show_contact", [args.aor])}
    else:
        table = _call(args, "ul_dump")
    lines = []
    for aor, contacts in table.items():
        lines.append(f"{aor}: {len(contacts)} contact(s)")
        lines += [f"  <{c['contact']}>;expires={c['expires']};q={c['q']:g}  " +
                  (f"from {c['received']} " if c["received"] else "") +     # (behind a NAT, or TCP/TLS)
                  f"on {c['socket']}" + (f"  {c['user_agent']}" if c["user_agent"] else "") for c in contacts]
    return Output(table, lines or ["no registrations"])


def _run_ul_rm(args) -> Output:
    answer = _call(args, "ul_rm", [args.aor])
    return Output(answer, [f"{args.aor}: {answer['removed']} contact(s) removed"])


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

COMMANDS = (_add_tls, _add_mi, _add_ops, _add_db, _add_subscribers, _add_ul, _add_service)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyproxyctl", description="Administration of pyproxy, like openserctl.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-V", "--version", action="version", version=f"pyproxyctl {__version__}")
    p.add_argument("-f", dest="config", metavar="FILE", default=DEFAULT_CONFIG,
                   help="the pyproxy config: its database, its mi_socket, its TLS domains "
                        f"(default {DEFAULT_CONFIG})")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=10.0,
                   help="how long to wait for a running pyproxy's answer (default 10)")
    p.add_argument("--db-url", metavar="URL", help="the database, instead of the config's "
                                                    "(sqlite:///path, postgres://..., mysql://...)")
    commands = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(commands)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)      # a usage error exits 2 here
    try:
        result = args.run(args)
    except MIUnreachable as e:
        print(f"pyproxyctl: {e}", file=sys.stderr)
        return UNREACHABLE
    except UsageError as e:
        print(f"pyproxyctl: {e}", file=sys.stderr)
        return USAGE
    except _FAILURES as e:
        print(f"pyproxyctl: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    if not isinstance(result, Output):
        result = Output([str(line) for line in result], result)
    try:
        if args.json:
            print(json.dumps(result.data, indent=2))
        else:
            for line in result.lines or [json.dumps(result.data, indent=2)]:
                print(line)
        sys.stdout.flush()
    except BrokenPipeError:     # (| head): the reader has what it wanted; no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return FAILED if result.failed else OK


if __name__ == "__main__":
    sys.exit(main())
