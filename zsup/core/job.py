"""A loaded job: its spec plus what the supervisor remembers between its processes' lives."""

from __future__ import annotations

import operator
import time

from zsup.core.flapping import FlappingState
from zsup.core.jobspec import JobSpec
from zsup.core.process import Process, encode_json
from zsup.core.states import JobState, ProcessState, check_job

_BY_PID = operator.attrgetter("pid")


def life_info(proc: Process) -> dict:
    """A process's `info()` with its readiness (zsup/core/lifecycle.py's ProcLife), for info,
    get_process and the HTTP API."""
    out = proc.info()
    life = getattr(proc, "life", None)
    if life is not None:
        out.update(life.info())
    return out


class Job:
    """State of one job. Changed only in the supervisor loop's thread; `state` only through
    `set_state` (zsup/core/states.py)."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.numprocesses = spec.numprocesses
        self.active = False
        self.state = JobState.STOPPED
        self.stop_reason: str | None = None
        self.processes: dict[int, Process] = {}  # kept alive by the job, oldest first
        self.committed: dict[int, Process] = {}  # one-shot processes, never restarted
        self.flapping = FlappingState(spec.flapping) if spec.flapping else None
        self.fast_deaths = 0
        self.restart_timer = None  # back-off or flapping retry pending
        self.created = time.time()
        self.last_error: str | None = None  # why the last spawn failed; None once one succeeds
        self.last_error_time: float | None = None
        self.last_error_exit = False  # last_error is a process that exited at once, not a spawn error
        self._config_json: tuple = (None, b"")  # (spec, its encoded to_dict())
        # Processes that ended for good under `restart = never | on-failure` (pid, exit_code,
        # term_signal, reason), since the last start: the job wants that many fewer.
        self.finished: list[dict] = []
        self.roll = None  # a rolling restart in progress (zsup/core/rolling.py)
        self.waiting: list[str] = []  # dependencies not ready yet (zsup/core/depends.py)
        self.stop_deferred: str | None = None  # stop reason, held until dependents are gone
        self.hook_seq = 0  # lines of hook output so far (their `seq`)
        self.hook_starts = 0  # spawns waiting for their before_start hook
        self.schedule_timer = None  # the next run of a scheduled job (zsup/core/schedule.py)
        self.last_run: float | None = None
        self.next_run: float | None = None
        self.roll_result: dict | None = None  # how the last one ended, until the next start
        self.last_limit: dict | None = None  # the last max_memory/max_cpu restart (zsup/core/resources.py)

    @property
    def name(self) -> str:
        return self.spec.fullname

    def set_state(self, new: JobState) -> None:
        """Move to `new`; IllegalTransition if the state machine does not allow it."""
        check_job(self.state, new, self.name)
        self.state = new

    def all_processes(self) -> list[Process]:
        """Kept-alive and committed processes, by pid (zsup's pids only grow)."""
        if not self.committed:
            return list(self.processes.values())
        return sorted([*self.processes.values(), *self.committed.values()], key=_BY_PID)

    def running(self) -> list[Process]:
        return [p for p in self.processes.values() if p.state == ProcessState.RUNNING]

    def lifecycle(self, running: list[Process] | None = None) -> dict:
        """Readiness of the running processes (`running()`, when the caller has it already) and
        what ended for good: status rows and info."""
        ready = unhealthy = 0
        reason = None
        for proc in self.running() if running is None else running:
            life = getattr(proc, "life", None)
            if life is None or life.readiness == "ready":
                ready += 1
            elif life.readiness == "unhealthy":
                unhealthy += 1
            if life is not None and life.reason:
                reason = life.reason
        return {"ready": ready, "unhealthy": unhealthy, "reason": reason,
                "exit_codes": [f["exit_code"] for f in self.finished], "restart": self.spec.restart,
                "checked": self.spec.ready is not None or self.spec.health is not None,
                "roll": self.roll.info() if self.roll is not None else self.roll_result,
                "waiting_for": self.waiting, "schedule": self.spec.schedule, "last_run": self.last_run,
                "next_run": self.next_run, "last_limit": self.last_limit}

    def info_json(self) -> bytes:
        """`info()` as JSON, built from each process's cached fragment and the config
        encoded once per spec: a job of hundreds of processes costs a join, not a re-encode."""
        procs = self.all_processes()
        if self._config_json[0] is not self.spec:
            self._config_json = (self.spec, encode_json(self.spec.to_dict()))
        head = self._head(procs)
        now = time.time()
        return b"".join([encode_json(head)[:-1], b',"config":', self._config_json[1], b',"processes":[',
                         b",".join([p.info_json(now) for p in procs]), b"]}"])

    def warm_info(self) -> None:
        """Bring each process's cached info fragment up to date (Process.warm_json), so
        that the next info_json only joins and formats."""
        for p in self.all_processes():
            p.warm_json()

    def _head(self, procs: list[Process]) -> dict:
        running = self.running()
        return {
            "name": self.spec.name,
            "session": self.spec.session,
            "job": self.name,
            "active": self.active,
            "state": self.state.value,
            "stop_reason": self.stop_reason,
            "numprocesses": self.numprocesses,
            "running": len(running),
            "pids": [p.pid for p in procs if p.state != ProcessState.EXITED],
            **self.lifecycle(running),
            "flapping_retries": self.flapping.retries if self.flapping else 0,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
            "created": self.created,
        }

    def info(self) -> dict:
        procs = self.all_processes()
        return {**self._head(procs), "processes": [life_info(p) for p in procs], "config": self.spec.to_dict()}
