"""A job: the template from which zsup starts identical OS processes.

`JobSpec.from_dict` is the one place where a job's options are checked, whatever they came
from (the config file, `zsupctl load_process`, the HTTP API, a Procfile): a bad option raises
BadRequest naming the option, before anything is started.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import re
import shlex
from dataclasses import dataclass, field, fields

from zsup.bus.parse import parse_size
from zsup.core.checks import HEALTH_KINDS, Check, parse_check
from zsup.core.depends import parse_depends
from zsup.core.flapping import FlappingRule
from zsup.core.limits import parse_limits
from zsup.core.schedule import parse_schedule
from zsup.core.signals import parse_signal, signal_name
from zsup.errors import BadRequest

DEFAULT_SESSION = "default"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
LOG_FORMATS = ("text", "json")
LOG_ROTATIONS = (None, "daily", "hourly")
RESTART_POLICIES = ("always", "on-failure", "never")
RESTART_MODES = ("all", "rolling")
HOOKS = ("before_start", "after_start", "before_stop", "after_stop")

#: The default per-job cap on `numprocesses` (and on `scale`); a job may set its own.
MAX_PROCESSES = 1024
# Upper bounds of the numeric options: beyond them a value is a mistake (or an attack), and
# refusing it at the door keeps it from reaching a timer, a ring buffer or a syscall.
MAX_ID = 2**32 - 2  # uid/gid: (uid_t)-1 means "unchanged" to the kernel
MAX_PRIORITY = 2**31 - 1
MAX_PROCESSES_LIMIT = 1_000_000
MAX_RING_SIZE = 1_000_000
MAX_LINE = 64 << 20
MAX_RING_BYTES = 1 << 40  # a sanity bound; memory is what really limits it
MAX_SECONDS = 7 * 86400.0
MAX_NAME = 100


def split_job_name(name: str, session: str | None = None) -> tuple[str, str]:
    """'web' -> ('default', 'web'); 'app.web' -> ('app', 'web'). A session argument wins."""
    if not isinstance(name, str) or not name:
        raise BadRequest("name: a job name is required")
    if "." in name:
        sess, _, job = name.partition(".")
        if session and session != sess:
            raise BadRequest(f"name: {name!r} is in session {sess!r}, not {session!r}")
    else:
        sess, job = session or DEFAULT_SESSION, name
    check_name("session", sess)
    check_name("name", job)
    return sess, job


def check_name(option: str, value: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:37] + "..."
        raise BadRequest(f"{option}: {shown!r} is not a valid name (letters, digits, '_' and '-', no dots)")
    if len(value) > MAX_NAME:  # names end up in file names (logs) and topics
        raise BadRequest(f"{option}: a name has at most {MAX_NAME} characters, got {len(value)}")
    return value


def to_bool(option: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise BadRequest(f"{option}: expected true or false, got {value!r}")


def to_number(option: str, value, kind=float, minimum=None, allow_none=False, maximum=None):
    if value is None or value == "":
        if allow_none:
            return None
        raise BadRequest(f"{option}: a value is required")
    if isinstance(value, bool):
        raise BadRequest(f"{option}: expected a number, got {value!r}")
    try:
        number = kind(value) if kind is not int else int(str(value).strip())
    except (TypeError, ValueError):
        raise BadRequest(f"{option}: expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise BadRequest(f"{option}: expected a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise BadRequest(f"{option}: must be >= {minimum}, got {value!r}")
    if maximum is not None and number > maximum:
        raise BadRequest(f"{option}: must be <= {maximum}, got {value!r}")
    return number


def to_size(option: str, value, minimum: int = 0, maximum: int | None = None, allow_none: bool = False):
    """A byte count as the config file and JSON both write it: 1048576, "512k", "10M"."""
    if value is None or value == "":
        if allow_none:
            return None
        raise BadRequest(f"{option}: a value is required")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"{option}: expected a size such as 10485760 or 10M, got {value!r}")
    number = parse_size(option, value)
    if number < minimum:
        raise BadRequest(f"{option}: must be >= {minimum}, got {value!r}")
    if maximum is not None and number > maximum:
        raise BadRequest(f"{option}: must be <= {maximum}, got {value!r}")
    return number


def check_text(option: str, value: str) -> str:
    """No NUL: the kernel cuts a C string there, so what would run is not what was asked."""
    if "\0" in value:
        raise BadRequest(f"{option}: NUL character not allowed")
    return value


def check_env(option: str, env) -> dict[str, str]:
    """An environment as a mapping of names to values, both strings (numbers are written out).

    A name is non-empty and holds no `=` or NUL; a value holds no NUL."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise BadRequest(f"{option}: expected a mapping of names to values")
    out = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise BadRequest(f"{option}: invalid variable name {key!r} (non-empty, no '=' or NUL)")
        if isinstance(value, (dict, list)) or value is None:
            raise BadRequest(f"{option}: {key}: expected a string, got {value!r}")
        out[key] = check_text(f"{option}: {key}", value if isinstance(value, str) else str(value))
    return out


