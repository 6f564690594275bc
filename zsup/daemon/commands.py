"""The handlers of zsupd's own bus commands, one function each; zsupd's dispatcher.

What each command takes and answers is declared once in zsup/bus/schema.py; a handler is a
function `name(daemon, **args)` whose parameters are exactly the declared ones (checked when the
Dispatcher is made). The Dispatcher checks every request against the declaration (unknown
command, unknown or missing argument, wrong type: `bad_request`, before anything runs). The
daemon fills it explicitly with these handlers and those of task_commands and agent_commands.

A command that changes persisted state makes its change and reads what to store in one call on
the supervisor thread (`changing`), then records it in the store (zsup/daemon/store.py) on the
control thread, so run-time changes survive a restart of zsupd.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

from zsup import __version__
from zsup.bus.protocol import RawJSON
from zsup.bus.schema import COMMANDS as DECLARED
from zsup.bus.schema import check_request
from zsup.bus.topics import INTERNAL_SESSION, PROTOCOL_VERSION, is_internal
from zsup.core.jobspec import JobSpec, split_job_name
from zsup.daemon.handlers import Handlers
from zsup.errors import BadRequest, Forbidden, NotFound

#: zsupd's own handlers (this module), by command name.
HANDLERS = Handlers()
command = HANDLERS.add


class Dispatcher:
    """Runs bus commands by name. Made once at start, read-only afterwards (control thread)."""

    def __init__(self, *handler_maps: dict[str, Callable]):
        self.handlers: dict[str, Callable] = {}
        for handlers in handler_maps:
            for name, fn in handlers.items():
                check_handler(name, fn)
                if name in self.handlers:
                    raise ValueError(f"two handlers for bus command {name!r}")
                self.handlers[name] = fn

    def names(self) -> list[str]:
        return sorted(self.handlers)

    def __call__(self, daemon, cmd: str, args: dict) -> Any:
        fn = self.handlers.get(cmd)
        if fn is None:
            raise BadRequest(f"unknown command {cmd!r}")
        check_request(cmd, args)
        protect(daemon, cmd, args)
        return fn(daemon, **args)


def check_handler(name: str, fn: Callable) -> None:
    """A handler must be declared, with the same parameters (names, required or not)."""
    spec = DECLARED.get(name)
    if spec is None:
        raise ValueError(f"bus command {name!r} has a handler but no declaration in zsup/bus/schema.py")
    params = list(inspect.signature(fn).parameters.values())[1:]
    got = [(p.name, p.default is inspect.Parameter.empty) for p in params]
    want = [(p.name, p.required) for p in spec.params]
    if sorted(got) != sorted(want):
        raise ValueError(f"bus command {name!r}: handler takes {got}, the declaration says {want}")


# -- protected internals ----------------------------------------------------------------------
# zsupd's own jobs (session `zsupd`: the HTTP gateway) are its business: no request may stop,
# scale, unload, restart, signal or replace them, nor add jobs to their session, so no call
# made through the gateway can take the gateway down. Reading them (status, info, logs) is fine.
# Bulk commands (start_all, stop_all, restart) skip them instead of refusing.
_BY_NAME = ("unload", "reload", "restart_job", "rolling_restart", "start_job", "stop_job", "scale", "commit", "killall")
_BY_PID = ("stop_process", "kill", "send", "writelines")
_BY_SESSION = ("load_session", "unload_session")


def protect(d, cmd: str, args: dict) -> None:
    """Forbidden if `cmd` would change one of zsupd's own jobs (args already type-checked)."""
    job = None
    if cmd in _BY_NAME and args.get("name") is not None:
        job = _name(args["name"], args.get("session"))
    elif cmd in _BY_SESSION:
        job = f"{args['session']}."
    elif cmd in ("load", "update"):
        config = args.get("config") or {}
        session = args.get("session") or config.get("session")
        name = config.get("name")
        if session == INTERNAL_SESSION or (isinstance(name, str) and is_internal(name)):
            job = f"{INTERNAL_SESSION}.{name}"
    elif cmd == "task_create" and isinstance(args.get("app"), str):
        job = f"{args['app']}."
    elif cmd in _BY_PID:
        job = d.manager.get_process(args["pid"])["job"]
    if job is not None and is_internal(job):
        raise Forbidden(f"{cmd}: {job.rstrip('.')} is run by zsupd itself and cannot be changed "
                        "over the bus")


