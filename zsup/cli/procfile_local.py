"""The `zsup` commands that run the application here, without zsupd: start and run.

`start` embeds the supervisor core (zsup.core.manager.Manager) in this process: nothing else
needs to run, and Ctrl-C stops everything. `run` runs one command with the app's environment.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, TextIO

from zsup.cli.procfile_app import app_port, load_procfile
from zsup.errors import BadRequest
from zsup.services.procfile import parse_concurrency

COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")


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
    # foreman and honcho give a one-off command the base PORT and no instance name.
    env = {**os.environ, **procfile.env, "PORT": str(app_port(args, procfile))}
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

    def __init__(self, out: TextIO, colour: bool, names: list[str], width: int = 0):
        self.out = out
        self.colour = colour
        self.colours = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}
        self.width = max([len(n) + 3 for n in names] + [len("zsup"), width])
        self.lines: queue.Queue = queue.Queue()
        self.stop_requests = 0
        self.os_pids: set[int] = set()
        self.instances: dict[Any, Any] = {}  # zsup pid -> instance number (web.2)
        self.restarts: dict[str, int] = dict.fromkeys(names, 0)
        self.first_exit: int | None = None  # exit status of the first process that exited
        self.stopping = False
        # Called (in the manager's thread, inline) when a first process exits on its own.
        self.on_first_exit: Any = None

    def on_proc(self, topic: str, msg: dict, data: bytes | None) -> None:
        event, name, pid = msg.get("event"), msg.get("name"), msg.get("pid")
        if event == "spawn":
            self.os_pids.add(msg["os_pid"])
            self.instances[pid] = msg.get("instance") or pid
            self.lines.put((name, self.instances[pid], f"spawn process with pid {msg['os_pid']}"))
        elif event == "exit":
            self.os_pids.discard(msg["os_pid"])
            if msg.get("term_signal"):
                how = f"killed by signal {msg['term_signal']}"
                status = 128 + msg["term_signal"]
            else:
                how = f"exit code {msg.get('exit_code')}"
                status = msg.get("exit_code") or 0
            if not self.stopping and not msg.get("reason"):
                self.restarts[name] = self.restarts.get(name, 0) + 1
                if self.first_exit is None:
                    self.first_exit = status
                    if self.on_first_exit:
                        self.on_first_exit()
            self.lines.put((name, self.instances.pop(pid, pid), f"exit process with pid {msg['os_pid']} ({how})"))
        elif event == "spawn_error":
            self.lines.put((name, self.instances.get(pid, pid), f"cannot spawn: {msg.get('error')}"))

    def on_io(self, topic: str, msg: dict, data: bytes | None) -> None:
        if not data:
            return
        name = msg["job"].partition(".")[2]
        instance = self.instances.get(msg["pid"], msg["pid"])
        for line in data.decode("utf-8", "replace").splitlines():
            self.lines.put((name, instance, line))

    def request_stop(self, signum: int, frame) -> None:
        self.stop_requests += 1

    def summary(self) -> str:
        """Per-type restart counts: how often each type's processes exited while running."""
        return "exits while running, per type: " + ", ".join(f"{name} {n}" for name, n in self.restarts.items())

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
    """Run the app (or one process type) in the foreground until SIGINT or SIGTERM, or, as
    foreman does, until one process exits (unless --keep-going: then it is restarted).

    A first signal stops every process gracefully (stop signal, graceful_timeout, SIGKILL) and
    exits 0 once all are gone; a second one kills what is left at once (exit code 1: the stop
    was not clean). When a process's exit stopped the app, the exit code is that process's
    (128 + N for a signal N).
    """
    from zsup.core.manager import Manager

    if args.attach:
        from zsup.cli.procfile_bus import attach
        return attach(args, out)
    concurrency = parse_concurrency(args.concurrency)
    procfile = load_procfile(args)
    if not procfile.processes:
        raise BadRequest(f"{procfile.path}: no process types to start")
    jobs = procfile.job_dicts(concurrency, [args.name] if args.name else None, app_port(args, procfile))
    width = max(len(f"{job['name']}.{job['numprocesses']}") for job in jobs)
    view = Foreground(out, colour=out.isatty() and not os.environ.get("NO_COLOR"),
                      names=[job["name"] for job in jobs], width=width)
    previous = {sig: signal.signal(sig, view.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    manager = Manager(subreaper=True)
    if not args.keep_going:
        # foreman: the first exit stops the app. stop_all runs inline here (we are in the
        # manager's thread, inside the exit event), before the job would restart the process.
        view.on_first_exit = lambda: manager.stop_all()
    manager.events.subscribe("proc.", view.on_proc)
    manager.events.subscribe("io.", view.on_io)
    stopper: threading.Thread | None = None
    try:
        manager.start()
        manager.load_many(jobs, session=procfile.app)
        while not view.stop_requests and (args.keep_going or view.first_exit is None):
            view.drain(0.1)
        view.stopping = True
        if not view.stop_requests:
            view.lines.put(("zsup", None, "a process exited: stopping all processes (use --keep-going to "
                                          "restart it instead)"))
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
        view.write("zsup", None, view.summary())
        out.flush()
        if forced:
            return 1
        return 0 if view.stop_requests or view.first_exit is None else view.first_exit
    except BrokenPipeError:
        # Our stdout went away (`zsup start | head`): nobody is watching, so stop.
        silence_stdout()
        return 0
    finally:
        if stopper is None and manager.started:
            manager.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
