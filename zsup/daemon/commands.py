"""Every bus command zsupd answers, one function each, found by name.

A command is a function `name(daemon, **args)`; its signature is its schema: a missing
argument, an unknown one, or an unknown command is a `bad_request` answered before anything
runs. Commands that change jobs also record the change in the store (see zsup/store.py), so
run-time changes survive a restart of zsupd.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from zsup import __version__
from zsup.errors import BadRequest
from zsup.core.jobspec import split_job_name

PROTOCOL_VERSION = 1
COMMANDS: dict[str, Callable] = {}


def command(fn: Callable) -> Callable:
    COMMANDS[fn.__name__] = fn
    return fn


def dispatch(daemon, cmd: str, args: dict) -> Any:
    fn = COMMANDS.get(cmd)
    if fn is None:
        raise BadRequest(f"unknown command {cmd!r}")
    check_args(fn, cmd, args)
    return fn(daemon, **args)


def check_args(fn: Callable, cmd: str, args: dict) -> None:
    params = list(inspect.signature(fn).parameters.values())[1:]
    names = {p.name for p in params}
    for key in args:
        if key not in names:
            raise BadRequest(f"{cmd}: unknown argument {key!r}")
    for p in params:
        if p.default is inspect.Parameter.empty and p.name not in args:
            raise BadRequest(f"{cmd}: missing argument {p.name!r}")


def _name(name, session=None) -> str:
    if not isinstance(name, str):
        raise BadRequest("name: expected a job name")
    sess, short = split_job_name(name, session)
    return f"{sess}.{short}"


# -- about the daemon ----------------------------------------------------------------------
@command
def ping(d) -> str:
    return "pong"


@command
def version(d) -> dict:
    return {"version": __version__, "protocol": PROTOCOL_VERSION, "name": "zsupd"}


@command
def endpoints(d) -> dict:
    """Where this daemon listens: {"router": [...], "pub": [...]} (tcp ports resolved)."""
    return d.bus.endpoints


@command
def commands(d) -> list[str]:
    """The commands this daemon answers."""
    return sorted(COMMANDS)


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
    info = d.manager.load(config, session=session, env=env, start=bool(start))
    d.remember(info["job"])
    return info


@command
def load_session(d, session: str, configs: list, start: bool = True, replace: bool = False) -> list[str]:
    """Load a group of jobs (a Procfile app) as one session: all or nothing."""
    if not isinstance(configs, list) or not configs:
        raise BadRequest("configs: expected a non-empty list of jobs")
    if replace:
        for name in d.manager.jobs(session=session):
            d.manager.unload(name)
            d.remember(name, removed=True)
    names = d.manager.load_many(configs, session=session, start=bool(start))
    for name in names:
        d.remember(name)
    return names


@command
def unload_session(d, session: str) -> list[str]:
    names = d.manager.jobs(session=session)
    if not names:
        from zsup.errors import NotFound
        raise NotFound(f"no session {session}")
    for name in names:
        d.manager.unload(name)
        d.remember(name, removed=True)
    return names


@command
def unload(d, name: str, session: str | None = None) -> dict:
    full = _name(name, session)
    result = d.manager.unload(full)
    d.remember(full, removed=True)
    return result


@command
def update(d, config: dict, session: str | None = None, env: dict | None = None, start: bool | None = None) -> dict:
    info = d.manager.update(config, session=session, env=env, start=start)
    d.remember(info["job"])
    return info


@command
def reload(d, name: str | None = None, session: str | None = None) -> Any:
    """With a name: restart the job's processes (gaffer's reload). Without: reload_config."""
    if name is None:
        return d.reload_config()
    info = d.manager.reload(_name(name, session))
    d.remember(info["job"])
    return info


@command
def restart_job(d, name: str, session: str | None = None) -> dict:
    return d.manager.restart_job(_name(name, session))


@command
def restart(d) -> list[str]:
    return d.manager.restart()


@command
def start_job(d, name: str, session: str | None = None) -> dict:
    info = d.manager.start_job(_name(name, session))
    d.remember(info["job"])
    return info


@command
def stop_job(d, name: str, session: str | None = None) -> dict:
    info = d.manager.stop_job(_name(name, session))
    d.remember(info["job"])
    return info


@command
def start_all(d) -> list[str]:
    names = d.manager.start_all()
    for name in names:
        d.remember(name)
    return names


@command
def stop_all(d) -> list[str]:
    names = d.manager.stop_all()
    for name in names:
        d.remember(name)
    return names


@command
def scale(d, name: str, n: Any, session: str | None = None) -> dict:
    result = d.manager.scale(_name(name, session), n)
    d.remember(result["job"])
    return result


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
    return d.manager.info(_name(name, session))


@command
def get(d, name: str, session: str | None = None) -> dict:
    """A job's config, in the form `load` takes."""
    return d.manager.get(_name(name, session))


@command
def status(d) -> list[dict]:
    return d.manager.status()


@command
def stats(d, name: str, session: str | None = None) -> dict:
    return d.manager.stats(_name(name, session))


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
    if not isinstance(data, str):
        raise BadRequest("data: expected a string")
    return d.manager.send(pid, data)


@command
def writelines(d, pid: int, lines: list) -> dict:
    return d.manager.writelines(pid, lines)


@command
def read_output(d, pid: int, label: str | None = None, since: int = 0, limit: int | None = None) -> dict:
    return d.manager.read_output(pid, label, since, limit)


# Commands that live in their own modules register themselves with @command on import.
from zsup.daemon import agent_commands  # noqa: E402,F401
from zsup.daemon import task_commands  # noqa: E402,F401
from zsup.daemon import key_commands  # noqa: E402,F401
