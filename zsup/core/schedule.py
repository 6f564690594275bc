"""Scheduled jobs: `schedule = CRON` runs the job's processes at the times the cron
expression names (five fields, `minute hour day-of-month month day-of-week`, in zsupd's
local time; or six, with seconds first, as cronsim reads them).

A started scheduled job is `scheduled` (waiting for its next run, `next_run`); when a run is
due it becomes `running`, spawns its `numprocesses` processes, and once they all ended goes
back to `scheduled` with their `exit_codes` (`restart = never` is implied: a run is never
restarted). A run due while the previous one still runs is skipped, with the event
`job.<session>.<name>.run_skipped`; a run that starts publishes `job.<session>.<name>.run`.
A stop cancels the schedule; a start arms it again.

Thread rule: the mixin's methods run in the supervisor loop's thread.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from zsup.core.states import JobState
from zsup.errors import BadRequest

if TYPE_CHECKING:
    from zsup.core.job import Job

log = logging.getLogger(__name__)


def parse_schedule(value) -> str | None:
    """A cron expression, checked (BadRequest naming `schedule`); None or "" -> None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\0" in value:
        raise BadRequest(f"schedule: expected a cron expression such as '*/5 * * * *', got {value!r}")
    value = " ".join(value.split())
    from datetime import datetime  # cronsim and datetime: only a config with a schedule pays them

    from cronsim import CronSim, CronSimError

    try:
        CronSim(value, datetime.now().astimezone())
    except (CronSimError, ValueError) as exc:
        raise BadRequest(f"schedule: {value!r}: {exc}") from None
    return value


def next_run(expr: str, after: float) -> float:
    """The next time (epoch seconds) after `after` the expression names; cronsim's
    CronSimError or StopIteration if it never is."""
    from datetime import datetime

    from cronsim import CronSim

    start = datetime.fromtimestamp(after).astimezone()
    return next(CronSim(expr, start)).timestamp()


class Scheduling:
    """Mixed into Manager (with Supervision); uses `_loop`, `_jobs`, `_manage`, `_publish_job`."""

    def _schedule_arm(self, job: Job) -> None:
        from cronsim import CronSimError  # loaded already: parse_schedule checked the expression

        self._schedule_cancel(job)
        try:
            job.next_run = next_run(job.spec.schedule, time.time())
        except (CronSimError, StopIteration) as exc:  # e.g. `0 0 30 2 *`: never due
            log.error("job %s: schedule %r is never due: %s", job.name, job.spec.schedule, exc)
            job.next_run = None
            return
        job.schedule_timer = self._loop.call_later(max(0.0, job.next_run - time.time()), self._schedule_due, job)

    def _schedule_cancel(self, job: Job) -> None:
        if job.schedule_timer is not None:
            job.schedule_timer.cancel()
            job.schedule_timer = None
        job.next_run = None

    def _schedule_due(self, job: Job) -> None:
        self._loop.assert_in_loop()
        job.schedule_timer = None
        if self._jobs.get(job.name) is not job or not job.active or self.stopping:
            return
        due = job.next_run
        if job.state != JobState.SCHEDULED or job.processes:
            self._publish_job(job, "run_skipped", due=due, reason="the previous run is still going",
                              last_run=job.last_run)
        else:
            job.finished.clear()
            job.set_state(JobState.RUNNING)
            job.last_run = time.time()
            self._publish_job(job, "run", due=due)
            self._manage(job)
        self._schedule_arm(job)
