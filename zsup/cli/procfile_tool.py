"""zsup: run a Procfile application locally, or manage it as a session of a running zsupd.

This is gaffer's `gaffer` tool (seeds/001, "Manage your Procfile applications"):

    zsup start [-c web=2,worker=1] [TYPE]      run the app in the foreground (like foreman)
    zsup load [-c ...] [APP] / zsup unload [APP] the app becomes / stops being a zsupd session
    zsup scale [APP] web=3 worker+2 other-1    change process counts in zsupd
    zsup ps [APP]                              what the app's processes are doing in zsupd
    zsup run [-c ...] COMMAND...               a one-off command with the app's environment
    zsup export [--format ini|json] [--out FILE] [APP]

`start` embeds the supervisor core (zsup.core.manager.Manager) in this process: nothing else needs
to run, and Ctrl-C stops everything. Every other command that touches zsupd speaks the bus
(zsup.bus.client.Client), exactly as zsupctl and the HTTP gateway do; an `http://` endpoint
sends the same commands through the HTTP gateway instead. Errors are one line on stderr,
`zsup: <message>`, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, TextIO

from zsup import __version__
from zsup.bus.client import Client, default_endpoints
from zsup.bus.typed import BusCommands
from zsup.errors import BadRequest, NotFound, Unavailable, ZsupError, error_from_dict
from zsup.services.procfile import Procfile, app_name_for, parse_concurrency

PROG = "zsup"
PING_TIMEOUT = 3.0  # how long "is zsupd there?" may take before we say it is not
COMMAND_TIMEOUT = 30.0  # a load_session of many jobs is still well within this
SCALE_RE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_\-]*?)([=+-])(\d+)$")
COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")


# ============================================================================ argument parsing
class ToolParser(argparse.ArgumentParser):
    """argparse with zsup's error format: one line, `zsup: <message>`, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{PROG}: {message} (see '{self.prog} --help')\n")


def global_options() -> argparse.ArgumentParser:
    """Options valid before and after the subcommand.

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
    return p


GLOBAL_DEFAULTS = {"procfile": None, "directory": None, "env": None, "endpoint": None,
                   "curve_key": None, "server_key": None}


def build_parser() -> ToolParser:
    common = global_options()
    p = ToolParser(prog=PROG, parents=[common],
                   description="Run a Procfile application in the foreground, or load it into zsupd "
                               "and manage it there (gaffer's Procfile manager).")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=ToolParser)

    def add(name: str, func: Callable, help_text: str) -> ToolParser:
        sp = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        sp.set_defaults(func=func)
        return sp

    def concurrency(sp: ToolParser) -> None:
        sp.add_argument("-c", "--concurrency", metavar="TYPE=N,...", default="",
                        help="how many processes of each type, e.g. web=2,worker=1 (default: 1 each)")

    sp = add("start", cmd_start, "Start all process types of the Procfile, or one, in the foreground.")
    concurrency(sp)
    sp.add_argument("name", nargs="?", metavar="TYPE", help="run only this process type")

    sp = add("load", cmd_load, "Load the Procfile application into zsupd as a session, and start it.")
    concurrency(sp)
    sp.add_argument("name", nargs="?", metavar="APP",
                    help="session name (default: the application folder's name; '.' = the current folder)")

    sp = add("unload", cmd_unload, "Unload a Procfile application (a session) from zsupd, stopping it.")
    sp.add_argument("name", nargs="?", metavar="APP", help="session name (default: as for load)")

    sp = add("scale", cmd_scale, "Scale process types of an application loaded in zsupd.")
    sp.add_argument("specs", nargs="+", metavar="[APP] TYPE=N|TYPE+N|TYPE-N",
                    help="an optional application name, then one or more scale orders")

    sp = add("ps", cmd_ps, "List the processes of an application loaded in zsupd.")
    sp.add_argument("name", nargs="?", metavar="APP", help="session name (default: as for load)")

    sp = add("run", cmd_run, "Run a one-off command with the application's environment.")
    concurrency(sp)
    sp.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND",
                    help="one argument: a shell line (like a Procfile line); several: a program and its "
                         "arguments, run as they are")

    sp = add("export", cmd_export, "Export the Procfile as zsupd config sections (ini) or JSON jobs.")
    concurrency(sp)
    sp.add_argument("--format", choices=("ini", "json"), default="ini", help="output format (default: ini)")
    sp.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    sp.add_argument("name", nargs="?", metavar="APP", help="session name (default: as for load)")
    return p


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the global options' defaults and split comma-separated env file lists."""
    for key, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.env:
        args.env = [part for item in args.env for part in item.split(",") if part]
    return args


