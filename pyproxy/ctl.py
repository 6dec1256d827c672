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
from pathlib import Path

from . import __version__
from .certs import CertError, make_root_ca, make_user_cert
from .mi.client import DEFAULT_SOCKET, MIClientError, call_fifo, call_socket

DEFAULT_CA_DIR = "./tls/rootCA"


class CtlError(Exception):
    """A failure of the command line itself (an unreadable passphrase file, ...)."""


_FAILURES = (CertError, CtlError, MIClientError)


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


# --- the command -----------------------------------------------------------------------------

COMMANDS = (_add_tls, _add_mi)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyproxyctl",
                                description="Administration of pyproxy, like openserctl.")
    p.add_argument("-V", "--version", action="version", version=f"pyproxyctl {__version__}")
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
