"""The events' vocabulary: topic builders, event names and the prefixes subscribers use.

Pure (no zmq): the core publishes with these builders, clients subscribe with the prefixes,
and docs/bus.md's topic table describes the same names. Session and job names hold no dots
(checked where jobs are created), so a topic's parts split on "." and ZeroMQ's prefix filter
lines up with them.
"""

from __future__ import annotations

#: The bus protocol's version, as `version` answers it.
PROTOCOL_VERSION = 1

#: Jobs zsupd runs for itself (its HTTP gateway): never persisted, never announced.
INTERNAL_SESSION = "zsupd"

JOB_EVENTS = frozenset({"create", "start", "stop", "restart", "update", "delete", "exited", "roll", "run",
                        "run_skipped"})
PROC_EVENTS = frozenset({"spawn", "exit", "reap", "stop_pid", "flap", "spawn_error", "ready", "not_ready", "hook",
                         "unhealthy", "limit"})
SYS_EVENTS = frozenset({"start", "reload", "reload_error", "log_error", "log_resumed", "stop"})

#: The first part of every topic; "<kind>." subscribes to all of a kind.
KINDS = ("job", "proc", "io", "stats", "sys", "task", "agent")
JOB, PROC, IO, STATS, SYS, TASK, AGENT = (f"{k}." for k in KINDS)


def job_topic(session: str, name: str, event: str) -> str:
    """`job.<session>.<name>.<event>`: create, start, stop, restart, update, delete, exited, roll, run,
    run_skipped."""
    return f"job.{session}.{name}.{event}"


def proc_topic(session: str, name: str, event: str) -> str:
    """`proc.<session>.<name>.<event>`: spawn, spawn_error, exit, reap, stop_pid, flap, ready,
    not_ready, unhealthy, hook, limit."""
    return f"proc.{session}.{name}.{event}"


def io_topic(session: str, name: str, pid: int, label: str) -> str:
    """`io.<session>.<name>.<pid>.<label>`: lines of one stream of one process (zsup's pid)."""
    return f"io.{session}.{name}.{pid}.{label}"


def stats_topic(session: str, name: str, pid: int) -> str:
    """`stats.<session>.<name>.<pid>`: published only while someone subscribes."""
    return f"stats.{session}.{name}.{pid}"


def sys_topic(event: str) -> str:
    """`sys.<event>`: daemon start, reload, reload_error, log_error, log_resumed, stop."""
    return f"sys.{event}"


def task_topic(task_id: int | str) -> str:
    """`task.<id>.update`: a task changed (status or output)."""
    return f"task.{task_id}.update"


def agent_topic(slug: str) -> str:
    """`agent.<slug>.update`: an agent process changed state."""
    return f"agent.{slug}.update"


def job_io_prefix(job: str) -> str:
    """`io.<session>.<name>.`: every output line of one job (`job` is `session.name`)."""
    return f"io.{job}."


def is_internal(job: str) -> bool:
    """True for a job of zsupd's own session (`zsupd.<name>`)."""
    return job.startswith(INTERNAL_SESSION + ".")


def topic_matches(pattern: str, topic: str) -> bool:
    """Gaffer's matching rules, the ones of the emitter, webhooks, `watch` and bus Subscribers:
    `""` or `"."` match everything; a pattern ending with `.` is a plain prefix; any other
    matches itself and what lies below it (`proc.default.web` gets `proc.default.web.spawn`,
    not `proc.default.webapp.spawn`)."""
    if pattern in ("", "."):
        return True
    if pattern.endswith("."):
        return topic.startswith(pattern)
    return topic == pattern or topic.startswith(pattern + ".")