# ============================================================================ the application
def app_root(args: argparse.Namespace) -> str:
    """-d, else the folder of -f, else the current folder."""
    if args.directory:
        return os.path.abspath(args.directory)
    if args.procfile:
        return os.path.dirname(os.path.abspath(args.procfile))
    return os.getcwd()


def procfile_path(args: argparse.Namespace) -> str:
    """-f as given (relative to the current folder), else `Procfile` in the application root."""
    return os.path.abspath(args.procfile) if args.procfile else os.path.join(app_root(args), "Procfile")


def app_name(args: argparse.Namespace, name: str | None) -> str:
    """The session name: NAME, '.' meaning the current folder's name, else the root's name.

    Commands that only talk to zsupd (scale, ps, unload) need no Procfile for this, so an app
    can be managed from anywhere by name.
    """
    if name == ".":
        return app_name_for(os.path.basename(os.getcwd().rstrip(os.sep)))
    if name:
        return app_name_for(name)
    return app_name_for(os.path.basename(app_root(args).rstrip(os.sep)))


def load_procfile(args: argparse.Namespace, name: str | None = None) -> Procfile:
    root = args.directory and os.path.abspath(args.directory)
    return Procfile.load(procfile_path(args), root=root, env_files=args.env,
                         app_name=app_name(args, name) if name else None)


