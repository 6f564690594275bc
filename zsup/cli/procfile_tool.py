"""zsup: run a Procfile application locally, or manage it as a session of a running zsupd.

This is gaffer's `gaffer` tool (seeds/001, "Manage your Procfile applications"):

    zsup start [-c web=2,worker=1] [TYPE]      run the app in the foreground (like foreman)
    zsup load [-c ...] [APP] / zsup unload [APP] the app becomes / stops being a zsupd session
    zsup scale [APP] web=3 worker+2 other-1    change process counts in zsupd
    zsup ps [APP]                              what the app's processes are doing in zsupd
    zsup run [-c ...] COMMAND...               a one-off command with the app's environment
    zsup export [--format ini|json|systemd|supervisord|runit|upstart|launchd] [--out PATH] [APP]
    zsup check [-c ...]                        validate Procfile and .env, print what would run

`start` embeds the supervisor core (zsup.core.manager.Manager) in this process: nothing else needs
to run, and Ctrl-C stops everything. Every other command that touches zsupd speaks the bus
(zsup.bus.client.Client), exactly as zsupctl and the HTTP gateway do; an `http://` endpoint
sends the same commands through the HTTP gateway instead. Errors are one line on stderr,
`zsup: <message>`, and a non-zero exit code.

This module holds the command line (parser and `main`); the commands are in
zsup.cli.procfile_local (start, run), zsup.cli.procfile_bus (load, unload, scale, ps, and
`start --attach`), zsup.cli.procfile_export (export, check), the application's root and name
in zsup.cli.procfile_app.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from zsup import __version__
from zsup.cli import completion
from zsup.cli.options import Parser, port_number
from zsup.cli.procfile_bus import (
    cmd_load,
    cmd_ps,
    cmd_scale,
    cmd_unload,
    format_uptime,
    parse_scale_specs,
)
from zsup.cli.procfile_export import EXPORT_FORMATS, cmd_check, cmd_export
from zsup.cli.procfile_local import cmd_run, cmd_start, silence_stdout
from zsup.errors import ZsupError

__all__ = ["build_parser", "format_uptime", "main", "parse_scale_specs"]

PROG = "zsup"


# ============================================================================ argument parsing
ToolParser = Parser  # one line per usage error: `zsup: error: MESSAGE (see 'zsup start --help')`

APP_OPTIONS = "-f/--procfile, -d/--directory, -e/--env"
BUS_OPTIONS = "--endpoint, --curve-key, --server-key"


def global_options(hidden: bool = False) -> argparse.ArgumentParser:
    """Options valid before and after the subcommand, shown once (in `zsup --help`): a
    subcommand accepts them `hidden`, and its epilog names those that apply to it.

    They default to SUPPRESS in both places so that a value given before the subcommand is
    not overwritten by the subparser's default; real defaults are filled in by `finish_args`.
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("-f", "--procfile", default=argparse.SUPPRESS, metavar="PROCFILE",
                   help="the Procfile to use (default: Procfile in the application root)")
    g.add_argument("-d", "--directory", default=argparse.SUPPRESS, metavar="ROOT",
                   help="the application root (default: the folder of the Procfile, else .)")
    g.add_argument("-e", "--env", action="append", default=argparse.SUPPRESS, metavar="ENVFILE",
                   help="an .env file to load; repeat or separate with ',' for several "
                        "(default: <root>/.env when it exists)")
    g.add_argument("--endpoint", default=argparse.SUPPRESS,
                   help="zsupd to talk to: ipc://PATH, tcp://HOST:PORT (the bus) or http://HOST:PORT "
                        "(the HTTP gateway) (default: $ZSUP_BUS, else the local zsupd's socket)")
    g.add_argument("--curve-key", default=argparse.SUPPRESS, metavar="SECRET_FILE",
                   help="for a tcp:// bus: this client's CURVE secret key file (.key_secret)")
    g.add_argument("--server-key", default=argparse.SUPPRESS, metavar="PUBLIC_FILE",
                   help="for a tcp:// bus: zsupd's CURVE public key file (.key)")
    if hidden:
        for action in g._group_actions:
            action.help = argparse.SUPPRESS
    return p


GLOBAL_DEFAULTS = {"procfile": None, "directory": None, "env": None, "endpoint": None,
                   "curve_key": None, "server_key": None}