def _name(name, session=None) -> str:
    sess, short = split_job_name(name, session)
    return f"{sess}.{short}"


def changing(d, change: Callable[[], Any], names: Callable[[Any], Iterable[str]],
             removed: Iterable[str] = ()) -> Any:
    """Run `change()` on the supervisor thread and, in the same call, read the state to persist
    of the jobs `names(result)`; then record it (and the `removed` jobs) in the store."""

    def run():
        result = change()
        return result, [(name, d.manager.saved(name)) for name in names(result)]

    try:
        result, infos = d.supervise(run)
    finally:
        for name in removed:  # filled by change(): what it removed stays removed, even on error
            d.remember(name, removed=True)
    for name, info in infos:
        d.remember(name, info=info)
    return result


# -- about the daemon ----------------------------------------------------------------------
@command
def ping(d) -> str:
    return "pong"


@command
def version(d) -> dict:
    return {"version": __version__, "protocol": PROTOCOL_VERSION, "name": "zsupd",
            "cgroups": d.manager.cgroups.info()}  # zsup/core/cgroup.py


@command
def endpoints(d) -> dict:
    """Where this daemon listens: {"router": [...], "pub": [...]} (tcp ports resolved)."""
    return d.bus.endpoints


@command
def sockets(d) -> list[dict]:
    """The listening sockets ([socket:NAME]) and the loaded jobs that list each."""
    users = {name: d.manager.get(name).get("sockets") or [] for name in d.manager.jobs()}
    return [{**row, "jobs": [job for job, names in users.items() if row["name"] in names]}
            for row in d.sockets.info()]


@command
def metrics(d) -> dict:
    """Counters and gauges for monitoring (zsup.daemon.metrics; docs/metrics.md)."""
    return d.metrics.snapshot()


@command
def commands(d) -> list[str]:
    """The commands this daemon answers."""
    return d.dispatch.names()


@command
def reload_config(d) -> dict:
    """Re-read the config file and apply only the difference (as SIGHUP does)."""
    return d.reload_config()


@command
def reopen_logs(d) -> dict:
    d.reopen_logs()
    return {"ok": True}


@command
def log_paths(d, name: str, label: str | None = None, session: str | None = None) -> dict:
    return d.log_paths(_name(name, session), label)


# -- jobs -------------------------------------------------------------------------------------
@command
def load(d, config: dict, session: str | None = None, env: dict | None = None, start: bool = True) -> dict:
    return changing(d, lambda: d.manager.load(config, session=session, env=env, start=bool(start)),
                    lambda info: [info["job"]])


@command
def load_session(d, session: str, configs: list, start: bool = True, replace: bool = False) -> list[str]:
    """Load a group of jobs (a Procfile app) as one session: all or nothing."""
    if not isinstance(configs, list) or not configs:
        raise BadRequest("configs: expected a non-empty list of jobs")
    unloaded: list[str] = []

    def change():
        if replace:  # the new jobs are checked before the old ones go: all or nothing
            specs = [JobSpec.from_dict({k: v for k, v in c.items() if k != "session"} if isinstance(c, dict) else c,
                                       session) for c in configs]
            kept = sum(row["numprocesses"] for row in d.manager.status() if not row["job"].startswith(f"{session}."))
            total = kept + sum(spec.numprocesses for spec in specs)
            if total > d.manager.max_processes_total:
                raise BadRequest(f"numprocesses: {total} processes in all would be above max_processes_total "
                                 f"({d.manager.max_processes_total})")
            for name in d.manager.jobs(session=session):
                d.manager.unload(name)
                unloaded.append(name)
        return d.manager.load_many(configs, session=session, start=bool(start))

    # A job unloaded then loaded again is remembered as loaded: removals are recorded first.
    return changing(d, change, lambda names: names, removed=unloaded)


@command
def unload_session(d, session: str) -> list[str]:
    def change():
        names = d.manager.jobs(session=session)
        if not names:
            raise NotFound(f"no session {session}")
        for name in names:
            d.manager.unload(name)
        return names

    names = d.supervise(change)
    for name in names:
        d.remember(name, removed=True)
    return names


@command
def unload(d, name: str, session: str | None = None) -> dict:
    full = _name(name, session)
    result = d.manager.unload(full)  # nothing to read back: the store forgets or marks it
    d.remember(full, removed=True)
    return result


@command
def update(d, config: dict, session: str | None = None, env: dict | None = None, start: bool | None = None) -> dict:
    return changing(d, lambda: d.manager.update(config, session=session, env=env, start=start),
                    lambda info: [info["job"]])


