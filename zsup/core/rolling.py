"""Rolling restarts: replace a job's processes a few at a time, each new one ready before an
old one goes, so a service behind them never stops answering.

A roll starts `max_surge` new processes (with the job's current spec) beside the old ones;
each time one becomes ready, one old process is stopped (stop reason `rolling`) and the next
new one is started, until every old process is replaced. New processes start the way every
spawn does (`_spawn_hooked`): the job's `before_start` first, `after_start` once ready. If a
new process fails (its `before_start` fails, it cannot spawn, is not ready in
`ready_timeout`, or dies first), the roll stops: the old processes still running keep
serving, the failed one is not restarted, a job that was updated gets its previous spec back
(a rollback), and `job.<session>.<name>.roll` says `failed` with the reason, which `info` and
`zsupctl status` show until the next start or roll.

Thread rule: supervisor loop only. Events: `job.<session>.<name>.roll` with `phase` =
start | step | done | failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from zsup.core.flapping import FlappingState
from zsup.core.job import Job
from zsup.core.jobspec import JobSpec, to_number
from zsup.core.process import Process
from zsup.core.states import JobState, ProcessState

log = logging.getLogger(__name__)


@dataclass
class Roll:
    old: list  # the processes to replace, oldest first
    todo: int  # new processes still to start
    surge: int
    total: int
    old_spec: JobSpec | None = None  # the spec to go back to if the roll fails (an update)
    pending: set = field(default_factory=set)  # pids of new processes not ready yet
    hooking: int = 0  # new processes waiting for their before_start hook
    replaced: int = 0

    def info(self) -> dict:
        return {"phase": "rolling", "replaced": self.replaced, "total": self.total,
                "pending": len(self.pending) + self.hooking}


class Rolling:
    """Mixed into Manager (with Supervision and Lifecycle)."""

    def _roll(self, job: Job, surge: int | None = None, old_spec: JobSpec | None = None) -> bool:
        """Start a rolling restart of `job`; False if it has nothing running to roll (the
        caller starts it the usual way)."""
        self._loop.assert_in_loop()
        self._roll_cancel(job)
        old = [p for p in job.running()]
        # `failing` (a process exits at once) still rolls what serves: replacing the rest all
        # at once would take the job down with it
        if not job.active or not old or job.state not in (JobState.RUNNING, JobState.FAILING):
            return False
        surge = max(1, surge or job.spec.max_surge)
        job.roll = Roll(old=old, todo=len(old), surge=surge, total=len(old), old_spec=old_spec)
        job.roll_result = None
        job.finished.clear()
        self._publish_job(job, "roll", phase="start", total=len(old), max_surge=surge)
        self._roll_spawn(job)
        return True

    def _roll_restart(self, job: Job, max_surge) -> None:
        """An explicit rolling restart (`rolling_restart`): a job with nothing running is
        restarted the usual way."""
        if max_surge is not None:
            max_surge = to_number("max_surge", max_surge, int, 1, maximum=job.spec.max_processes)
        if not self._roll(job, max_surge):
            self._restart_job(job, "all")

    def _roll_update(self, job: Job, spec: JobSpec) -> bool:
        """`update` of a running job whose new spec says `restart_mode = rolling`: the old
        processes keep their own spec while new ones replace them; a failed roll puts the old
        spec back. False (nothing done) if the job has nothing running."""
        if not job.running() or job.state != JobState.RUNNING:
            return False
        old_spec, job.spec = job.spec, spec
        job.numprocesses = spec.numprocesses
        job.flapping = FlappingState(spec.flapping) if spec.flapping else None
        self._publish_job(job, "update")
        return self._roll(job, old_spec=old_spec)

    def _roll_spawn(self, job: Job) -> None:
        roll: Roll = job.roll
        while roll is job.roll and roll.todo > 0 and len(roll.pending) + roll.hooking < roll.surge:
            roll.todo -= 1
            roll.hooking += 1  # until its before_start ran (at once without one)
            self._spawn_hooked(job, lambda proc, error, r=roll: self._roll_spawned(job, r, proc, error))

    def _roll_spawned(self, job: Job, roll: Roll, proc: Process | None, error: str | None) -> None:
        """A new process of `roll` started (or its before_start or spawn failed: the roll fails)."""
        roll.hooking -= 1
        if job.roll is not roll:  # the roll failed or was replaced meanwhile: not wanted any more
            if proc is not None:
                failed = (job.roll_result or {}).get("phase") == "failed"
                self._stop_proc(proc, "roll_failed" if failed else "rolling")
            return
        if proc is None:
            self._roll_failed(job, f"spawn failed: {error}")
            return
        roll.pending.add(proc.pid)
        if proc.life.readiness == "ready":  # no ready check: ready at once
            self._loop.call_soon(self._roll_ready, job, proc)

    def _roll_ready(self, job: Job, proc: Process) -> None:
        """A new process of a roll is ready: one old one goes, the next new one comes."""
        self._loop.assert_in_loop()
        roll: Roll | None = job.roll
        if roll is None or proc.pid not in roll.pending:
            return
        roll.pending.discard(proc.pid)
        roll.replaced += 1
        while roll.old:
            old = roll.old.pop(0)
            if old.state == ProcessState.RUNNING:
                self._stop_proc(old, "rolling")
                break
        self._publish_job(job, "roll", phase="step", replaced=roll.replaced, total=roll.total, pid=proc.pid)
        if roll.todo == 0 and not roll.pending and not roll.hooking:
            for old in roll.old:  # none left in the usual case
                self._stop_proc(old, "rolling")
            job.roll = None
            job.roll_result = {"phase": "done", "replaced": roll.replaced, "total": roll.total}
            self._publish_job(job, "roll", phase="done", replaced=roll.replaced, total=roll.total)
            self._manage(job)
            return
        self._roll_spawn(job)

    def _roll_lost(self, job: Job, proc: Process) -> bool:
        """`proc` ended: True if it was a new process of a roll (which then fails)."""
        roll: Roll | None = job.roll
        if roll is None or proc.pid not in roll.pending:
            return False
        life = getattr(proc, "life", None)
        reason = (life.reason if life is not None and life.reason else
                  f"process {proc.pid} exited with {proc.exit_code} before it was ready")
        self._roll_failed(job, reason)
        return True

    def _roll_failed(self, job: Job, reason: str) -> None:
        roll: Roll = job.roll
        job.roll = None
        for pid in roll.pending:  # new ones still starting go: the old ones serve
            proc = self._procs.get(pid)
            if proc is not None:
                self._stop_proc(proc, "roll_failed")
                proc.stop_reason = "roll_failed"  # also over ready_timeout: not a death to restart
        if roll.old_spec is not None:
            job.spec = roll.old_spec
        job.roll_result = {"phase": "failed", "replaced": roll.replaced, "total": roll.total, "reason": reason}
        log.warning("job %s: rolling restart stopped after %s of %s: %s", job.name, roll.replaced, roll.total,
                    reason)
        self._publish_job(job, "roll", phase="failed", replaced=roll.replaced, total=roll.total, reason=reason)
        self._manage(job)

    def _roll_cancel(self, job: Job) -> None:
        """A stop, a start or a plain restart ends a roll in progress (no event)."""
        job.roll = None