# ============================================================================ talking to zsupd
class HttpBus(BusCommands):
    """Bus commands through the HTTP gateway: POST `<endpoint>/bus/<cmd>` with the args as JSON.

    The gateway answers `{"result": ...}`, or `{"error": {"code", "message"}}` with an error
    status; the bus's own envelope (`{"ok", "result"|"error"}`) is read too, and any other JSON
    on a 2xx answer is taken as the result itself.
    """

    def __init__(self, endpoint: str, timeout: float = COMMAND_TIMEOUT):
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout

    def call(self, cmd: str, /, **args: Any) -> Any:
        return self.request(cmd, args)

    def request(self, cmd: str, args: dict | None = None, timeout: float | None = None) -> Any:
        body = json.dumps(args or {}).encode()
        req = urllib.request.Request(f"{self.endpoint}/bus/{cmd}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return self._result(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            return self._result(exc.code, exc.read())
        except ValueError as exc:  # not a usable URL
            raise BadRequest(f"--endpoint {self.endpoint}: {exc}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"no zsup HTTP gateway answering at {self.endpoint} ({reason})") from None

    def _result(self, status: int, raw: bytes) -> Any:
        try:
            reply = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, ValueError):
            reply = None
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            raise error_from_dict(reply["error"])
        if isinstance(reply, dict) and ("ok" in reply or set(reply) == {"result"}):
            return reply.get("result")
        if 200 <= status < 300:
            return reply
        raise ZsupError(f"HTTP {status} from {self.endpoint}: {raw[:200].decode('utf-8', 'replace').strip()}")

    def close(self) -> None:
        pass


def connect(args: argparse.Namespace) -> Client | HttpBus:
    """A connection to zsupd that has answered `ping`, or Unavailable.

    Checking first makes "no zsupd" one fast, clear error instead of a timeout in the middle of
    a command, and it means no command is sent to an endpoint that cannot answer.
    """
    endpoint = args.endpoint or default_endpoints()[0]
    if endpoint.startswith(("http://", "https://")):
        conn: Client | HttpBus = HttpBus(endpoint)
    else:
        if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
            raise Unavailable(f"no zsupd at {endpoint} (no such socket; is zsupd running?)")
        curve = None
        if args.curve_key or args.server_key:
            if not (args.curve_key and args.server_key):
                raise BadRequest("--curve-key and --server-key go together")
            from zsup.bus.curve import client_curve
            curve = client_curve(args.curve_key, args.server_key)
        conn = Client(endpoint, timeout=COMMAND_TIMEOUT, curve=curve)
    try:
        conn.request("ping", {}, timeout=PING_TIMEOUT)
    except Unavailable:
        conn.close()
        raise Unavailable(f"no zsupd answering at {endpoint} (is it running?)") from None
    except BaseException:
        conn.close()
        raise
    return conn


def session_jobs(conn, app: str) -> list[str]:
    """The session's jobs (`app.type`), or NotFound when the app is not loaded."""
    names = conn.jobs(session=app)
    if not names:
        raise NotFound(f"no application {app!r} loaded in zsupd")
    return names


# ============================================================================ subcommands
def cmd_load(args: argparse.Namespace, out: TextIO) -> int:
    """Load the app as one session with `load_session`: zsupd checks every job before loading
    any and starts them in priority order, so a bad job leaves nothing half-loaded."""
    concurrency = parse_concurrency(args.concurrency)
    procfile = load_procfile(args, args.name)
    jobs = procfile.job_dicts(concurrency)
    conn = connect(args)
    try:
        names = conn.load_session(session=procfile.app, configs=jobs)
    finally:
        conn.close()
    counts = ", ".join(f"{job['name']} ({job['numprocesses']})" for job in jobs)
    print(f"Loaded {procfile.app}: {counts}", file=out)
    return 0 if names else 1


def cmd_unload(args: argparse.Namespace, out: TextIO) -> int:
    """Remove the whole session; zsupd stops its processes gracefully."""
    app = app_name(args, args.name)
    conn = connect(args)
    try:
        names = conn.unload_session(session=app)
    finally:
        conn.close()
    print(f"Unloaded {app}: {', '.join(n.partition('.')[2] for n in names)}", file=out)
    return 0


def parse_scale_specs(specs: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """`[APP] web=3 worker+2` -> (APP or None, [("web", "=3"), ("worker", "+2")]).

    The first word is the app when it is not a scale order. Everything is checked before
    anything is sent, so a typo in the last order does not leave the first ones applied.
    """
    app = None
    if specs and not SCALE_RE.match(specs[0]):
        app, specs = specs[0], specs[1:]
    if not specs:
        raise BadRequest("scale: give at least one TYPE=N, TYPE+N or TYPE-N")
    orders = []
    for spec in specs:
        match = SCALE_RE.match(spec)
        if not match:
            raise BadRequest(f"scale: bad order {spec!r} (expected TYPE=N, TYPE+N or TYPE-N)")
        orders.append((match.group(1), match.group(2) + match.group(3)))
    return app, orders


def cmd_scale(args: argparse.Namespace, out: TextIO) -> int:
    """Scale each type with the `scale` bus command ("=3", "+2", "-1" are explicit there)."""
    name, orders = parse_scale_specs(args.specs)
    app = app_name(args, name)
    conn = connect(args)
    try:
        known = [n.partition(".")[2] for n in session_jobs(conn, app)]
        for ptype, _ in orders:
            if ptype not in known:
                raise BadRequest(f"unknown process type {ptype!r} in {app} (known: {', '.join(known)})")
        for ptype, n in orders:
            print(f"Scaling {ptype} processes... ", end="", file=out, flush=True)
            result = conn.scale(name=f"{app}.{ptype}", n=n)
            print(f"done, now running {result['numprocesses']}", file=out, flush=True)
    finally:
        conn.close()
    return 0


def format_uptime(seconds: float) -> str:
    """gaffer's `ps` uptime: M:SS.cc under an hour, H:MM:SS from then on."""
    seconds = max(0.0, seconds)
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}:{rest:05.2f}"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def cmd_ps(args: argparse.Namespace, out: TextIO) -> int:
    """Print the manual's layout, one block per process type (`info` and `stats`)."""
    app = app_name(args, args.name)
    conn = connect(args)
    try:
        for job in session_jobs(conn, app):
            info = conn.info(name=job)
            try:
                stats = conn.stats(name=job)
            except NotFound:
                continue  # unloaded between the two calls
            print(f"=== {info['name']}: `{info['config']['cmd']}`", file=out)
            print(f"Total CPU: {stats.get('cpu', 0.0):f} Total MEM: {stats.get('mem', 0.0):.2f}", file=out)
            print(file=out)
            for proc in info["processes"]:
                if proc["state"] == "exited":
                    continue
                note = "" if proc["state"] == "running" else f" ({proc['state']})"
                committed = " (one-off)" if proc.get("committed") else ""
                print(f"{info['name']}.{proc['pid']}: up for {format_uptime(proc['uptime'])}{note}{committed}",
                      file=out)
    finally:
        conn.close()
    return 0


def check_ini_reads_back(text: str, jobs: list[dict]) -> None:
    """Refuse an ini export that zsupd would read as different jobs.

    zsupd's config reader has its own rules (a ` #` in a value starts a comment, `cmd` keeps
    its quotes, values are single lines, env names are upper-cased), so a value with those
    characters may not survive the trip. Reading the export back the way zsupd will, before
    anyone relies on it, turns a silently different job into a clear error.
    """
    from zsup.daemon.config import parse_config

    try:
        config = parse_config(text, "<export>")
    except ZsupError as exc:
        raise BadRequest(f"cannot export as ini ({exc.message}); use --format json") from None
    read_back = {(job["session"], job["name"]): job for job in config.job_dicts()}
    for job in jobs:
        got = read_back.get((job["session"], job["name"]), {})
        for key, value in job.items():
            if got.get(key) != value:
                what = f"{key} {value!r}" if key != "env" else "its environment"
                raise BadRequest(f"cannot export {job['session']}.{job['name']} as ini: zsupd would not read "
                                 f"{what} back unchanged; use --format json")


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    """Write the jobs as zsupd config sections or as the JSON job list that `load` takes."""
    procfile = load_procfile(args, args.name)
    concurrency = parse_concurrency(args.concurrency)
    if args.format == "json":
        text = procfile.export_json(concurrency)
    else:
        text = procfile.export_ini(concurrency)
        check_ini_reads_back(text, procfile.job_dicts(concurrency))
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise BadRequest(f"{args.out}: {exc.strerror or exc}") from None
    else:
        out.write(text)
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """Run one command with the app's environment and root, and pass its exit code through.

    It runs directly (not in zsupd): a one-off command belongs to the terminal, so it keeps
    its stdin and tty, and Ctrl-C reaches it as usual. One argument is a shell line, as a
    Procfile line is (`zsup run 'echo $PORT'`); several are run as they are.
    """
    concurrency = parse_concurrency(args.concurrency)
    procfile = load_procfile(args)
    procfile.check_types(concurrency)  # accepted as gaffer does; checked, otherwise unused
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise BadRequest("run: no command given")
    env = {**os.environ, **procfile.env}
    argv = ["/bin/sh", "-c", command[0]] if len(command) == 1 else command
    try:
        child = subprocess.Popen(argv, cwd=procfile.root, env=env)
    except OSError as exc:
        raise BadRequest(f"cannot run {command[0]!r}: {exc.strerror or exc}") from None
    # The terminal sends SIGINT to the child itself; we only wait for its verdict.
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    return 128 - code if code < 0 else code


class Foreground:
    """`zsup start`: the Manager in this process, its events printed as foreman-style lines.

    Manager listeners run in the manager's own threads and must be quick, so they only queue
    lines; the main thread writes them. A slow terminal then never stalls supervision, and
    signal handlers (which run in the main thread) only set a flag.
    """

    def __init__(self, out: TextIO, colour: bool, names: list[str]):
        self.out = out
        self.colour = colour
        self.colours = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}
        self.width = max([len(n) + 3 for n in names] + [len("zsup")])
        self.lines: queue.Queue = queue.Queue()
        self.stop_requests = 0
        self.os_pids: set[int] = set()

    def on_proc(self, topic: str, msg: dict, data: bytes | None) -> None:
        event, name, pid = msg.get("event"), msg.get("name"), msg.get("pid")
        if event == "spawn":
            self.os_pids.add(msg["os_pid"])
            self.lines.put((name, pid, f"spawn process with pid {msg['os_pid']}"))
        elif event == "exit":
            self.os_pids.discard(msg["os_pid"])
            if msg.get("term_signal"):
                how = f"killed by signal {msg['term_signal']}"
            else:
                how = f"exit code {msg.get('exit_code')}"
            self.lines.put((name, pid, f"exit process with pid {msg['os_pid']} ({how})"))
        elif event == "spawn_error":
            self.lines.put((name, pid, f"cannot spawn: {msg.get('error')}"))

    def on_io(self, topic: str, msg: dict, data: bytes | None) -> None:
        if not data:
            return
        name = msg["job"].partition(".")[2]
        for line in data.decode("utf-8", "replace").splitlines():
            self.lines.put((name, msg["pid"], line))

    def request_stop(self, signum: int, frame) -> None:
        self.stop_requests += 1

    def write(self, name: str, pid: Any, text: str) -> None:
        label = f"{name}.{pid}" if pid is not None else name
        prefix = f"{time.strftime('%H:%M:%S')} {label.ljust(self.width)} |"
        if self.colour:
            prefix = f"\x1b[{self.colours.get(name, '0')}m{prefix}\x1b[0m"
        self.out.write(f"{prefix} {text}\n")

    def drain(self, wait: float) -> None:
        """Write what is queued; wait up to `wait` seconds for the first line."""
        try:
            item = self.lines.get(timeout=wait)
        except queue.Empty:
            return
        while True:
            self.write(*item)
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                break
        self.out.flush()

    def kill_all(self) -> None:
        """Second Ctrl-C: the user will not wait for graceful timeouts."""
        for os_pid in list(self.os_pids):
            try:
                os.killpg(os_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def cmd_start(args: argparse.Namespace, out: TextIO) -> int:
    """Run the app (or one process type) in the foreground until SIGINT or SIGTERM.

    A first signal stops every process gracefully (stop signal, graceful_timeout, SIGKILL) and
    exits 0 once all are gone; a second one kills what is left at once (exit code 1: the stop
    was not clean).
    """
    from zsup.core.manager import Manager

    concurrency = parse_concurrency(args.concurrency)
    procfile = load_procfile(args)
    jobs = procfile.job_dicts(concurrency, [args.name] if args.name else None)
    view = Foreground(out, colour=out.isatty() and not os.environ.get("NO_COLOR"),
                      names=[job["name"] for job in jobs])
    previous = {sig: signal.signal(sig, view.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    manager = Manager(subreaper=True)
    manager.events.subscribe("proc.", view.on_proc)
    manager.events.subscribe("io.", view.on_io)
    stopper: threading.Thread | None = None
    try:
        manager.start()
        manager.load_many(jobs, session=procfile.app)
        while not view.stop_requests:
            view.drain(0.1)
        view.lines.put(("zsup", None, "stopping all processes (press Ctrl-C again to kill them now)"))
        stopper = threading.Thread(target=manager.stop, name="zsup-stop", daemon=True)
        stopper.start()
        forced = False
        while stopper.is_alive():
            if view.stop_requests > 1 and not forced:
                forced = True
                view.lines.put(("zsup", None, "killing all processes"))
                view.kill_all()
            view.drain(0.05)
        view.drain(0)
        return 1 if forced else 0
    except BrokenPipeError:
        # Our stdout went away (`zsup start | head`): nobody is watching, so stop.
        _silence_stdout()
        return 0
    finally:
        if stopper is None and manager.started:
            manager.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


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
        _silence_stdout()
        return 1


if __name__ == "__main__":
    sys.exit(main())
