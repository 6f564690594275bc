"""zsupctl: control a running zsupd from the command line (gafferctl's commands, and more).

Everything goes over the bus (docs/bus.md): commands over the ROUTER socket through
`zsup.bus.client.Client`, live events and output over the PUB socket through `Subscriber`.
zsupctl keeps no state of its own, so any number of them can run beside the HTTP gateway.

Why some things are done the way they are:

- Global options (`--bus`, `--state-dir`, `--json`, `--timeout`, ...) are accepted before and
  after the subcommand: people type them in both places. They are declared on one parent
  parser with SUPPRESS defaults, so a value given after the subcommand does not get
  overwritten by the main parser's default.
- Every error is one line on stderr and exit status 1 (argparse's usage errors keep 2), so
  scripts can tell "zsupd said no" from "you typed it wrong".
- `tail` and `logs -f` join old output (the ring buffer, the log files) with live output
  without a gap or a duplicate: they subscribe first, then read what is stored, then drop
  the live lines whose `seq` they have already printed, per (pid, label). A live line whose
  seq jumps ahead (the subscription was not live yet, or the high-water mark dropped some)
  is preceded by a `read_output` call that fills the hole from the ring.
"""

from zsup.cli.zsupctl.parser import build_parser, main

__all__ = ["build_parser", "main"]