@command
def reload(d, name: str | None = None, session: str | None = None) -> Any:
    """With a name: restart the job's processes (gaffer's reload). Without: reload_config."""
    if name is None:
        return d.reload_config()
    full = _name(name, session)
    return changing(d, lambda: d.manager.reload(full), lambda info: [info["job"]])


@command
def restart_job(d, name: str, session: str | None = None) -> dict:
    return d.manager.restart_job(_name(name, session))


@command
def rolling_restart(d, name: str, session: str | None = None, max_surge: int | None = None) -> dict:
    return d.manager.rolling_restart(_name(name, session), max_surge=max_surge)


@command
def restart(d) -> list[str]:
    """Restart every active job but zsupd's own, in priority order."""
    return d.supervise(_each_job(d, d.manager.restart_job, active_only=True))


@command
def start_job(d, name: str, session: str | None = None) -> dict:
    full = _name(name, session)
    return RawJSON(changing(d, lambda: d.manager.start_job(full), lambda _info: [full]))


@command
def stop_job(d, name: str, session: str | None = None) -> dict:
    full = _name(name, session)
    return RawJSON(changing(d, lambda: d.manager.stop_job(full), lambda _info: [full]))


def _each_job(d, act: Callable[[str], Any], active_only: bool = False) -> Callable[[], list[str]]:
    """Apply `act` to every job but zsupd's own, in priority order (run it supervised)."""
    def change():
        jobs = [(n, d.manager.saved(n)) for n in d.manager.jobs() if not is_internal(n)]
        names = [n for n, saved in sorted(jobs, key=lambda j: j[1]["config"]["priority"])
                 if saved["active"] or not active_only]
        for name in names:
            act(name)
        return names

    return change


@command
def start_all(d) -> list[str]:
    return changing(d, _each_job(d, d.manager.start_job), lambda names: names)


@command
def stop_all(d) -> list[str]:
    return changing(d, _each_job(d, d.manager.stop_job), lambda names: names)


@command
def scale(d, name: str, n: Any, session: str | None = None) -> dict:
    full = _name(name, session)
    return changing(d, lambda: d.manager.scale(full, n), lambda result: [result["job"]])


@command
def commit(d, name: str, graceful_timeout: float | None = None, env: dict | None = None,
           session: str | None = None) -> dict:
    pid = d.manager.commit(_name(name, session), graceful_timeout=graceful_timeout, env=env)
    return {"pid": pid}


@command
def jobs(d, session: str | None = None) -> list[str]:
    return d.manager.jobs(session=session)


@command
def sessions(d) -> list[str]:
    return d.manager.sessions()


@command
def info(d, name: str, session: str | None = None) -> dict:
    return RawJSON(d.manager.info_json(_name(name, session)))


@command
def get(d, name: str, session: str | None = None) -> dict:
    """A job's config, in the form `load` takes."""
    return d.manager.get(_name(name, session))


@command
def status(d) -> list[dict]:
    return d.manager.status()


@command
def stats(d, name: str, session: str | None = None) -> dict:
    out = d.manager.stats(_name(name, session))
    return {**out, "cgroup": d.manager.cgroups.stats(out["job"])}  # None without cgroups


@command
def process_stats(d, pid: int) -> dict:
    return d.manager.process_stats(pid)


@command
def pids(d, name: str | None = None, session: str | None = None) -> list[int]:
    return d.manager.pids(None if name is None else _name(name, session), session=session if name is None else None)


# -- processes --------------------------------------------------------------------------------
@command
def get_process(d, pid: int) -> dict:
    return d.manager.get_process(pid)


@command
def stop_process(d, pid: int) -> dict:
    return d.manager.stop_process(pid)


@command
def kill(d, pid: int, sig: Any = "TERM") -> dict:
    return d.manager.kill(pid, sig)


@command
def killall(d, name: str, sig: Any = "TERM", session: str | None = None) -> dict:
    return d.manager.killall(_name(name, session), sig)


@command
def send(d, pid: int, data: str, label: str | None = None) -> dict:
    return d.manager.send(pid, data)


@command
def writelines(d, pid: int, lines: list) -> dict:
    return d.manager.writelines(pid, lines)


@command
def read_output(d, pid: int, label: str | None = None, since: int = 0, limit: int | None = None) -> dict:
    return d.manager.read_output(pid, label, since, limit)