def build_parser() -> ToolParser:
    common, hidden = global_options(), global_options(hidden=True)
    p = ToolParser(prog=PROG, parents=[common],
                   description="Run a Procfile application in the foreground, or load it into zsupd "
                               "and manage it there (gaffer's Procfile manager).")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=ToolParser)

    def add(name: str, func: Callable, help_text: str, applies: str) -> ToolParser:
        sp = sub.add_parser(name, parents=[hidden], help=help_text, description=help_text,
                            epilog=f"Global options that apply (see `zsup --help`): {applies}.")
        sp.set_defaults(func=func)
        return sp

    def concurrency(sp: ToolParser, port: bool = True) -> None:
        sp.add_argument("-c", "--concurrency", metavar="TYPE=N,...", default="",
                        help="how many processes of each type, e.g. web=2,worker=1 (default: 1 each)")
        if port:
            sp.add_argument("-p", "--port", type=port_number, metavar="PORT",
                            help="base PORT: +100 per process type, +1 per instance (default: PORT "
                                 "from the env files, else from the environment, else 5000)")

    sp = add("start", cmd_start, "Start all process types of the Procfile, or one, in the foreground.",
             f"{APP_OPTIONS}; with --attach, {BUS_OPTIONS}")
    concurrency(sp)
    sp.add_argument("name", nargs="?", metavar="TYPE", help="run only this process type (with --attach: APP)")
    sp.add_argument("--keep-going", action="store_true",
                    help="restart a process that exits (zsupd's behaviour) instead of stopping everything "
                         "(foreman's)")
    sp.add_argument("--attach", action="store_true",
                    help="show the output of the app already loaded in zsupd (session APP) until Ctrl-C")

    sp = add("load", cmd_load, "Load the Procfile application into zsupd as a session, and start it.",
             f"{APP_OPTIONS}, {BUS_OPTIONS}")
    concurrency(sp)
    sp.add_argument("-o", "--option", action="append", metavar="[TYPE.]KEY=VALUE",
                    help="a job option for one type (or all), e.g. web.ready=tcp:5000, restart=on-failure")
    sp.add_argument("name", nargs="?", metavar="APP",
                    help="session name (default: the application folder's name; '.' = the current folder)")

    sp = add("unload", cmd_unload, "Unload a Procfile application (a session) from zsupd, stopping it.",
             f"-f/--procfile, -d/--directory (the default APP), {BUS_OPTIONS}")
    sp.add_argument("name", nargs="?", metavar="APP", help="session name (default: as for load)")

    sp = add("scale", cmd_scale, "Scale process types of an application loaded in zsupd.",
             f"-f/--procfile, -d/--directory (the default APP), {BUS_OPTIONS}")
    sp.add_argument("specs", nargs="+", metavar="[APP] TYPE=N|TYPE+N|TYPE-N",
                    help="an optional application name, then one or more scale orders")

    sp = add("ps", cmd_ps, "List the processes of an application loaded in zsupd.",
             f"-f/--procfile, -d/--directory (the default APP), {BUS_OPTIONS}")
    sp.add_argument("name", nargs="?", metavar="APP", help="session name (default: as for load)")

    sp = add("run", cmd_run, "Run a one-off command with the application's environment.", APP_OPTIONS)
    concurrency(sp)
    sp.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND",
                    help="one argument: a shell line (like a Procfile line); several: a program and its "
                         "arguments, run as they are")

    sp = add("export", cmd_export, "Export the Procfile as zsupd config (ini, json) or as service files "
                                   "for systemd, supervisord, runit, upstart or launchd.", APP_OPTIONS)
    concurrency(sp)
    sp.add_argument("--format", choices=EXPORT_FORMATS, default="ini", help="output format (default: ini)")
    sp.add_argument("--out", metavar="PATH",
                    help="ini, json: write to FILE instead of standard output; other formats: the "
                         "folder to write into (required)")
    sp.add_argument("--template", metavar="DIR", help="a folder of templates overriding zsup's own")
    sp.add_argument("-u", "--user", help="the user the services run as (default: none set)")
    sp.add_argument("-l", "--log", metavar="DIR", help="supervisord, upstart, launchd: the log folder "
                                                      "(default: /var/log/APP)")
    sp.add_argument("name", nargs="?", metavar="APP", help="session name (default: as for load)")

    sp = add("check", cmd_check, "Check the Procfile and .env files, and print what would run.", APP_OPTIONS)
    concurrency(sp)
    completion.add_command(sub).set_defaults(func=cmd_completion)
    return p


def cmd_completion(args: argparse.Namespace, out) -> int:
    out.write(completion.script(build_parser, args.shell))
    return 0


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the global options' defaults and split comma-separated env file lists."""
    for key, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.env:
        args.env = [part for item in args.env for part in item.split(",") if part]
    return args


# ============================================================================ entry point
def main(argv: list[str] | None = None) -> int:
    """The `zsup` console script. Returns the exit code (never raises SystemExit)."""
    parser = build_parser()
    try:
        args = finish_args(parser.parse_args(argv))
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args, sys.stdout)
    except ZsupError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        silence_stdout()
        return 1


if __name__ == "__main__":
    sys.exit(main())
