"""What follows a child's exit: reap it, drain its pipes, publish it, then restart it.

The pidfd wakes the supervisor loop (`_on_pidfd`), which reaps the child at once and asks the
IO thread to drain what it left in its pipes (no output is lost). The drained exits come
back in batches (`_exit_drained`, then `_finish_exits`): each is published (`exit`,
`stop_pid`, `reap`), and then what follows it runs: its dependants, its `after_stop` hook,
and its restart (`_on_death`, in supervision.py).

Thread rule: `_exit_drained` runs on the IO thread; everything else on the supervisor's.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from zsup.core.lifecycle import FAILED_STOPS
from zsup.core.process import Process

if TYPE_CHECKING:
    from zsup.core.job import Job

log = logging.getLogger(__name__)

EXITED_KEPT = 1000  # recently exited processes still answered by get_process/read_output


class Exits:
    """Mixed into Supervision; uses `_loop`, `_pipes`, `_jobs`, `_procs`, `_attached`,
    `_exited`, `_drained`, `_drained_called`, `_lingering`, `_all_gone`, `events`, and the
    other mixins' `_life_ended`, `_stop_leftovers`, `_resources_reaped`, `_publish_proc`,
    `_dependency_freed`, `_run_hook`, `_roll_lost`, `_on_death`."""

    def _on_pidfd(self, proc: Process) -> None:
        self._loop.assert_in_loop()
        self._loop.remove_reader(proc.pidfd)
        try:
            _, status = os.waitpid(proc.os_pid, os.WNOHANG)
        except ChildProcessError:
            status = None if proc.adopted else 0  # not our child: its status went elsewhere
        if proc.stop_timer is not None:
            proc.stop_timer.cancel()
        proc.reaped(status)
        self._life_ended(proc)
        if not proc.spec.detach:
            self._stop_leftovers(proc)
            self._resources_reaped(proc)
        self._pipes.drain(proc, lambda: self._exit_drained(proc))

    def _exit_drained(self, proc: Process) -> None:
        """IO thread: the process's pipes are drained. Exits go back to the supervisor in
        batches, one call for every exit drained meanwhile (`_finish_exits`)."""
        self._drained.append(proc)
        if not self._drained_called:  # read unlocked: at worst one more call, which finds none
            self._drained_called = True
            self._loop.call_soon(self._finish_exits)

    def _finish_exits(self) -> None:
        # The flag goes down before the deque is read: an exit appended after the read
        # schedules a call of its own. Every exit of the batch is published before any of
        # what follows an exit (restart, dependants, after_stop): an in-process listener
        # hears the exits before the restarts (`zsup start` stops everything from inside the
        # exit event, zsup/cli/procfile_local.py). The deferred listeners (the bus's
        # publisher thread) get the batch's events, restarts' spawns included, in one burst
        # at the end: a restart spawns before the publisher thread wakes, and a stop of
        # hundreds no longer wakes it once per event.
        self._drained_called = False
        done = []
        with self.events.held():
            while self._drained:
                proc = self._drained.popleft()
                try:
                    done.append((proc, *self._finish_exit(proc)))
                except Exception:  # one bad exit must not leave the others unfinished
                    log.exception("exit of process %s (%s) failed", proc.pid, proc.job)
            for proc, job, kept in done:
                try:
                    self._after_exit(proc, job, kept)
                except Exception:
                    log.exception("exit of process %s (%s) failed", proc.pid, proc.job)

    def _finish_exit(self, proc: Process) -> tuple[Job | None, bool]:
        """The exit's bookkeeping and events; (its job, whether the job still kept it)."""
        self._loop.assert_in_loop()
        self._pipes.close_stdin(proc)
        if self._procs.pop(proc.pid, None) is not None:
            self._attached -= not proc.spec.detach
        self._exited[proc.pid] = proc
        while len(self._exited) > EXITED_KEPT:
            self._exited.popitem(last=False)
        self._publish_proc(proc, "exit", exit_code=proc.exit_code, term_signal=proc.term_signal,
                           reason=proc.stop_reason, uptime=round(proc.uptime(), 3))
        if proc.stop_reason:
            self._publish_proc(proc, "stop_pid", reason=proc.stop_reason)
        job = self._jobs.get(proc.job)
        kept = job is not None and bool(job.processes.pop(proc.pid, None) or job.committed.pop(proc.pid, None))
        self._publish_proc(proc, "reap", lingering=proc.os_pid in self._lingering)
        return job, kept

    def _after_exit(self, proc: Process, job: Job | None, kept: bool) -> None:
        """What follows an exit once it is published: dependants, after_stop, a restart."""
        if kept and job.spec.depends:
            self._dependency_freed(job)
        if job is not None and job.spec.after_stop:
            self._run_hook(job, proc, "after_stop")
        if not self._attached:  # (a count, not a scan of every live process per exit)
            self._all_gone.set()
        if kept and not proc.committed and (not proc.stop_reason or proc.stop_reason in FAILED_STOPS):
            if not self._roll_lost(job, proc):
                self._on_death(job, proc)
