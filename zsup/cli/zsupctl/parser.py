"""zsupctl's command line: the argument parser (global options before and after the
subcommand) and main."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from zsup import __version__
from zsup.cli import completion
from zsup.cli.options import Parser, positive_int
from zsup.cli.zsupctl import cluster
from zsup.cli.zsupctl.context import DEFAULT_TIMEOUT, PROG, Ctl, UsageError, resolve_endpoints
from zsup.cli.zsupctl.follow import cmd_logs, cmd_tail, cmd_watch
from zsup.cli.zsupctl.format import parse_env, parse_since
from zsup.cli.zsupctl.gafferctl import cmd_numprocesses, cmd_running, cmd_update
from zsup.cli.zsupctl.jobs import (
    cmd_add,
    cmd_commit,
    cmd_get,
    cmd_info,
    cmd_kill,
    cmd_load_process,
    cmd_pids,
    cmd_ping,
    cmd_processes,
    cmd_reload,
    cmd_reopen_logs,
    cmd_restart,
    cmd_scale,
    cmd_send,
    cmd_sessions,
    cmd_sockets,
    cmd_start,
    cmd_stats,
    cmd_status,
    cmd_stop,
    cmd_sub,
    cmd_unload,
    cmd_version,
)
from zsup.errors import ZsupError

# ------------------------------------------------------------------------------ parser


def _global_options(parser: argparse.ArgumentParser, hidden: bool = False) -> None:
    """The options accepted both before and after the subcommand (default SUPPRESS, so a value
    given before is not overwritten by the subcommand's default). Shown once, in `zsupctl
    --help`: a subcommand accepts them `hidden`, out of its usage and help."""
    g = parser.add_argument_group("global options")
    sup = argparse.SUPPRESS
    g.add_argument("--bus", metavar="ENDPOINT", default=sup,
                   help="zsupd's command endpoint (default: $ZSUP_BUS, else ipc://<state_dir>/zsupd.sock)")
    g.add_argument("--pub", metavar="ENDPOINT", default=sup,
                   help="zsupd's events endpoint (default: $ZSUP_PUB, else next to the command socket)")
    g.add_argument("--state-dir", metavar="DIR", default=sup,
                   help="talk to the zsupd whose state dir is DIR (default: $ZSUP_STATE_DIR or ~/.zsup)")
    g.add_argument("--json", action="store_true", default=sup, help="print raw JSON results, for scripts")
    g.add_argument("--timeout", type=float, metavar="SECONDS", default=sup,
                   help=f"how long to wait for zsupd's answer (default: {DEFAULT_TIMEOUT:g})")
    g.add_argument("--curve-key", metavar="SECRET_FILE", default=sup,
                   help="for a tcp:// bus: this client's CURVE secret key file (.key_secret)")
    g.add_argument("--server-key", metavar="PUBLIC_FILE", default=sup,
                   help="for a tcp:// bus: zsupd's CURVE public key file (.key)")
    cluster.add_options(g)
    if hidden:
        for action in g._group_actions:
            action.help = argparse.SUPPRESS


GLOBAL_EPILOG = ("The global options (--bus, --pub, --state-dir, --json, --timeout, --curve-key, --server-key, "
                 "--cluster...: see `zsupctl --help`) go before or after COMMAND.")

GLOBAL_DEFAULTS = {"bus": None, "pub": None, "state_dir": None, "json": False, "timeout": DEFAULT_TIMEOUT,
                   "curve_key": None, "server_key": None, **cluster.DEFAULTS}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG, description="Control a running zsupd over its bus (gafferctl's commands, and more).",
        epilog="Run `zsupctl COMMAND --help` for a command's options. Documentation: docs/zsupctl.md")
    _global_options(parser)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[Ctl], int], help: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=help, description=help, aliases=list(aliases), epilog=GLOBAL_EPILOG)
        _global_options(p, hidden=True)
        p.set_defaults(func=func)
        return p

    def job(p: argparse.ArgumentParser, optional: bool = False) -> None:
        p.add_argument("name", metavar="NAME", nargs="?" if optional else None,
                       help="a job: NAME (session default) or SESSION.NAME")
        p.add_argument("--session", help="the job's session, if NAME has none")

    p = add("status", cmd_status, "a table of every job: state, processes, uptime, CPU, memory")
    p = add("processes", cmd_processes, "list the loaded jobs")
    p.add_argument("--session", help="only this session's jobs")
    p = add("load_process", cmd_load_process, "load a job (JSON object) or jobs (JSON list) from FILE or stdin",
            aliases=["load-process", "load", "add_process"])
    p.add_argument("file", metavar="FILE", help="a JSON file, or - for stdin")
    p.add_argument("--session", help="load the jobs into this session")
    p.add_argument("--no-start", action="store_true", help="load without starting")
    job(add("unload", cmd_unload, "stop a job's processes and remove the job",
            aliases=["del_process", "unload_process"]))
    job(add("start", cmd_start, "start a job's processes"))
    job(add("stop", cmd_stop, "stop a job's processes (the job stays loaded)"))
    p = add("scale", cmd_scale, "set (N, =N) or change (+N, -N) a job's number of processes")
    job(p)
    p.add_argument("n", metavar="N", nargs="?", help="3 or =3 sets the count; +2 adds two; -1 removes one "
                   "(with --cluster, --total N instead spreads N over the nodes)")
    for name, func, verb in (("add", cmd_add, "start N more"), ("sub", cmd_sub, "stop N of the")):
        p = add(name, func, f"{verb} processes of a job")
        job(p)
        p.add_argument("n", metavar="N", type=positive_int, help="how many processes")
    p = add("restart", cmd_restart, "replace a job's processes: all at once (or as its restart_mode "
            "says), or one by one with --rolling")
    job(p)
    p.add_argument("--rolling", action="store_true",
                   help="start a new process, wait until it is ready, stop an old one, repeat")
    p.add_argument("--max-surge", type=positive_int, metavar="N",
                   help="with --rolling: new processes started at a time (default: the job's max_surge)")
    p = add("reload", cmd_reload, "restart a job's processes; without NAME, reload zsupd's config file")
    job(p, optional=True)
    job(add("info", cmd_info, "a job's state, command and processes"))
    job(add("get", cmd_get, "a job's config as JSON (what load_process reads)", aliases=["get_process"]))
    # gafferctl's older names with no zsupctl twin (zsup.cli.zsupctl.gafferctl)
    p = add("update", cmd_update, "replace a loaded job's config with FILE's (one JSON object)",
            aliases=["update_process"])
    p.add_argument("file", metavar="FILE", help="a JSON file, or - for stdin")
    p.add_argument("--session", help="the job's session (default: its own, else default)")
    job(add("numprocesses", cmd_numprocesses, "how many processes a job keeps"))
    job(add("running", cmd_running, "how many of a job's processes run now"))
    job(add("stats", cmd_stats, "CPU and memory of each process of a job, and their totals"))
    job(add("pids", cmd_pids, "zsup's pids of a job's processes (of every job without NAME)"), optional=True)
    add("sessions", cmd_sessions, "list the sessions")
    p = add("commit", cmd_commit, "start one extra process of a job, not restarted; print its pid")
    job(p)
    p.add_argument("--graceful-timeout", type=float, metavar="SECONDS", help="time it gets to stop when asked")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", type=_env_arg, help="extra environment")
    p = add("kill", cmd_kill, "send a signal to a process (PID, a number) or to every process of a job (NAME)")
    p.add_argument("target", metavar="PID|NAME")
    p.add_argument("signal", metavar="SIG", nargs="?", default="TERM",
                   help="a name (HUP, SIGHUP) or number (default: TERM)")
    p.add_argument("--session", help="the job's session, if NAME has none")
    p = add("send", cmd_send, "write TEXT and a newline to a process's stdin (redirect_input jobs)")
    p.add_argument("pid", metavar="PID", type=int)
    p.add_argument("text", metavar="TEXT", nargs="+", help="words are joined with a space, as echo does")
    p.add_argument("--no-newline", "-n", action="store_true", help="do not add a newline")
    p = add("watch", cmd_watch, "print events live (HH:MM:SS job | topic summary) until Ctrl-C")
    p.add_argument("patterns", metavar="PATTERN", nargs="*",
                   help="topic patterns, e.g. proc.default.web, job., io.default.web. (default: job, proc, sys events)")
    p = add("tail", cmd_tail, "recent output of a job's processes, then live output until Ctrl-C")
    job(p)
    p.add_argument("--label", help="only this stream (default: all; stderr goes to stderr)")
    p.add_argument("-n", "--lines", type=_count, default=10, metavar="N", help="recent lines per stream (default: 10)")
    p.add_argument("--no-follow", action="store_true", help="print the recent lines and exit")
    p = add("logs", cmd_logs, "a job's output read back from its log files; -f follows live")
    job(p)
    p.add_argument("--label", help="only this stream (default: all; stderr goes to stderr)")
    p.add_argument("--since", type=parse_since, metavar="TIME", help="ISO time or age (30s, 10m, 2h, 1d)")
    p.add_argument("-n", "--lines", type=_count, metavar="N", help="only the last N lines")
    p.add_argument("-f", "--follow", action="store_true", help="then follow live output until Ctrl-C")
    p.add_argument("-t", "--timestamps", action="store_true", help="show when each line was received")
    add("version", cmd_version, "zsupctl's and zsupd's versions")
    add("ping", cmd_ping, "check that zsupd answers")
    add("sockets", cmd_sockets, "the listening sockets zsupd keeps open, with the jobs using them")
    add("reopen-logs", cmd_reopen_logs, "reopen the log files (after logrotate moved them)", aliases=["reopen_logs"])
    completion.add_command(subs)  # no bus needed: main prints it before connecting
    return parser


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return int(text)


def _env_arg(text: str) -> str:
    parse_env(text)
    return text


STREAMING = {cmd_watch, cmd_tail, cmd_logs}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.command == "completion":
        sys.stdout.write(completion.script(build_parser, args.shell))
        return 0
    if args.command == "scale" and args.n is None and not (args.cluster and args.total is not None):
        parser.error("scale: the following arguments are required: N")
    bus, pub = resolve_endpoints(args)
    ctl = Ctl(args, bus, pub)
    if args.cluster:
        try:
            return cluster.run(args, ctl.curve)
        except UsageError as exc:
            parser.exit(2, f"{PROG}: error: {exc}\n")
        except ZsupError as exc:
            print(f"{PROG}: {exc.message}", file=sys.stderr)
            return 1
    try:
        return args.func(ctl)
    except UsageError as exc:
        parser.exit(2, f"{PROG}: error: {exc}\n")
    except ZsupError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if args.func in STREAMING else 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error; keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        ctl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
