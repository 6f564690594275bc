"""What zsup's command-line tools share, so that zsupd, zsupctl, zsup, zsup-http and
zsup-lookupd say the same thing the same way (docs/zsupctl.md, "One vocabulary"):

- one spelling per option (`--plugin-dir`, `--state-dir`, `--bind`, `--certfile`...), older
  spellings kept as hidden aliases (`alias`), so nothing that used them breaks;
- one help style: "(default: X)" at the end of a help text, "TLS" (never "SSL");
- one message per bad value: the argparse types below, used by every tool for ports, bind
  addresses and counts;
- one verbosity rule for the servers: INFO by default (normal operation, e.g. the
  "listening on" line, shows), `-q` for warnings and errors only, `-v` for debug.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["Parser", "add_verbosity", "alias", "bind_address", "log_level", "port_number", "positive_int"]


class Parser(argparse.ArgumentParser):
    """argparse with one error format for every tool: one line on stderr,
    `PROG: error: MESSAGE (see 'PROG COMMAND --help')`, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        tool = self.prog.split()[0]
        self.exit(2, f"{tool}: error: {message} (see '{self.prog} --help')\n")


def bind_address(text: str) -> str:
    """An argparse type: HOST:PORT, [IPv6]:PORT, PORT or unix:PATH, checked as the servers
    check it (zsup.http.listen.parse_bind), with its words."""
    from zsup.http.listen import parse_bind

    try:
        parse_bind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535, refused in the words of a bad `--bind` port."""
    return check_port(text, low=1)


def check_port(value: object, low: int = 0) -> int:
    """`value` as a port number; argparse.ArgumentTypeError (a ValueError) worded as
    zsup.http.listen words a bad `--bind` port."""
    text = str(value).strip()
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number")
    port = int(text)
    if not low <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range ({low}-65535)")
    return port


def positive_int(text: str) -> int:
    """An argparse type: a whole number > 0 (counts, backlogs, limits)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return int(text)


def alias(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str, dest: str, **kwargs) -> None:
    """An older spelling of an option, still accepted but not shown in --help."""
    parser.add_argument(*names, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def add_verbosity(parser: argparse.ArgumentParser, verbose_help: str = "more output: debug messages") -> None:
    """A server's `-v/--verbose` (counted) and `-q/--quiet` (dest `verbose`, set to -1)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbose", action="count", default=0, help=verbose_help)
    group.add_argument("-q", "--quiet", dest="verbose", action="store_const", const=-1,
                       help="log warnings and errors only (default: normal operation too, at INFO)")


def log_level(verbose: int) -> int:
    """The logging level for a server's `verbose` count: -1 (quiet) WARNING, 0 INFO, more DEBUG."""
    return logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
