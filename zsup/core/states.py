"""The states of a process and of a job, and the only transitions between them.

Written as data so the rules are read in one place and checked on every change: a Process
or Job changes state only through `set_state`, which raises IllegalTransition for a move the
tables below do not allow. Such a move is a bug in the supervisor (never bad input), so it
fails loudly: in a test, at once; in zsupd, as a logged error of the supervisor loop's
callback and an `internal` error reply.

The state strings are what clients see (`info`, `status`, `get_process`, the HTTP API): the
enums are `str` enums whose values are exactly those strings.

Process (all changes in the supervisor thread):

    spawning --spawn--> running --stop (no event yet)--> stopping
                           |                               |
                           +-----exit, reap-----> exited <-+-- exit, stop_pid, reap

  `spawning` lives only inside `Manager._spawn` (a Process that fails to spawn publishes
  `spawn_error` and is dropped without leaving it), so no client ever sees it. The exit
  events are published once the pipes are drained (`_finish_exit`), after the state changed.

Job (all changes in the supervisor thread):

    stopped | failed --start--> running --flap--> flapping --(retry due)--> running
    any state --stop--> stopped (`update` stops without an event and publishes `update`)
    running | flapping --flap, stop(reason=flapping)--> failed (the rule gave up)
    running --spawn_error--> failing --spawn (one spawn succeeded again)--> running

  `failing` means the job wants processes but cannot spawn them (missing binary, bad cwd,
  bad user): retried on the back-off or flapping schedule, with the reason in `last_error`.
  From `failing` a job moves as from `running` (flap, fail, stop, start).
    running | failing --every process ended for good (restart = never/on-failure)--> exited
    exited --start--> running;  exited --stop--> stopped
    a job with a `schedule`: start --> scheduled --run due--> running --all ended--> scheduled

Readiness of a running process (docs/lifecycle.md), beside its ProcessState:

    starting --check passed (or no `ready` check)--> ready --health failed--> unhealthy
    unhealthy --health passed again--> ready

  A process that does not become ready in `ready_timeout`, or stays unhealthy for
  `health_retries` checks, is stopped and counted as a death (back-off, flapping).
"""

from __future__ import annotations

from enum import StrEnum


class IllegalTransition(RuntimeError):
    """A state change the tables do not allow: a bug in the supervisor."""


class ProcessState(StrEnum):
    SPAWNING = "spawning"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"


class JobState(StrEnum):
    STOPPED = "stopped"
    RUNNING = "running"
    FLAPPING = "flapping"
    FAILED = "failed"
    FAILING = "failing"
    EXITED = "exited"
    SCHEDULED = "scheduled"


class Readiness(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"


P, J = ProcessState, JobState

# (from, to) -> the events (proc.<session>.<name>.<event>) that go with the change.
PROCESS_TRANSITIONS: dict[tuple[ProcessState, ProcessState], tuple[str, ...]] = {
    (P.SPAWNING, P.RUNNING): ("spawn",),
    (P.RUNNING, P.STOPPING): (),  # stop signal sent; stop_pid comes with the exit
    (P.RUNNING, P.EXITED): ("exit", "reap"),
    (P.STOPPING, P.EXITED): ("exit", "stop_pid", "reap"),
}

# (from, to) -> the events (job.<session>.<name>.<event>, or proc.….flap) that may go with
# the change; which one depends on the cause (start, retry, update...), as described above.
JOB_TRANSITIONS: dict[tuple[JobState, JobState], tuple[str, ...]] = {
    **{(s, J.RUNNING): ("start",) for s in (J.STOPPED, J.RUNNING, J.FAILED, J.EXITED)},
    (J.RUNNING, J.EXITED): ("exited",),
    (J.FAILING, J.EXITED): ("exited",),
    # a scheduled job (zsup/core/schedule.py) waits, runs when due, and waits again
    **{(s, J.SCHEDULED): ("start",) for s in (J.STOPPED, J.FAILED, J.EXITED, J.SCHEDULED)},
    (J.SCHEDULED, J.RUNNING): ("run",),
    (J.RUNNING, J.SCHEDULED): ("exited",),
    (J.FAILING, J.SCHEDULED): ("exited",),
    (J.RUNNING, J.FAILING): ("spawn_error",),
    (J.FAILING, J.RUNNING): ("start", "spawn"),  # a start, or a spawn succeeded again
    (J.FLAPPING, J.RUNNING): ("start",),  # or none: the flapping retry came due
    **{(s, J.STOPPED): ("stop", "update") for s in J},
    (J.RUNNING, J.FLAPPING): ("flap",),
    (J.FAILING, J.FLAPPING): ("flap",),
    (J.FLAPPING, J.FLAPPING): ("flap",),  # a death already queued when the rule tripped
    (J.RUNNING, J.FAILED): ("flap", "stop"),
    (J.FLAPPING, J.FAILED): ("flap", "stop"),
    (J.FAILING, J.FAILED): ("flap", "stop"),
}


R = Readiness

# (from, to) -> the event (proc.<session>.<name>.<event>) that goes with the change.
READINESS_TRANSITIONS: dict[tuple[Readiness, Readiness], tuple[str, ...]] = {
    (R.STARTING, R.READY): ("ready",),
    (R.READY, R.UNHEALTHY): ("unhealthy",),
    (R.UNHEALTHY, R.READY): ("healthy",),
}


def check_readiness(old: Readiness, new: Readiness, pid: int) -> None:
    if (old, new) not in READINESS_TRANSITIONS:
        raise IllegalTransition(f"process {pid}: no readiness transition {old.value} -> {new.value}")


def check_process(old: ProcessState, new: ProcessState, pid: int) -> None:
    if (old, new) not in PROCESS_TRANSITIONS:
        raise IllegalTransition(f"process {pid}: no transition {old.value} -> {new.value}")


def check_job(old: JobState, new: JobState, name: str) -> None:
    if (old, new) not in JOB_TRANSITIONS:
        raise IllegalTransition(f"job {name}: no transition {old.value} -> {new.value}")
