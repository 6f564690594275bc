"""Readiness, health and restart policy: the part of supervision that decides when a process
counts as up, when a running one is hung, and whether a death is restarted.

A process is `starting` from its spawn until its `ready` check passes (at once without one),
then `ready`. A process not ready within `ready_timeout`, or failing `health_retries` health
checks in a row, or silent past `watchdog_sec`, is stopped with the reason `ready_timeout`,
`unhealthy` or `watchdog`: such a stop counts as a death (back-off, flapping, restart policy).

Thread rule: everything here runs in the supervisor loop's thread, except `_log_ready`,
which the IO loop calls with a line chunk (for jobs with a `log:` check only). Blocking
probes (tcp, http, cmd) run on the CheckPool's workers and come back with call_soon; notify
datagrams are read by the supervisor loop itself from a non-blocking socket per process.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time

from zsup.core.checks import PROBES, CheckPool
from zsup.core.job import Job
from zsup.core.process import Process, SpawnError, build_env
from zsup.core.states import JobState, ProcessState, Readiness, check_readiness

log = logging.getLogger(__name__)

READY_POLL = 0.1  # between tries of a ready probe, doubling up to READY_POLL_MAX
READY_POLL_MAX = 1.0
#: Stop reasons that count as a death of the process (restarted under the policy).
FAILED_STOPS = ("ready_timeout", "unhealthy", "watchdog", "max_memory", "max_cpu")


_SHOWN = frozenset(("readiness", "reason", "status", "failures", "ready_at"))  # in ProcLife.info()


class ProcLife:
    """What the lifecycle knows of one process. Supervisor thread only, but `log_re` and
    `log_done`, which the IO thread reads (and sets once)."""

    __slots__ = ("readiness", "reason", "status", "failures", "timers", "sock", "path", "log_re",
                 "log_done", "ready_at", "poll", "version")

    def __init__(self):
        object.__setattr__(self, "version", 1)
        self.readiness = Readiness.STARTING
        self.reason: str | None = None  # why the process was judged unhealthy or not ready
        self.status: str | None = None  # the last STATUS= of sd_notify
        self.failures = 0  # health checks failed in a row
        self.timers: dict[str, object] = {}
        self.sock: socket.socket | None = None
        self.path: str | None = None
        self.log_re = None
        self.log_done = False
        self.ready_at: float | None = None
        self.poll = READY_POLL

    def __setattr__(self, name: str, value) -> None:
        # `version` counts the changes of what info() shows: Process.info_json's cache key
        object.__setattr__(self, name, value)
        if name in _SHOWN:
            object.__setattr__(self, "version", self.version + 1)

    def info(self) -> dict:
        return {"readiness": self.readiness.value, "reason": self.reason, "status": self.status,
                "health_failures": self.failures, "ready_at": self.ready_at}


class Lifecycle:
    """Mixed into Manager (with Supervision); uses `_loop`, `_jobs`, `events`, `_stop_proc`,
    `_publish_proc`, `_publish_job`."""

    _checks: CheckPool
    _notify_dir: str | None = None

    # ------------------------------------------------------------------ spawn and exit
    def _life_env(self, job: Job, proc: Process) -> dict:
        """Attach a ProcLife to `proc` before its spawn; the extra env the child needs."""
        life = proc.life = ProcLife()
        spec = job.spec
        env: dict[str, str] = {}
        if "notify" in (str(spec.ready), str(spec.health)):
            if self._notify_dir is None:
                self._notify_dir = tempfile.mkdtemp(prefix="zsup-notify-")
                os.chmod(self._notify_dir, 0o711)  # a job running as another user reaches its socket
            life.path = os.path.join(self._notify_dir, f"{proc.pid}.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            life.sock = sock
            try:
                sock.bind(life.path)
                if spec.uid is not None and os.geteuid() == 0:
                    os.chown(life.path, spec.uid, -1)
            except OSError as exc:
                raise SpawnError(f"notify socket {life.path}: {exc.strerror or exc}") from None
            env["NOTIFY_SOCKET"] = life.path
            if spec.watchdog_sec:
                env["WATCHDOG_USEC"] = str(int(spec.watchdog_sec * 1_000_000))
        if spec.ready is not None and spec.ready.kind == "log":
            life.log_re = spec.ready.regex
        return env

    def _life_spawned(self, job: Job, proc: Process) -> None:
        """The process runs: start its ready check (or call it ready: no check)."""
        life: ProcLife = proc.life
        check = job.spec.ready
        if life.sock is not None:
            self._loop.add_reader(life.sock.fileno(), lambda _fd, p=proc: self._on_notify(p))
        if check is None:
            life.readiness, life.ready_at = Readiness.READY, time.time()
            self._life_ready(job, proc, publish=False)
            return
        life.timers["ready"] = self._loop.call_later(job.spec.ready_timeout, self._ready_timeout, proc)
        if check.kind == "delay":
            life.timers["delay"] = self._loop.call_later(check.seconds, self._mark_ready, proc)
        elif check.kind in PROBES:
            self._probe_ready(proc)

    def _life_ended(self, proc: Process) -> None:
        """The process exited or failed to spawn: its timers and socket go."""
        life: ProcLife | None = getattr(proc, "life", None)
        if life is None:
            return
        for timer in life.timers.values():
            timer.cancel()
        life.timers.clear()
        life.log_re = None
        if life.sock is not None:
            if life.sock.fileno() >= 0:
                self._loop.remove_reader(life.sock.fileno())
            life.sock.close()
            life.sock = None
            try:
                os.unlink(life.path)
            except OSError:
                pass

    def _life_shutdown(self) -> None:
        self._checks.shutdown()
        if self._notify_dir is not None:
            shutil.rmtree(self._notify_dir, ignore_errors=True)
            self._notify_dir = None

    # ------------------------------------------------------------------ readiness
    def _alive(self, proc: Process) -> bool:
        return proc.state == ProcessState.RUNNING and self._procs.get(proc.pid) is proc

    def _probe_ready(self, proc: Process) -> None:
        life: ProcLife = proc.life
        life.timers.pop("poll", None)
        if not self._alive(proc) or life.readiness != Readiness.STARTING:
            return
        spec = proc.spec
        self._checks.submit(self._loop, spec.ready, min(spec.health_timeout, spec.ready_timeout),
                            build_env(spec), spec.cwd, lambda error, p=proc: self._ready_probed(p, error))

    def _ready_probed(self, proc: Process, error: str | None) -> None:
        life: ProcLife = proc.life
        if not self._alive(proc) or life.readiness != Readiness.STARTING:
            return
        if error is None:
            self._mark_ready(proc)
            return
        life.reason = error
        life.timers["poll"] = self._loop.call_later(life.poll, self._probe_ready, proc)
        life.poll = min(life.poll * 2, READY_POLL_MAX)

    def _log_ready(self, proc: Process, payload: bytes) -> None:
        """IO thread: a chunk of output of a process waiting for its `log:` line."""
        life = proc.life
        regex = life.log_re
        if regex is None or life.log_done:
            return
        if any(regex.search(line) for line in payload.splitlines()):
            life.log_done = True
            self._loop.call_soon(self._mark_ready, proc)

    def _mark_ready(self, proc: Process) -> None:
        self._loop.assert_in_loop()
        life: ProcLife = proc.life
        if not self._alive(proc) or life.readiness != Readiness.STARTING:
            return
        check_readiness(life.readiness, Readiness.READY, proc.pid)
        life.readiness, life.reason, life.ready_at = Readiness.READY, None, time.time()
        for name in ("ready", "delay", "poll"):
            timer = life.timers.pop(name, None)
            if timer is not None:
                timer.cancel()
        job = self._jobs.get(proc.job)
        if job is not None:
            self._life_ready(job, proc, publish=True)

    def _life_ready(self, job: Job, proc: Process, publish: bool) -> None:
        if job.spec.after_start:
            self._run_hook(job, proc, "after_start")
        if job.spec.watchdog_sec and proc.life.sock is not None:
            self._arm_watchdog(proc)  # as systemd does: from the end of the start-up
        if self._waiting:
            self._loop.call_soon(self._wake_dependents)
        if publish:
            self._publish_proc(proc, "ready", check=str(job.spec.ready),
                               after=round(time.monotonic() - proc.started_mono, 3))
            if job.roll is not None and proc.pid in job.roll.pending:
                self._loop.call_soon(self._roll_ready, job, proc)
        if job.spec.health is not None and job.spec.health.kind in PROBES:
            proc.life.timers["health"] = self._loop.call_later(job.spec.health_interval, self._health_due, proc)

    def _ready_timeout(self, proc: Process) -> None:
        life: ProcLife = proc.life
        life.timers.pop("ready", None)
        if not self._alive(proc) or life.readiness != Readiness.STARTING:
            return
        check = str(proc.spec.ready)
        why = life.reason if life.reason and life.reason.startswith(check) else \
            f"{check}: {life.reason}" if life.reason else check  # a probe's error names its check
        reason = f"not ready after {proc.spec.ready_timeout:g}s ({why})"
        life.reason = reason
        log.warning("process %s (%s): %s", proc.pid, proc.job, reason)
        self._publish_proc(proc, "not_ready", reason=reason)
        self._stop_proc(proc, "ready_timeout")
        job = self._jobs.get(proc.job)
        if job is not None:
            self._roll_lost(job, proc)

    # ------------------------------------------------------------------ health
    def _health_due(self, proc: Process) -> None:
        life: ProcLife = proc.life
        life.timers.pop("health", None)
        if not self._alive(proc):
            return
        spec = proc.spec
        self._checks.submit(self._loop, spec.health, spec.health_timeout, build_env(spec), spec.cwd,
                            lambda error, p=proc: self._health_result(p, error))

    def _health_result(self, proc: Process, error: str | None) -> None:
        life: ProcLife = proc.life
        if not self._alive(proc):
            return
        spec = proc.spec
        if error is None:
            life.failures, life.reason = 0, None
        else:
            life.failures += 1
            life.reason = error
            if life.failures >= spec.health_retries:
                self._unhealthy(proc, "unhealthy", f"{life.failures} failed health checks: {error}")
                return
        life.timers["health"] = self._loop.call_later(spec.health_interval, self._health_due, proc)

    def _unhealthy(self, proc: Process, stop_reason: str, reason: str) -> None:
        life: ProcLife = proc.life
        if life.readiness == Readiness.READY:
            check_readiness(life.readiness, Readiness.UNHEALTHY, proc.pid)
            life.readiness = Readiness.UNHEALTHY
        life.reason = reason
        log.warning("process %s (%s) is unhealthy: %s", proc.pid, proc.job, reason)
        self._publish_proc(proc, "unhealthy", reason=reason)
        self._stop_proc(proc, stop_reason)

    # ------------------------------------------------------------------ sd_notify
    def _on_notify(self, proc: Process) -> None:
        life: ProcLife = proc.life
        while life.sock is not None:
            try:
                data = life.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for line in data.decode("utf-8", "replace").splitlines():
                key, _, value = line.partition("=")
                if key == "READY" and value == "1":
                    self._mark_ready(proc)
                elif key == "STATUS":
                    life.status = value[:500]
                elif key == "WATCHDOG" and value == "1" and proc.spec.watchdog_sec:
                    self._arm_watchdog(proc)

    def _arm_watchdog(self, proc: Process) -> None:
        life: ProcLife = proc.life
        timer = life.timers.pop("watchdog", None)
        if timer is not None:
            timer.cancel()
        life.timers["watchdog"] = self._loop.call_later(proc.spec.watchdog_sec, self._watchdog_due, proc)

    def _watchdog_due(self, proc: Process) -> None:
        proc.life.timers.pop("watchdog", None)
        if self._alive(proc):
            self._unhealthy(proc, "watchdog", f"no WATCHDOG=1 for {proc.spec.watchdog_sec:g}s")

    @staticmethod
    def _check_failure(proc: Process) -> str | None:
        """Why zsup stopped `proc` for a failed check (its ready, health or watchdog), as the
        job's `last_error` says it; None if it was not stopped for that."""
        life: ProcLife | None = getattr(proc, "life", None)
        if proc.stop_reason not in FAILED_STOPS or life is None or not life.reason:
            return None
        return life.reason if proc.stop_reason == "ready_timeout" else f"unhealthy: {life.reason}"

    # ------------------------------------------------------------------ restart policy
    def _policy_restarts(self, job: Job, proc: Process) -> bool:
        """Whether the death of `proc` (not stopped by zsup, or failed a check) is restarted.

        on-failure: a non-zero exit, a signal zsup did not send, a failed check or spawn."""
        policy = job.spec.restart
        if policy == "always":
            return True
        if policy == "on-failure":
            return proc.stop_reason in FAILED_STOPS or not proc.os_pid or proc.exit_code != 0
        return False

    def _finished(self, job: Job, proc: Process) -> None:
        """`proc` ended for good (restart policy): once all have, the job is `exited`."""
        job.finished.append({"pid": proc.pid, "exit_code": proc.exit_code, "term_signal": proc.term_signal,
                             "reason": proc.stop_reason or (None if proc.os_pid else job.last_error)})
        if job.processes or len(job.finished) < job.numprocesses:
            return
        if job.spec.schedule and job.state in (JobState.RUNNING, JobState.FAILING):
            job.set_state(JobState.SCHEDULED)  # until the next run; still active
            self._publish_job(job, "exited", exit_codes=[f["exit_code"] for f in job.finished])
        elif job.state in (JobState.RUNNING, JobState.FAILING):
            job.set_state(JobState.EXITED)
            job.active = False
            job.stop_reason = "exited"
            self._publish_job(job, "exited", exit_codes=[f["exit_code"] for f in job.finished])
            if self._waiting:
                self._wake_dependents()