def to_list(option: str, value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    raise BadRequest(f"{option}: expected a list of names, got {value!r}")


def resolve_uid(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_ID:
        raise BadRequest(f"uid: must be between 0 and {MAX_ID}, got {value!r}")
    try:
        uid = int(value) if str(value).isdigit() else pwd.getpwnam(check_text("uid", str(value))).pw_uid
        if uid > MAX_ID:
            raise ValueError
        pwd.getpwuid(uid)
    except (KeyError, ValueError):
        raise BadRequest(f"uid: unknown user {value!r}") from None
    if uid != os.geteuid() and os.geteuid() != 0:
        raise BadRequest(f"uid: only root can run a job as another user ({value!r})")
    return uid


def resolve_gid(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_ID:
        raise BadRequest(f"gid: must be between 0 and {MAX_ID}, got {value!r}")
    try:
        gid = int(value) if str(value).isdigit() else grp.getgrnam(check_text("gid", str(value))).gr_gid
        if gid > MAX_ID:
            raise ValueError
        grp.getgrgid(gid)
    except (KeyError, ValueError):
        raise BadRequest(f"gid: unknown group {value!r}") from None
    if gid != os.getegid() and os.geteuid() != 0:
        raise BadRequest(f"gid: only root can run a job as another group ({value!r})")
    return gid


def _command(option: str, value) -> str | None:
    """A hook's shell command line (None: no hook)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{option}: expected a shell command, got {value!r}")
    return check_text(option, value)


def _path(option: str, value) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{option}: expected a path, got {value!r}")
    return check_text(option, value)


def _sockets(value, command: str) -> list[str]:
    names = to_list("sockets", value)
    for name in names:
        check_name("sockets", name)
    if len(set(names)) != len(names):
        raise BadRequest("sockets: a socket is listed twice")
    for ref in re.findall(r"\$\(socket\.([A-Za-z0-9_-]+)\)", command):
        if ref not in names:
            raise BadRequest(f"cmd: $(socket.{ref}) names a socket not in the job's sockets")
    return names


@dataclass
class JobSpec:
    name: str
    cmd: str
    session: str = DEFAULT_SESSION
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    uid: object = None
    gid: object = None
    cwd: str | None = None
    detach: bool = False
    shell: bool = False
    os_env: bool = True
    numprocesses: int = 1
    max_processes: int = MAX_PROCESSES
    flapping: FlappingRule | None = None
    redirect_output: list = field(default_factory=lambda: ["stdout", "stderr"])
    redirect_input: bool = False
    graceful_timeout: float = 30.0
    priority: int = 999
    stop_signal: int = 15
    ring_size: int = 1000
    ring_max_bytes: int = 4 * 1024 * 1024  # the ring's byte bound (zsup/core/output.py)
    max_line: int = 65536
    # Output kept on disk (see docs/logs.md); None means "the daemon's default".
    log: bool | None = None
    log_file: str | None = None
    log_dir: str | None = None
    log_format: str | None = None
    log_max_bytes: int | None = None
    log_backups: int | None = None
    log_rotate: str | None = None
    # Lifecycle (docs/lifecycle.md)
    restart: str = "always"
    ready: Check | None = None
    ready_timeout: float = 30.0
    health: Check | None = None
    health_interval: float = 10.0
    health_timeout: float = 5.0
    health_retries: int = 3
    watchdog_sec: float | None = None
    restart_mode: str = "all"
    max_surge: int = 1
    depends: list = field(default_factory=list)
    before_start: str | None = None
    after_start: str | None = None
    before_stop: str | None = None
    after_stop: str | None = None
    hook_timeout: float = 30.0
    schedule: str | None = None
    # Limits (zsup/core/limits.py, docs/config.md); None keeps zsupd's
    rlimit_nofile: object = None
    rlimit_nproc: object = None
    rlimit_core: object = None
    rlimit_as: object = None
    rlimit_cpu: object = None
    rlimit_fsize: object = None
    nice: int | None = None
    umask: str | None = None
    oom_score_adj: int | None = None
    max_memory: int | None = None  # watched by zsup/core/resources.py: restarted above them
    max_cpu: float | None = None
    limit_window: float = 10.0
    cgroup_memory_max: int | None = None  # the job's cgroup, where zsupd has cgroups (zsup/core/cgroup.py)
    cgroup_cpu_max: float | None = None
    cgroup_pids_max: int | None = None
    # Shared listening sockets ([socket:NAME], zsup/daemon/sockets.py), passed from fd 3
    sockets: list = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.session}.{self.name}"

    @classmethod
    def from_dict(cls, data: dict, session: str | None = None) -> "JobSpec":
        """Check and normalise a job given as a dict (JSON, config section, Procfile line)."""
        if not isinstance(data, dict):
            raise BadRequest("config: a job must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadRequest(f"{unknown[0]}: unknown job option")
        sess, name = split_job_name(data.get("name"), session or data.get("session"))
        cmd = data.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            raise BadRequest("cmd: a command is required")
        check_text("cmd", cmd)
        args = data.get("args") or []
        if isinstance(args, str):
            try:
                args = shlex.split(args)
            except ValueError as exc:
                raise BadRequest(f"args: {exc}") from None
        if not isinstance(args, (list, tuple)) or not all(isinstance(a, (str, int, float)) for a in args):
            raise BadRequest("args: expected a list of strings or a string")
        for arg in args:
            check_text("args", str(arg))
        env = check_env("env", data.get("env") or {})
        cwd = data.get("cwd") or None
        if cwd is not None:
            if not isinstance(cwd, str) or not os.path.isdir(check_text("cwd", cwd)):
                raise BadRequest(f"cwd: no such directory {cwd!r}")
        redirect_output = to_list("redirect_output", data.get("redirect_output", ["stdout", "stderr"]))
        if len(redirect_output) > 2:
            raise BadRequest("redirect_output: at most two labels (stdout, stderr)")
        for label in redirect_output:
            check_name("redirect_output", label)
        log_format = data.get("log_format")
        if log_format not in (None,) + LOG_FORMATS:
            raise BadRequest(f"log_format: expected text or json, got {log_format!r}")
        log_rotate = data.get("log_rotate") or None
        if log_rotate not in LOG_ROTATIONS:
            raise BadRequest(f"log_rotate: expected daily or hourly, got {log_rotate!r}")
        max_processes = to_number("max_processes", data.get("max_processes", MAX_PROCESSES), int, 1,
                                  maximum=MAX_PROCESSES_LIMIT)
        numprocesses = to_number("numprocesses", data.get("numprocesses", 1), int, 0)
        if numprocesses > max_processes:
            raise BadRequest(f"numprocesses: {numprocesses} is above max_processes ({max_processes})")
        restart = data.get("restart") or "always"
        if restart not in RESTART_POLICIES:
            raise BadRequest(f"restart: expected always, on-failure or never, got {restart!r}")
        schedule = parse_schedule(data.get("schedule"))
        if schedule and data.get("restart") not in (None, "", "never"):
            raise BadRequest(f"restart: a job with a schedule is never restarted, got {restart!r}")
        ready = parse_check("ready", data.get("ready"))
        health = parse_check("health", data.get("health"), HEALTH_KINDS)
        watchdog_sec = to_number("watchdog_sec", data.get("watchdog_sec"), float, 0.01, allow_none=True,
                                 maximum=MAX_SECONDS)
        if health is not None and health.kind == "notify" and watchdog_sec is None:
            raise BadRequest("health: notify as a health check needs watchdog_sec")
        if watchdog_sec is not None and "notify" not in (str(ready), str(health)):
            raise BadRequest("watchdog_sec: needs ready = notify (the process sends WATCHDOG=1)")
        restart_mode = data.get("restart_mode") or "all"
        if restart_mode not in RESTART_MODES:
            raise BadRequest(f"restart_mode: expected all or rolling, got {restart_mode!r}")
        spec = cls(
            name=name,
            session=sess,
            cmd=cmd,
            args=[str(a) for a in args],
            env=env,
            uid=resolve_uid(data.get("uid")),
            gid=resolve_gid(data.get("gid")),
            cwd=cwd,
            detach=to_bool("detach", data.get("detach", False)),
            shell=to_bool("shell", data.get("shell", False)),
            os_env=to_bool("os_env", data.get("os_env", True)),
            numprocesses=numprocesses,
            max_processes=max_processes,
            flapping=FlappingRule.parse(data.get("flapping")),
            redirect_output=redirect_output,
            redirect_input=to_bool("redirect_input", data.get("redirect_input", False)),
            graceful_timeout=to_number("graceful_timeout", data.get("graceful_timeout", 30.0), float, 0,
                                       maximum=MAX_SECONDS),
            priority=to_number("priority", data.get("priority", 999), int, 0, maximum=MAX_PRIORITY),
            stop_signal=parse_signal(data.get("stop_signal", "TERM")),
            ring_size=to_number("ring_size", data.get("ring_size", 1000), int, 1, maximum=MAX_RING_SIZE),
            ring_max_bytes=to_size("ring_max_bytes", data.get("ring_max_bytes", 4 * 1024 * 1024), 1024, MAX_RING_BYTES),
            max_line=to_size("max_line", data.get("max_line", 65536), 80, MAX_LINE),
            log=None if data.get("log") is None else to_bool("log", data.get("log")),
            log_file=_path("log_file", data.get("log_file")),
            log_dir=_path("log_dir", data.get("log_dir")),
            log_format=log_format,
            log_max_bytes=to_size("log_max_bytes", data.get("log_max_bytes"), allow_none=True),
            log_backups=to_number("log_backups", data.get("log_backups"), int, 0, allow_none=True),
            log_rotate=log_rotate,
            restart="never" if schedule else restart,
            schedule=schedule,
            ready=ready,
            ready_timeout=to_number("ready_timeout", data.get("ready_timeout", 30.0), float, 0.01,
                                    maximum=MAX_SECONDS),
            health=health,
            health_interval=to_number("health_interval", data.get("health_interval", 10.0), float, 0.01,
                                      maximum=MAX_SECONDS),
            health_timeout=to_number("health_timeout", data.get("health_timeout", 5.0), float, 0.01,
                                     maximum=MAX_SECONDS),
            health_retries=to_number("health_retries", data.get("health_retries", 3), int, 1, maximum=1000),
            watchdog_sec=watchdog_sec,
            restart_mode=restart_mode,
            depends=parse_depends(data.get("depends"), sess),
            **{hook: _command(hook, data.get(hook)) for hook in HOOKS},
            hook_timeout=to_number("hook_timeout", data.get("hook_timeout", 30.0), float, 0.01, maximum=MAX_SECONDS),
            max_surge=to_number("max_surge", data.get("max_surge", 1), int, 1, maximum=MAX_PROCESSES_LIMIT),
            **parse_limits(data),
            sockets=_sockets(data.get("sockets"), " ".join([cmd] + [str(a) for a in args])),
        )
        return spec

    def to_dict(self) -> dict:
        """The JSON form; `from_dict(to_dict())` gives the same job back."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "flapping":
                value = value.to_dict() if value else None
            elif f.name == "stop_signal":
                value = signal_name(value)[3:] if signal_name(value).startswith("SIG") else value
            elif isinstance(value, Check):
                value = str(value)
            out[f.name] = value
        return out

    def same_as(self, other: "JobSpec") -> bool:
        """Equal in every option but the process count (a reload keeps a scaled job running)."""
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("numprocesses")
        theirs.pop("numprocesses")
        return mine == theirs
