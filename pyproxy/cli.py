"""The ``pyproxy`` command: OpenSER's command line, with the same letters and meanings."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .config.errors import ConfigErrors
from .config.values import parse_host_port

DEFAULT_CONFIG = "/etc/pyproxy/pyproxy.cfg"


def _listen(text: str):
    try:
        return parse_host_port(text, allow_proto=True)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyproxy", add_help=False,
        description="A scriptable SIP proxy with TLS, configured with an OpenSER-style script "
                    "(the registrar is still to come).")
    p.add_argument("-f", dest="config", metavar="FILE", default=DEFAULT_CONFIG,
                   help=f"configuration file (default {DEFAULT_CONFIG})")
    p.add_argument("-c", dest="check", action="store_true",
                   help="check the configuration file and exit: one summary line, or every error as "
                        "FILE:LINE:COL: message")
    p.add_argument("-m", dest="shm_mb", metavar="MB", type=_positive, default=32,
                   help="size of the shared memory segment in MB (default 32)")
    p.add_argument("-D", dest="foreground", action="count", default=0,
                   help="do not daemonize: stay in the foreground")
    p.add_argument("-E", dest="log_stderr", action="store_true", help="log to standard error")
    p.add_argument("-d", dest="verbose", action="count", default=0,
                   help="more verbose: raises the debug level by one, may repeat (-ddd)")
    p.add_argument("-n", dest="children", metavar="N", type=_positive,
                   help="number of worker processes (overrides children=)")
    p.add_argument("-l", dest="listen", metavar="ADDRESS", type=_listen, action="append", default=[],
                   help="listen on [proto:]addr[:port] too, proto one of udp, tcp, tls; may repeat")
    p.add_argument("-P", dest="pid_file", metavar="FILE", help="write the master's pid to FILE")
    p.add_argument("-u", dest="user", metavar="USER", help="run as USER after binding the sockets")
    p.add_argument("-g", dest="group", metavar="GROUP", help="run as GROUP after binding the sockets")
    from .sip import accel
    p.add_argument("-V", "--version", action="version", version=f"pyproxy {__version__}\n"
                   f"Python {sys.version.split()[0]}; transports: udp tcp tls; "
                   f"C accelerator: {'on' if accel.ENABLED else 'off'}",
                   help="print the version and exit")
    p.add_argument("-h", "--help", action="help", help="print this help and exit")
    return p


def apply_overrides(settings, args) -> None:
    """Command-line options win over the config file, as in OpenSER."""
    if args.children:
        settings.children = args.children
    if args.listen:
        settings.listen.extend(args.listen)
    if args.log_stderr:
        settings.log_stderror = True
    if args.verbose:
        settings.debug = min(settings.debug + args.verbose, 9)
    if args.user:
        settings.user = args.user
    if args.group:
        settings.group = args.group
    for name in ("mi_socket", "fifo", "fifo_dir"):     # used after the daemon moved to /
        if getattr(settings, name):
            setattr(settings, name, os.path.abspath(getattr(settings, name)))


def _print_warnings(warnings) -> None:
    for pos, text in warnings:
        print(f"{pos}: warning: {text}" if pos else f"warning: {text}", file=sys.stderr)


def check_tls(config) -> list[str]:
    """-c: the TLS domains built as at start (that only reads files); what would stop it."""
    s = config.settings
    if s.disable_tls:
        return []
    from .certs import autogenerate_pending
    from .tls import DomainTable, TLSConfigError
    if autogenerate_pending(s, config.cfg_dir):
        return []       # made, and checked, at the first start
    try:
        table = DomainTable.build(s, config.tls_domains, config.cfg_dir)
    except TLSConfigError as e:
        return e.located(config.path)
    for warning in table.warnings:
        print(f"warning: TLS: {warning}", file=sys.stderr)
    return []


def load(args, running=None):
    """The config file with the command line's overrides: at start, and at each reload (then
    checked and compiled against the ``running`` one)."""
    from .assembly.loader import load_config
    return load_config(args.config, lambda settings: apply_overrides(settings, args), running)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load(args)
    except ConfigErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        n = len(e.errors)
        outcome = "check failed" if args.check else "not started"
        print(f"pyproxy: {args.config}: {n} error{'s' if n != 1 else ''}, {outcome}", file=sys.stderr)
        return 1
    _print_warnings(config.warnings)
    if args.check:
        from .kernel.process import unknown_user_or_group
        errors = [f"{args.config}: {e}" for e in (unknown_user_or_group(config.settings),) if e] + check_tls(config)
        for message in errors:
            print(message, file=sys.stderr)
        if errors:
            print(f"pyproxy: {args.config}: {len(errors)} error{'s' if len(errors) != 1 else ''}, "
                  "would not start", file=sys.stderr)
            return 1
        print(config.summary())
        return 0
    from .runtime.arbiter import Arbiter
    # a daemon works in / (it must not hold a mounted folder busy): paths from here are absolute
    args.config = config.path = os.path.abspath(args.config)
    if args.pid_file:
        args.pid_file = os.path.abspath(args.pid_file)
    return Arbiter(config, args, lambda running: load(args, running)).run()


if __name__ == "__main__":
    sys.exit(main())
