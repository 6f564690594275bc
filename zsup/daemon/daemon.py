"""zsupd's body: the Manager behind the bus, with config, store, logs and webhooks around it.

Threads (DESIGN.md): the main thread waits for signals; the bus's control thread runs
commands (`zsup.daemon.commands`); the supervisor and IO loops belong to the Manager; the bus's
publisher thread owns the PUB socket; webhooks, the log writer and the stats sampler have one
thread each. Events flow one way: Manager -> EventEmitter -> (bus publisher, webhooks, -vv
console).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time

from zsup.bus import curve as curvekeys
from zsup.bus import topics
from zsup.bus.server import BusServer
from zsup.bus.topics import INTERNAL_SESSION, is_internal
from zsup.core.events import EventEmitter
from zsup.core.jobspec import JobSpec
from zsup.core.logfiles import LogWriter, log_paths
from zsup.core.manager import Manager
from zsup.daemon import agent_commands, commands, key_commands, logtargets, socket_commands, task_commands
from zsup.daemon.config import ConfigError, DaemonConfig, load_config
from zsup.daemon.init import InitMode
from zsup.daemon.joblogs import JobLogs, log_defaults
from zsup.daemon.metrics import DaemonMetrics
from zsup.daemon.notify import Notifier, summary
from zsup.daemon.plugins import PluginContext, PluginHost
from zsup.daemon.sockets import Sockets
from zsup.daemon.store import Store, fingerprint
from zsup.errors import ZsupError

log = logging.getLogger("zsupd")


class Daemon:
    def __init__(self, config: DaemonConfig, overrides: dict | None = None, verbose: int = 0,
                 http_bind: dict | None = None, init: bool = False):
        self.config = config
        self.overrides = overrides or {}
        self.verbose = verbose
        self.http_bind = http_bind
        self.settings = config.settings
        self.state_dir = self.settings["state_dir"]
        self.events = EventEmitter()
        # The main loop sleeps on a pipe, not a threading.Event: a signal handler that set an
        # Event could run while the main thread holds the Event's own lock (inside wait()),
        # and hang zsupd. Writing a byte takes no lock.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._ready = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._reopen_requested = False
        self.store: Store | None = None
        self.bus: BusServer | None = None
        self.webhooks = None
        self._detached: set[int] = set()  # os pids of detached processes (supervisor thread)
        self.notifier = Notifier()  # takes NOTIFY_SOCKET out of the jobs' environment
        self.init_mode = InitMode(self, init, self.settings.get("exit_with"))
        #: Every bus command's handler, filled explicitly (control thread, read-only after).
        self.dispatch = commands.Dispatcher(commands.HANDLERS, task_commands.HANDLERS, agent_commands.HANDLERS,
                                            key_commands.HANDLERS, socket_commands.HANDLERS)

    # ------------------------------------------------------------------ start and stop
    def start(self) -> None:
        from zsup.daemon.webhooks import Webhooks

        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.store = Store(os.path.join(self.state_dir, "zsupd.db"))
        self.log_writer = LogWriter(on_error=self._on_log_error, on_resumed=self._on_log_resumed)
        self.job_logs = JobLogs(self.log_writer, log_defaults(self.settings),
                                logtargets.from_settings(self.settings))
        self.manager = Manager(self.events, log_writer=self.job_logs, subreaper=True, pids=self.store.pid_counter())
        self.manager.max_processes_total = self.settings["max_processes_total"]
        self.manager.use_cgroups()  # cgroup v2 where delegated, else process groups (zsup/core/cgroup.py)
        self.sockets = Sockets.open(self.config.sockets, self.manager, self.config.path)  # before any thread
        socket_commands.restore(self)  # those added over the bus
        self.metrics = DaemonMetrics(self)
        self.bus = BusServer(
            handler=self._handle,
            endpoints=self._bus_endpoints(),
            on_subscribe=self._on_subscribe,
            curve=self._curve(),
            max_request_bytes=self.settings["max_request_size"],
        )
        self.webhooks = Webhooks(self.config.webhooks, self.settings["webhook_timeout"], self.settings["webhook_queue"])
        self.bus.start()  # first: refuses to start when another zsupd owns the socket
        self.log_writer.start()
        if self.job_logs.target is not None:
            self.job_logs.target.start()
        self.events.subscribe("", self.bus.publish, deferred=True)  # the publisher thread: a wake per burst
        self.events.subscribe("", self.webhooks, deferred=True)
        self.events.subscribe(topics.PROC, self.metrics.on_event)
        self.events.subscribe(topics.JOB, self.metrics.on_event)
        if self.verbose >= 2:
            self.events.subscribe(topics.IO, self._print_output)
        self.webhooks.start()
        self.plugins = PluginHost(PluginContext(self.bus.endpoints["router"][0], self.bus.endpoints["pub"][0],
                                                self.config, self.settings.get("plugin_dir"), self.settings))
        self.plugins.load()
        from zsup.core.guard import OrphanGuard
        self.guard = OrphanGuard(os.path.join(self.state_dir, "zsupd.pgids"))
        self.manager.ignore_child(self.guard.start())
        self.events.subscribe(topics.PROC, self.guard.on_event, deferred=True)
        self.manager.group_listeners.append(self.guard.forget)
        self.manager.start()
        self._find_detached()
        self.events.subscribe(topics.PROC, self._record_detached)
        self._load_initial_jobs()
        self._start_services()
        self._start_gateway()
        self._ready.set()
        self.plugins.start()
        self.registrar = None
        if self.settings.get("lookupd_addresses"):
            from zsup.lookup.client import LookupRegistrar  # urllib and ssl only when needed

            self.registrar = LookupRegistrar(self)
            self.registrar.start()
        self.fleet_registrar = None
        if self.settings.get("registry"):
            from zsup.lookup.etcd_registrar import EtcdRegistrar  # its own thread: never blocks zsupd

            self.fleet_registrar = EtcdRegistrar(self)
            self.fleet_registrar.start()
        self.events.publish("sys.start", {"event": "start", "pid": os.getpid(), "state_dir": self.state_dir})
        log.info("zsupd started: bus %s, events %s", ", ".join(self.bus.endpoints["router"]),
                 ", ".join(self.bus.endpoints["pub"]))

    def stop(self) -> None:
        if getattr(self, "registrar", None) is not None:
            self.registrar.stop()
        if getattr(self, "fleet_registrar", None) is not None:
            self.fleet_registrar.stop()
        self.events.publish("sys.stop", {"event": "stop", "pid": os.getpid()})
        self.plugins.stop()
        self.manager.stop()
        self.sockets.close()
        self.guard.stop()
        self.webhooks.stop()
        self.log_writer.stop()
        if self.job_logs.target is not None:
            self.job_logs.target.stop()
        self.bus.stop()
        self.store.close()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads the config, SIGUSR1 reopens logs."""
        # A signal sent to the process may land on any of its threads. The C-level handler
        # then only sets a flag, and a main thread asleep on a lock would sleep on: so the
        # main thread sleeps on a pipe that the handler writes to, whichever thread ran it.
        previous_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)
        self.start()
        self.init_mode.start()
        self.notifier.ready(self.status_line())
        self.notifier.start(self.status_line)
        try:
            while not self._stop_requested:
                select.select([self._wake_r], [], [])
                while True:
                    try:
                        if not os.read(self._wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
                if self._stop_requested:
                    break
                if self._reload_requested:
                    self._reload_requested = False
                    self.notifier.reloading()
                    try:
                        self.reload_config()
                    except ZsupError:
                        pass  # already logged and published; the old config keeps running
                    self.notifier.ready(self.status_line())
                if self._reopen_requested:
                    self._reopen_requested = False
                    self.reopen_logs()
        finally:
            signal.set_wakeup_fd(previous_fd)
            self.notifier.stopping()
            self.stop()
            self.notifier.stop()
            self.init_mode.stop()
        return self.init_mode.exit_code()

    def status_line(self) -> str:
        """One line about the jobs, for systemd's STATUS= (zsup.daemon.notify)."""
        return summary(self.manager.status(), is_internal)

    def _on_signal(self, signum, frame) -> None:
        # Runs in the main thread, between two waits of the loop above: set flags, wake it.
        if signum == signal.SIGHUP:
            self._reload_requested = True
        elif signum == signal.SIGUSR1:
            self._reopen_requested = True
        else:
            self._stop_requested = True
        self._wake()

    def request_stop(self) -> None:
        """Any thread: make run() return (it stops everything first)."""
        self._stop_requested = True
        self._wake()

    def _wake(self) -> None:
        """Wake the main loop (any thread, or a signal handler)."""
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending anyway

    # ------------------------------------------------------------------ bus wiring
    def _handle(self, cmd: str, args: dict):
        # The bus is bound first (it refuses a second zsupd on the same socket before any
        # child starts), but commands wait until the config's jobs are loaded: a client that
        # can ping also sees every job.
        self._ready.wait(120)
        try:
            result = self.dispatch(self, cmd, args)
        except ZsupError as exc:
            self.metrics.count_request(cmd, exc.code)
            raise
        except BaseException:
            self.metrics.count_request(cmd, "internal")
            raise
        self.metrics.count_request(cmd, "ok")
        return result

    def _bus_endpoints(self) -> dict:
        router = [self.settings["bus"]] + ([self.settings["bus_tcp"]] if self.settings.get("bus_tcp") else [])
        pub = [self.settings["pub"]] + ([self.settings["pub_tcp"]] if self.settings.get("pub_tcp") else [])
        return {"router": router, "pub": pub}

    def _curve(self) -> dict | None:
        if self.settings.get("curve_secret_key_file"):
            return curvekeys.server_curve(self.settings["curve_secret_key_file"],
                                          self.settings.get("curve_authorized_keys"))
        if self.settings.get("insecure_tcp"):
            return {"insecure": True}
        return None

    def _on_subscribe(self, prefix: str, subscribed: bool) -> None:
        # Only an explicit stats subscription starts sampling: `zsupctl watch` (everything)
        # should not make zsupd read /proc every second.
        if prefix.startswith("stats"):
            (self.manager.monitor if subscribed else self.manager.unmonitor)(prefix)

    def _print_output(self, topic: str, msg: dict, data: bytes | None) -> None:
        if data:
            prefix = f"{msg['job']}.{msg['pid']} | ".encode()
            lines = data.splitlines(keepends=True)
            sys.stdout.buffer.write(b"".join(prefix + l if l.endswith(b"\n") else prefix + l + b"\n" for l in lines))
            sys.stdout.flush()

    def _on_log_error(self, message: str) -> None:  # the writer logged it: once an episode
        self.events.publish("sys.log_error", {"event": "log_error", "message": message})

    def _on_log_resumed(self, message: str) -> None:
        self.events.publish("sys.log_resumed", {"event": "log_resumed", "message": message})

    # ------------------------------------------------------------------ jobs and the store
    # ------------------------------------------------------------------ detached processes
    def _find_detached(self) -> None:
        """Detached processes a previous zsupd left running, if they are still the same
        processes (pid and psutil's start time: a reused pid is not ours), go back to their
        jobs when these are loaded; the other records are dropped."""
        found = []
        for record in self.store.detached():
            import psutil  # here, not at the top: a start with no record never loads it
            try:
                same = abs(psutil.Process(record["os_pid"]).create_time() - record["create_time"]) < 0.05
            except psutil.Error:
                same = False
            if same:
                found.append(record)
            else:
                self.store.forget_detached(record["os_pid"])
        if found:
            self.manager.expect_detached(found)

    def _record_detached(self, topic: str, msg: dict, data) -> None:
        """Event listener (supervisor thread): keep the store's list of detached processes.
        The SQLite work, and psutil's /proc read, happen on the store's thread."""
        event, os_pid = msg.get("event"), msg.get("os_pid")
        if event == "spawn" and msg.get("detach"):
            self._detached.add(os_pid)
            if not msg.get("adopted"):  # one found again keeps its record
                self.store.defer(self._save_detached, msg["job"], os_pid, time.time())
        elif event == "reap" and os_pid in self._detached:
            self._detached.discard(os_pid)
            self.store.defer(self.store.forget_detached, os_pid)

    def _save_detached(self, job: str, os_pid: int, started: float) -> None:
        import psutil
        try:
            create_time = psutil.Process(os_pid).create_time()
        except psutil.Error:
            return  # gone already: its reap comes next
        self.store.save_detached(job, os_pid, create_time, started)

    def _load_initial_jobs(self) -> None:
        """The config file's jobs, with the run-time changes the store remembers."""
        rows = self.store.jobs()
        to_load: list[tuple[dict, bool]] = []
        for spec in self.config.jobs:
            row = rows.pop(spec.fullname, None)
            if row is not None and row.fingerprint == fingerprint(spec):
                if row.removed:
                    continue
                to_load.append(({**row.config, "numprocesses": row.numprocesses}, row.active))
            else:
                if row is not None:
                    self.store.forget_job(spec.fullname)  # the section changed: the file wins
                to_load.append((spec.to_dict(), True))
        for name, row in rows.items():
            if row.origin == "runtime" and not row.removed:
                to_load.append(({**row.config, "numprocesses": row.numprocesses}, row.active))
            else:
                self.store.forget_job(name)
        loaded = []
        for config, active in to_load:
            try:
                info = self.manager.load(config, start=False)
                loaded.append((info["job"], active, info["config"]["priority"]))
            except ZsupError as exc:
                log.error("cannot restore job %s: %s", config.get("name"), exc.message)
        for name, active, _ in sorted(loaded, key=lambda x: x[2]):
            if active:
                self.manager.start_job(name)

    def supervise(self, fn):
        """Run `fn()` on the supervisor thread, as one call (manager methods inside run inline)."""
        return self.manager.run_supervised(fn)

    def remember(self, name: str, removed: bool = False, info: dict | None = None) -> None:
        """Record a run-time change of one job so that a restart of zsupd keeps it.

        `info` is what Manager.saved answered in the supervised call that changed it (see
        commands.changing); without it the manager is asked (a second round trip)."""
        if is_internal(name):
            return
        file_spec = next((s for s in self.config.jobs if s.fullname == name), None)
        fp = fingerprint(file_spec) if file_spec else None
        if removed:
            if file_spec:
                self.store.save_job(name, "file", file_spec.to_dict(), 0, False, removed=True, fp=fp)
            else:
                self.store.forget_job(name)
            return
        if info is None:
            info = self.manager.saved(name)
        self.store.save_job(name, "file" if file_spec else "runtime", info["config"], info["numprocesses"],
                            info["active"], fp=fp)

    def reload_config(self) -> dict:
        """Re-read the config file and apply only what changed; a bad file changes nothing."""
        try:
            new = load_config(self.config.path, self.overrides)
            stale = self.sockets.apply_to(new.sockets, self.manager, new.path)  # kept when unchanged
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc.message)
            self.events.publish("sys.reload_error", {"event": "reload_error", "message": exc.message})
            raise
        old = {s.fullname: s for s in self.config.jobs}
        fresh = {s.fullname: s for s in new.jobs}
        running = set(self.manager.jobs())
        removed = [n for n in old if n not in fresh]
        added = [n for n in fresh if n not in old]
        changed = [n for n in fresh if n in old and fingerprint(fresh[n]) != fingerprint(old[n])]
        unchanged = [n for n in fresh if n in old and n not in changed]
        for name in removed:
            if name in running:
                self.manager.unload(name)
            self.store.forget_job(name)
        for name in sorted(added + changed, key=lambda n: fresh[n].priority):
            self.store.forget_job(name)  # the job's own section changed: the file wins
            if name in running:
                self.manager.update(fresh[name].to_dict(), start=True)
            else:
                self.manager.load(fresh[name].to_dict(), start=True)
        # a job the file still has but a run-time unload removed keeps its run-time state
        old_settings = self.settings
        self.config = new
        self.settings = new.settings
        self.manager.max_processes_total = new.settings["max_processes_total"]
        self.job_logs.defaults = log_defaults(new.settings)
        self.job_logs._cache.clear()
        if logtargets.settings_key(new.settings) != logtargets.settings_key(old_settings):
            self._replace_log_target(new.settings)
        self.webhooks.hooks = type(self.webhooks)(new.webhooks).hooks
        if new.webhooks and self.webhooks._thread is None:
            self.webhooks.start()
        self.plugins.restart()
        self.sockets.close_stale(stale)
        result = {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged}
        self.events.publish("sys.reload", {"event": "reload", **result})
        log.info("config reloaded: %s", result)
        return result

    # ------------------------------------------------------------------ logs
    def _replace_log_target(self, settings: dict) -> None:
        """A reload changed log_target (or its address): new target first, then the old one
        is flushed and closed; one that cannot be made keeps the old one (logged)."""
        try:
            target = logtargets.from_settings(settings)
        except ZsupError as exc:
            log.error("reload: %s; job output keeps going where it went", exc.message)
            return
        if target is not None:
            target.start()
        old, self.job_logs.target = self.job_logs.target, target
        if old is not None:
            old.stop()

    def reopen_logs(self) -> None:
        self.log_writer.reopen()
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.close()  # reopened at its next record

    def log_paths(self, name: str, label: str | None) -> dict:
        info = self.manager.info(name)
        spec = JobSpec.from_dict(info["config"])
        settings = self.job_logs.settings(spec)
        labels = [label] if label else list(dict.fromkeys(spec.redirect_output))
        return {"job": name, "log": settings.log, "format": settings.log_format,
                "paths": {l: log_paths(name, l, settings) for l in labels}}

    def _start_services(self) -> None:
        """Tasks and agent processes: mark what a previous zsupd left unfinished, resume
        unfinished agent set-ups."""
        from zsup.services.agent import AgentService
        from zsup.services.tasks import TaskService

        self.tasks = TaskService(self)
        self.agent = AgentService(self)

    # ------------------------------------------------------------------ HTTP gateway
    def _start_gateway(self) -> None:
        """zsupd runs its gateway as a job of its own: supervised, restarted, logged."""
        if not (self.config.http_endpoints or self.http_bind):
            return
        args = ["-m", "zsup.cli.http_gateway", "--bus", self.bus.endpoints["router"][0],
                "--pub", self.bus.endpoints["pub"][0]]
        if self.config.path:
            args += ["-c", self.config.path]
        if self.http_bind:
            for key, value in self.http_bind.items():
                if value is not None:
                    args += [f"--{key}", str(value)]
        # A gateway that cannot start (it cannot listen, a bad endpoint) exits at once with one
        # error line: its job is then `failing` with that line, logged once (supervision.py).
        self.manager.load({"name": "http", "session": INTERNAL_SESSION, "cmd": sys.executable, "args": args,
                           "graceful_timeout": 5, "priority": 0,
                           "env": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
