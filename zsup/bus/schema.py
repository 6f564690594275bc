"""Every bus command, declared once as data: parameters and their types, doc, result, effect.

zsupd's dispatch checks requests against this table, the typed Client methods are made from
it, and docs/bus.md's command table and the bus part of the gateway's /openapi.json are
generated from it (`python -m zsup.bus.docgen`). Pure data: no zmq, no daemon.

Types are JSON's: "string", "integer", "number", "boolean", "object", "array", or "any";
"integer|string" accepts either. An optional parameter also accepts null (= left out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Param", "Command", "COMMANDS", "command_spec", "check_request", "type_ok"]

_REQUIRED = object()

#: How a type reads in an error message ("name: expected a string, got 3").
TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number",
              "boolean": "true or false", "object": "a JSON object", "array": "a JSON array",
              "any": "a value"}


@dataclass(frozen=True)
class Param:
    """One argument of a command. `default` is documentation: the handler applies it."""

    name: str
    type: str
    doc: str = ""
    default: Any = _REQUIRED
    expected: str | None = None  # the words of a type error, when TYPE_WORDS's are not clear
    bounds: tuple[int, int] | None = None  # a number (or a string of digits) must lie within

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def words(self) -> str:
        return self.expected or " or ".join(TYPE_WORDS[t] for t in self.type.split("|"))

    def usage(self) -> str:
        """`name`, `[name]` or `[name=default]`, as the command table writes it."""
        if self.required:
            return self.name
        if self.default is None:
            return f"[{self.name}]"
        if isinstance(self.default, bool):
            shown = str(self.default).lower()
        elif isinstance(self.default, str):
            shown = f'"{self.default}"'
        else:
            shown = self.default
        return f"[{self.name}={shown}]"


@dataclass(frozen=True)
class Command:
    """One bus command: what it takes, what it answers, whether it changes persisted state."""

    name: str
    doc: str
    result: str
    params: tuple[Param, ...] = ()
    persists: bool = False  # it changes what the store keeps across restarts of zsupd
    group: str = "daemon"
    param_map: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_map", {p.name: p for p in self.params})


def _p(name: str, type_: str, doc: str = "", default: Any = _REQUIRED, expected: str | None = None,
       bounds: tuple[int, int] | None = None) -> Param:
    return Param(name, type_, doc, default, expected, bounds)


#: What the store's SQLite integers hold: ids and counts beyond it are refused at the door.
INT64 = 2**63 - 1


# Parameters several commands share.
NAME = _p("name", "string", "the job: `name` or `session.name`", expected="a job name")
SESSION = _p("session", "string", "the session a bare name belongs to (default `default`)", None)
PID = _p("pid", "integer|string", "zsup's process id", expected="an integer")
SIG = _p("sig", "integer|string", "a number or a name (`\"HUP\"`, `\"SIGHUP\"`)", "TERM")
CONFIG = _p("config", "object", "the job, as a config section: `{name, cmd, args, ...}`")
ENV = _p("env", "object", "environment variables added to the job's", None)
TASK_ID = _p("id", "any", "the task's id", bounds=(1, INT64))
KEY = _p("key", "string", "an API key")
USERNAME = _p("username", "string", "the user's name")
PASSWORD = _p("password", "string", "the user's password")
USER_TYPE = _p("user_type", "integer", "gaffer's user type (0 admin, 1 user, 2 app)", 1)
USER_KEY = _p("key", "string", "the user's API key", None)
USER_EXTRA = _p("extra", "object", "extra fields kept with the user", None)


def _c(name: str, doc: str, result: str, *params: Param, persists: bool = False, group: str = "daemon") -> Command:
    return Command(name, doc, result, tuple(params), persists, group)


_DECLARED = [
    # -- about the daemon
    _c("ping", "Is zsupd answering?", '`"pong"`'),
    _c("version", "zsupd's version and protocol",
       '`{"version": "…", "protocol": 1, "name": "zsupd", "cgroups": {active, path, reason}}`: `cgroups` says '
       'whether jobs run in cgroup v2 and, if not, why (docs/config.md, "cgroups")'),
    _c("commands", "The commands this daemon answers", "the sorted list of command names"),
    _c("endpoints", "Where this daemon listens", '`{"router": [...], "pub": [...]}`: where this daemon listens'),
    _c("sockets", "The listening sockets zsupd keeps open ([socket:NAME], docs/config.md)",
       "one row per socket: `{name, bind, address, fd, backlog, family, reuseport, origin, jobs}`, `jobs` being the "
       "loaded jobs that list it, `address` where it listens (port resolved), `origin` `file` or `runtime` "
       "(added with `add_socket`)"),
    _c("add_socket", "Open a listening socket at run time (kept across restarts of zsupd)",
       "the socket's row, as `sockets` lists it; `conflict` if the name is taken or the address cannot be bound",
       _p("name", "string", "the socket's name, as jobs list it in `sockets`"),
       _p("config", "object", "its keys, as a `[socket:NAME]` section: `{bind, backlog, reuseport, mode, owner, "
          "family}` (a unix path must be absolute)"), persists=True),
    _c("remove_socket", "Close a socket added at run time",
       "`{ok, name}`; `conflict` while a loaded job lists it, `forbidden` for a socket of the config file",
       _p("name", "string", "the socket's name"), persists=True),
    _c("metrics", "Counters and gauges for monitoring (docs/metrics.md)",
       "`{daemon, jobs: [{job, state, active, wanted, running, flapping, restarts, spawn_failures, flaps, exits, "
       "last_exit_code}], processes: [{job, pid, os_pid, cpu_seconds, rss, fds, start_time}], requests: "
       "[{cmd, outcome, count}], events: {published, dropped}, logs}`; the gateway serves it as `GET /metrics`"),
    # -- jobs
    _c("status", "A summary per job", "one row per job: `{job, state, active, numprocesses, running, pids, "
       "os_pids, started, cmd, last_error, last_limit}`; `last_limit`: the last `max_memory`/`max_cpu` restart "
       "(docs/config.md)", group="jobs"),
    _c("jobs", "Job names", '`["session.name", ...]`', SESSION, group="jobs"),
    _c("sessions", "Session names", '`["default", ...]`', group="jobs"),
    _c("info", "One job", "the job: `{name, session, job, active, state, stop_reason, numprocesses, running, "
       "pids, processes: [process info], flapping_retries, last_error, last_error_time, last_limit, config, "
       "created}`; "
       "`last_error` is why the last spawn failed (`null` once a spawn succeeds or the job is started again)",
       NAME, SESSION, group="jobs"),
    _c("get", "A job's config", "the job's config, in the form `load` takes", NAME, SESSION, group="jobs"),
    _c("load", "Load a job", "the new job's info; `conflict` if it exists",
       CONFIG, SESSION, ENV, _p("start", "boolean", "start it at once", True), persists=True, group="jobs"),
    _c("load_session", "Load a group of jobs (a Procfile app) as one session",
       "the loaded job names; all or nothing, started in priority order",
       _p("session", "string", "the session"),
       _p("configs", "array", "the jobs", expected="a non-empty list of jobs"),
       _p("start", "boolean", "start them", True),
       _p("replace", "boolean", "unload the session's jobs first", False), persists=True, group="jobs"),
    _c("unload_session", "Unload every job of a session", "the unloaded job names",
       _p("session", "string", "the session"), persists=True, group="jobs"),
    _c("unload", "Unload a job", '`{"ok": true}` (processes are stopped gracefully)',
       NAME, SESSION, persists=True, group="jobs"),
    _c("update", "Replace a job's config", "the job's info; its processes are replaced",
       CONFIG, SESSION, ENV, _p("start", "boolean", "start or stop it as well", None), persists=True, group="jobs"),
    _c("reload", "Restart a job's processes, or reload the config",
       "with a name: restart the job's processes, count reset to its config; without: as `reload_config`",
       _p("name", "string", NAME.doc, None, "a job name"), SESSION, persists=True, group="jobs"),
    _c("reload_config", "Re-read the config file",
       "`{added, removed, changed, unchanged}`; a bad file is refused (`bad_request`) and nothing changes"),
    _c("restart_job", "Replace every process of a job", "the job's info (every process replaced, count kept)",
       NAME, SESSION, group="jobs"),
    _c("rolling_restart", "Replace a job's processes one by one",
       "the job's info at once; `roll` in `info` follows the roll (`rolling`, `done`, or `failed` with "
       "the reason: the old processes keep serving); a job with nothing running is just restarted",
       NAME, SESSION, _p("max_surge", "integer", "new processes started at a time (default: the job's "
                         "`max_surge`)", None, bounds=(1, 1_000_000)), group="jobs"),
    _c("restart", "Restart every active job",
       "the restarted job names (every active job, in priority order; zsupd's own are skipped)",
       group="jobs"),
    _c("start_job", "Start a job", "the job's info", NAME, SESSION, persists=True, group="jobs"),
    _c("stop_job", "Stop a job", "the job's info", NAME, SESSION, persists=True, group="jobs"),
    _c("start_all", "Start every job", "the job names (zsupd's own jobs are skipped)", persists=True, group="jobs"),
    _c("stop_all", "Stop every job", "the job names (zsupd's own jobs are skipped)", persists=True, group="jobs"),
    _c("scale", "Change a job's number of processes",
       '`{job, numprocesses}`; `n`: an integer is relative (`1`, `-1`), strings `"+N"`, `"-N"`, `"=N"` (or `"N"`); '
       'above the job\'s `max_processes` or `[zsup] max_processes_total`: `bad_request`',
       NAME, _p("n", "integer|string", "how many: relative integer, or \"+N\", \"-N\", \"=N\""), SESSION,
       persists=True, group="jobs"),
    _c("commit", "Start a one-shot process of a job",
       '`{"pid": N}`: a one-shot process, never restarted, not counted by `scale`',
       NAME, _p("graceful_timeout", "number|string", "seconds between the stop signal and SIGKILL", None),
       _p("env", "object", "environment variables added for this process", None), SESSION, group="jobs"),
    _c("pids", "zsup ids of live processes", "zsup ids of live processes",
       _p("name", "string", "only this job's", None, "a job name"), SESSION, group="jobs"),
    _c("stats", "CPU and memory of a job's processes",
       "`{job, cpu, mem, rss, vms, processes: [{pid, os_pid, cpu, mem, rss, vms, ctime, username, nice, "
       "cmdline, children: [...]}], cgroup}`; `cgroup` is `{memory, pids, cpu_seconds, path}` of the job's cgroup, "
       "or null without cgroups", NAME, SESSION, group="jobs"),
    # -- processes
    _c("process_stats", "CPU and memory of one process", "one process's stats, as in `stats`", PID,
       group="processes"),
    _c("get_process", "One process",
       "`{pid, os_pid, name, session, job, cmd, args, state, committed, detach, adopted, started, uptime, "
       "exit_code, "
       "term_signal, labels, redirect_input, last_seq}`; recently exited processes are still answered", PID,
       group="processes"),
    _c("stop_process", "Stop one process", "`{pid, stopping: true}`; a kept-alive job starts a replacement at once",
       PID, group="processes"),
    _c("kill", "Send a signal to one process",
       "`{pid, signal}`; `sig` is a number or a name (`\"HUP\"`, `\"SIGHUP\"`)", PID, SIG, group="processes"),
    _c("killall", "Send a signal to every process of a job", "`{job, signal, pids}`", NAME, SIG, SESSION,
       group="processes"),
    _c("send", "Write to a process's stdin",
       "`{pid, bytes}`: `data` written to stdin as given; `conflict` when the process has exited or has no "
       "`redirect_input`", PID, _p("data", "string", "the text to write"),
       _p("label", "string", "unused, for gaffer's clients", None), group="processes"),
    _c("writelines", "Write lines to a process's stdin", "as `send`, a newline added to each line that lacks one",
       PID, _p("lines", "array", "the lines"), group="processes"),
    _c("read_output", "Recent output lines of a process",
       "`{pid, label, last_seq, state, lines: [{seq, data}]}`: lines with `seq > since` still in the ring "
       "buffer, oldest first", PID, _p("label", "string", "the stream (default: stdout)", None),
       _p("since", "integer", "the last seq already seen", 0), _p("limit", "integer", "at most this many", None),
       group="processes"),
    # -- logs
    _c("reopen_logs", "Reopen every log file", '`{"ok": true}`: every log file is reopened (as SIGUSR1 does)'),
    _c("log_paths", "A job's log files",
       "`{job, log, format, paths: {label: [current, rotated newest first...]}}`",
       NAME, _p("label", "string", "only this stream's", None), SESSION),
    # -- tasks (docs/tasks.md)
    _c("task_create", "Run a process type of an app once",
       "the task: `{id, status, app, env, action, exitCode, output, pid, ...}`; runs job `app.action` once "
       "with environment `env` added (docs/tasks.md)",
       _p("app", "any", "the app (session)"), _p("env", "any", "the environment's name"),
       _p("action", "any", "the process type"), group="tasks"),
    _c("task_get", "One task", "the task, its output from byte `since_output`",
       TASK_ID, _p("since_output", "any", "output from this byte on", None, bounds=(0, INT64)), group="tasks"),
    _c("task_list", "Tasks, newest first", "`{tasks, total, limit, offset}`, newest first",
       _p("limit", "any", "at most this many", 20, bounds=(0, INT64)),
       _p("offset", "any", "skip this many", 0, bounds=(0, INT64)), group="tasks"),
    _c("task_kill", "Stop a running task", "the task (it ends as `killed`)", TASK_ID, group="tasks"),
    # -- agent (docs/agent.md)
    _c("agent_create", "Fetch, unpack and run a process type of an app",
       "the process status document, state `pending` (docs/agent.md)",
       _p("app", "any", "the app"), _p("node", "any", "the node"), _p("process_type", "any", "the process type"),
       _p("source_url", "any", "where the source archive is"), _p("env", "any", "environment variables", None),
       group="agent"),
    _c("agent_list", "Every agent process", "every agent process's status document", group="agent"),
    _c("agent_status", "One agent process", "one status document", _p("slug", "any", "the process's slug"),
       group="agent"),
    _c("agent_delete", "Stop and forget an agent process", "stops the process and removes its files",
       _p("slug", "any", "the process's slug"), group="agent"),
    # -- gaffer 0.5's API keys and users (docs/http.md); the gateway decides what a key may do
    _c("gaffer_require_key", "Is `require_key` on?", "true or false", group="keys"),
    _c("gaffer_key_permissions", "What an API key may do", "the key's permissions; `not_found` for an unknown key",
       KEY, group="keys"),
    _c("gaffer_key_create", "A new API key", '`{"api_key"}` (the only time it is shown)',
       _p("permissions", "object", "gaffer's permissions document", None), _p("label", "string", "a label", ""),
       _p("parent", "string", "the key it derives from", None), persists=True, group="keys"),
    _c("gaffer_key_get", "One API key", "the key's record", KEY,
       _p("include_keys", "boolean", "list the keys derived from it", False), group="keys"),
    _c("gaffer_key_list", "Every API key", "the keys' records", group="keys"),
    _c("gaffer_key_delete", "Delete an API key", '`{"ok": true}`', KEY, persists=True, group="keys"),
    _c("gaffer_user_create", "A new user", "the user's record", USERNAME, PASSWORD, USER_TYPE, USER_KEY, USER_EXTRA,
       persists=True, group="keys"),
    _c("gaffer_user_get", "One user", "the user's record", USERNAME, group="keys"),
    _c("gaffer_user_list", "Every user", "the users' records", group="keys"),
    _c("gaffer_user_update", "Change a user", "the user's record", USERNAME, PASSWORD, USER_TYPE, USER_KEY,
       USER_EXTRA, persists=True, group="keys"),
    _c("gaffer_user_delete", "Delete a user (and its key unless shared)", '`{"ok": true}`', USERNAME,
       persists=True, group="keys"),
    _c("gaffer_user_password", "Set a user's password", '`{"ok": true}`', USERNAME, PASSWORD, persists=True,
       group="keys"),
    _c("gaffer_user_key", "Set a user's key", '`{"ok": true}`', USERNAME, KEY, persists=True, group="keys"),
    _c("gaffer_auth", "Log a user in", '`{"api_key"}`: a new key; `not_found` for a bad name or password',
       USERNAME, PASSWORD, group="keys"),
]

#: name -> Command, in the order docs/bus.md lists them.
COMMANDS: dict[str, Command] = {c.name: c for c in _DECLARED}


def command_spec(name: str) -> Command | None:
    return COMMANDS.get(name)


def type_ok(type_: str, value: Any) -> bool:
    """Does `value` (decoded JSON) have one of the types in `type_` ("integer|string")?"""
    for t in type_.split("|"):
        if t == "any":
            return True
        if t == "string" and isinstance(value, str):
            return True
        if t == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t == "boolean" and isinstance(value, bool):
            return True
        if t == "object" and isinstance(value, dict):
            return True
        if t == "array" and isinstance(value, list):
            return True
    return False


def check_request(cmd: str, args: dict) -> Command:
    """The declaration of `cmd` once `args` fit it; BadRequest (unknown command or argument,
    missing argument, wrong type) otherwise. null is accepted for an optional argument."""
    from zsup.errors import BadRequest

    spec = COMMANDS.get(cmd)
    if spec is None:
        raise BadRequest(f"unknown command {cmd!r}")
    for key in args:
        if key not in spec.param_map:
            raise BadRequest(f"{cmd}: unknown argument {key!r}")
    for p in spec.params:
        if p.name not in args:
            if p.required:
                raise BadRequest(f"{cmd}: missing argument {p.name!r}")
            continue
        value = args[p.name]
        if value is None and not p.required:
            continue
        if not type_ok(p.type, value):
            raise BadRequest(f"{p.name}: expected {p.words()}, got {_show(value)}")
        if p.bounds is not None and not _within(value, *p.bounds):
            raise BadRequest(f"{p.name}: must be between {p.bounds[0]} and {p.bounds[1]}, got {_show(value)}")
    return spec


def _within(value: Any, low: int, high: int) -> bool:
    """False for a number (or a string of digits) outside [low, high]; other values are the
    handler's to judge."""
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit() or len(text) > 40:
            return not text.lstrip("-").isdigit()
        value = int(text)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return low <= value <= high
    return True


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
