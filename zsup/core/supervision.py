"""The supervision half of the Manager: spawning, stopping, reaping and restarting.

Everything here runs in the supervisor loop's thread (the Loop named "zsup-supervisor"),
except `_on_lines`, which the IO loop calls. The public, `@supervised` half of the Manager
(zsup/core/manager.py) calls in here; nothing here is called from any other thread. Each
state-changing entry checks that rule with `Loop.assert_in_loop()` (a thread-ident compare),
so a call from the wrong thread fails loudly in tests instead of racing in production.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from zsup.bus.topics import io_topic, job_topic, proc_topic
from zsup.core.job import Job
from zsup.core.output import OutputStream
from zsup.core.process import Process, SpawnError
from zsup.core.states import JobState, ProcessState

log = logging.getLogger(__name__)

EXITED_KEPT = 1000  # recently exited processes still answered by get_process/read_output
BACKOFF_RESET = 1.0  # a process that lived this long is not crash-looping
BACKOFF_BASE = 0.01
BACKOFF_MAX = 10.0
GROUP_CHECK_FIRST = 0.02  # first look at a lingering process group, then twice as late each time
GROUP_CHECK_MAX = 0.5
# Spawning a big count is done in slices: at most this long (and this many) per turn of the
# supervisor loop, which then serves what queued meanwhile (a `status`, an exit, a SIGTERM)
# before the next slice. One fork+exec costs about a millisecond. A small count (up to
# SPAWN_MIN) is always spawned at once, so a job of a few processes runs when `load` answers.
SPAWN_SLICE = 0.02
SPAWN_MIN = 16
SPAWN_BATCH = 64


class Supervision:
    """Mixed into Manager, whose __init__ makes the state used here: `_loop`, `_pipes`,
    `_jobs`, `_procs`, `_exited`, `_pid_counter`, `_ignored_os_pids`, `_all_gone`, `_lingering`,
    `group_listeners`, `events`, `log_writer`, `stopping`."""

    def _stop_everything(self) -> float:
        self._loop.assert_in_loop()
        longest = 0.0
        for job in self._jobs.values():
            job.active = False
            self._cancel_restart(job)
        for proc in list(self._procs.values()):
            if proc.spec.detach:
                continue  # a detached process outlives the manager by design
            longest = max(longest, proc.graceful_timeout)
            self._stop_proc(proc, "shutdown")
        if not any(not p.spec.detach for p in self._procs.values()):
            self._all_gone.set()
        return longest


    def _publish_job(self, job: Job, event: str, **extra) -> None:
        s, n = job.spec.session, job.spec.name
        self.events.publish(job_topic(s, n, event), {"event": event, "name": n, "session": s, "job": job.name, **extra})

    def _publish_proc(self, proc: Process, event: str, **extra) -> None:
        s, n = proc.spec.session, proc.spec.name
        msg = {"event": event, "name": n, "session": s, "job": proc.job, "pid": proc.pid, "os_pid": proc.os_pid}
        msg.update(extra)
        self.events.publish(proc_topic(s, n, event), msg)


    def _start_job(self, job: Job) -> None:
        self._loop.assert_in_loop()
        self._cancel_restart(job)
        job.active = True
        job.set_state(JobState.RUNNING)
        job.stop_reason = None
        job.last_error = job.last_error_time = None  # a new start, a new episode
        job.last_error_exit = False
        job.fast_deaths = 0
        if job.flapping:
            job.flapping.retries = 0
            job.flapping.restarts.clear()
        self._publish_job(job, "start")
        self._manage(job)

    def _stop_job(self, job: Job, reason: str, publish: bool = True) -> None:
        self._loop.assert_in_loop()
        job.active = False
        job.set_state(JobState.STOPPED)
        self._cancel_restart(job)
        for proc in list(job.processes.values()):
            self._stop_proc(proc, reason)
        if publish:
            self._publish_job(job, "stop", reason=reason)

    def _restart_job(self, job: Job) -> None:
        self._loop.assert_in_loop()
        for proc in list(job.processes.values()):
            self._stop_proc(proc, "restart")
        self._publish_job(job, "restart")
        if job.active:
            self._cancel_restart(job)
            job.fast_deaths = 0
            self._manage(job)
        else:
            self._start_job(job)

    def _cancel_restart(self, job: Job) -> None:
        if job.restart_timer is not None:
            job.restart_timer.cancel()
            job.restart_timer = None

    def _manage(self, job: Job) -> None:
        """Bring the job's running processes to its count."""
        self._loop.assert_in_loop()
        if not job.active or job.restart_timer is not None or self.stopping:
            return
        running = job.running()
        for proc in running[: max(0, len(running) - job.numprocesses)]:
            self._stop_proc(proc, "scale")  # the oldest go first
        missing = job.numprocesses - len(running)
        deadline = time.monotonic() + SPAWN_SLICE
        for done in range(min(missing, SPAWN_BATCH)):
            if self._spawn(job) is None:
                return
            if done + 1 >= SPAWN_MIN and time.monotonic() > deadline:
                missing -= done + 1
                break
        else:
            missing -= SPAWN_BATCH
        if missing > 0:  # the rest in the next turn, after what queued meanwhile
            self._loop.call_soon(self._manage_rest, job)

    def _manage_rest(self, job: Job) -> None:
        if self._jobs.get(job.name) is job:
            self._manage(job)

    def _spawn(self, job: Job, committed: bool = False, env: dict | None = None,
               graceful_timeout: float | None = None) -> Process | None:
        self._loop.assert_in_loop()
        proc = Process(next(self._pid_counter), job.spec, committed, graceful_timeout)
        if not committed:  # ZSUP_INSTANCE: the lowest slot (1..) no running process of the job
            taken = {p.instance for p in job.running()}  # holds; one being stopped hands it on
            proc.instance = next(n for n in range(1, len(taken) + 2) if n not in taken)
            env = {**(env or {}), "ZSUP_INSTANCE": str(proc.instance)}
        try:
            proc.spawn(env)
        except SpawnError as exc:
            self._publish_proc(proc, "spawn_error", error=exc.message)
            if committed:
                raise
            self._spawn_failed(job, exc.message)
            # Counted as a death, later: the back-off or flapping rule decides when to retry.
            self._loop.call_soon(self._on_death, job, proc)
            return None
        self._procs[proc.pid] = proc
        (job.committed if committed else job.processes)[proc.pid] = proc
        self._all_gone.clear()
        self._loop.add_reader(proc.pidfd, lambda _fd, p=proc: self._on_pidfd(p))
        self._pipes.add(proc)
        self._publish_proc(proc, "spawn", detach=proc.spec.detach, committed=committed,
                           instance=proc.instance)
        if not committed and job.last_error is not None:
            if job.last_error_exit:  # it failed by exiting at once: recovered once it stays up
                self._loop.call_later(BACKOFF_RESET, self._check_survived, job, proc)
            else:
                self._spawn_recovered(job)
        return proc

    def _spawn_failed(self, job: Job, error: str) -> None:
        """A kept-alive process could not spawn: the job is `failing` with the reason in
        `last_error`, and zsupd logs one line per episode (not one per retry), and one more
        only when the reason changes."""
        if job.state == JobState.RUNNING:
            job.set_state(JobState.FAILING)
        if error != job.last_error:
            log.error("job %s %s: %s (retrying)", job.name,
                      "fails" if job.last_error_exit else "cannot spawn", error)
        job.last_error, job.last_error_time = error, time.time()

    def _died_at_once(self, job: Job, proc: Process) -> None:
        """A kept-alive process failed within BACKOFF_RESET of its start: like a spawn error,
        the job is `failing` with why (its exit and the last line it wrote, e.g. a server's
        "cannot listen"), until a process of it stays up that long."""
        how = f"signal {proc.term_signal}" if proc.term_signal else f"code {proc.exit_code}"
        error = f"exits at once ({how})"
        last = _last_line(proc)
        if last:
            error += f": {last}"
        job.last_error_exit = True
        self._spawn_failed(job, error)

    def _check_survived(self, job: Job, proc: Process) -> None:
        if job.last_error_exit and proc.state == ProcessState.RUNNING and job.last_error is not None:
            job.last_error_exit = False
            self._spawn_recovered(job)

    def _spawn_recovered(self, job: Job) -> None:
        if job.state == JobState.FAILING:
            job.set_state(JobState.RUNNING)
        log.info("job %s runs again (last error: %s)", job.name, job.last_error)
        job.last_error = job.last_error_time = None

    def _stop_proc(self, proc: Process, reason: str) -> None:
        self._loop.assert_in_loop()
        if proc.state != ProcessState.RUNNING:
            return
        proc.set_state(ProcessState.STOPPING)
        proc.stop_reason = reason
        sig = proc.spec.stop_signal
        if proc.spec.detach:
            proc.signal(sig)
        else:
            proc.signal_group(sig)
        proc.stop_timer = self._loop.call_later(proc.graceful_timeout, self._kill_now, proc)

    def _kill_now(self, proc: Process) -> None:
        self._loop.assert_in_loop()
        if proc.state == ProcessState.STOPPING:
            log.info("process %s (%s) ignored its stop signal for %ss: SIGKILL", proc.pid, proc.job,
                     proc.graceful_timeout)
            if proc.spec.detach:
                proc.signal(signal.SIGKILL)
            else:
                proc.signal_group(signal.SIGKILL)

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
        if not proc.spec.detach:
            self._stop_leftovers(proc)
        self._pipes.drain(proc, lambda: self._loop.call_soon(self._finish_exit, proc))

    def _finish_exit(self, proc: Process) -> None:
        self._loop.assert_in_loop()
        self._pipes.close_stdin(proc)
        self._procs.pop(proc.pid, None)
        self._exited[proc.pid] = proc
        while len(self._exited) > EXITED_KEPT:
            self._exited.popitem(last=False)
        self._publish_proc(proc, "exit", exit_code=proc.exit_code, term_signal=proc.term_signal,
                           reason=proc.stop_reason, uptime=round(proc.uptime(), 3))
        if proc.stop_reason:
            self._publish_proc(proc, "stop_pid", reason=proc.stop_reason)
        job = self._jobs.get(proc.job)
        kept = job is not None and (job.processes.pop(proc.pid, None) or job.committed.pop(proc.pid, None))
        self._publish_proc(proc, "reap", lingering=proc.os_pid in self._lingering)
        if not any(not p.spec.detach for p in self._procs.values()):
            self._all_gone.set()
        if kept and not proc.committed and not proc.stop_reason:
            self._on_death(job, proc)

    # ------------------------------------------------------------------ leftovers of a dead process
    def _stop_leftovers(self, proc: Process) -> None:
        """The leader of a process group was reaped: stop what is left of its group (its
        background children, a crashed server's workers). They get the job's stop signal and,
        graceful_timeout later, SIGKILL; a group zsup was already stopping gets SIGKILL at once
        (its members had their stop signal). The group is watched until it is empty, then
        `group_listeners` hear of it (the orphan guard keeps it until then).

        The group id cannot be reused while the group has a member, zombie or not; a check
        against our own live processes covers the instant after it empties."""
        self._loop.assert_in_loop()
        pgid = proc.os_pid
        sig = signal.SIGKILL if proc.stop_reason else proc.spec.stop_signal
        if not self._signal_group(pgid, sig):
            return  # the usual case: the group died with its leader
        log.debug("process %s (%s) exited, leaving members of its group %s: signal %s", proc.pid, proc.job,
                  pgid, sig)
        self._lingering[pgid] = proc
        if sig != signal.SIGKILL:
            self._loop.call_later(proc.graceful_timeout, self._kill_group, pgid, proc)
        self._loop.call_later(GROUP_CHECK_FIRST, self._check_group, pgid, proc, GROUP_CHECK_FIRST)

    def _signal_group(self, pgid: int, sig: int) -> bool:
        """killpg, unless pgid is gone or is now the group of another of our processes."""
        if any(p.os_pid == pgid and p.state != ProcessState.EXITED for p in self._procs.values()):
            return False
        try:
            os.killpg(pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a member that changed user: still there, and still watched

    def _kill_group(self, pgid: int, proc: Process) -> None:
        self._loop.assert_in_loop()
        if self._lingering.get(pgid) is proc and self._signal_group(pgid, signal.SIGKILL):
            log.info("process group %s (%s) ignored its stop signal for %ss: SIGKILL", pgid, proc.job,
                     proc.graceful_timeout)

    def _check_group(self, pgid: int, proc: Process, delay: float) -> None:
        self._loop.assert_in_loop()
        if self._lingering.get(pgid) is not proc:
            return
        self._reap_orphans()  # members re-parented to us: their zombies would keep the group
        if self._signal_group(pgid, 0):
            delay = min(delay * 2, GROUP_CHECK_MAX)
            self._loop.call_later(delay, self._check_group, pgid, proc, delay)
            return
        del self._lingering[pgid]
        for listener in self.group_listeners:
            listener(pgid)

    # ------------------------------------------------------------------ detached, found again
    def _adopt_detached(self, job: Job) -> None:
        """List again the detached processes of `job` a previous zsupd started (see
        Manager.expect_detached). They are not our children: their pidfd still wakes us when
        they exit, but their exit status is lost (`exit_code` null), and their output went to
        the previous zsupd's pipes (none is captured)."""
        self._loop.assert_in_loop()
        for record in self._adoptable.pop(job.name, []):
            if not job.spec.detach:
                continue  # the job is no longer detached: the process is left alone
            proc = Process(next(self._pid_counter), job.spec)
            try:
                proc.adopt(record["os_pid"], record["started"])
            except ProcessLookupError:
                continue
            self._procs[proc.pid] = proc
            job.processes[proc.pid] = proc
            self._all_gone.clear()
            self._loop.add_reader(proc.pidfd, lambda _fd, p=proc: self._on_pidfd(p))
            log.info("job %s: found detached process %s (os pid %s) again", job.name, proc.pid, proc.os_pid)
            self._publish_proc(proc, "spawn", detach=True, committed=False, adopted=True)

    def _on_death(self, job: Job, proc: Process) -> None:
        """A kept-alive process died on its own (or could not spawn): restart it."""
        self._loop.assert_in_loop()
        if not job.active or self.stopping or self._jobs.get(job.name) is not job:
            return
        if job.flapping:
            if job.flapping.record_restart():
                self._flap(job)
                return
            self._manage(job)
            return
        if proc.os_pid and proc.uptime() >= BACKOFF_RESET:
            job.fast_deaths = 0
        elif proc.os_pid and (proc.exit_code or proc.term_signal):
            self._died_at_once(job, proc)
        job.fast_deaths += 1
        if job.fast_deaths <= 1:
            self._manage(job)
        elif job.restart_timer is None:
            delay = min(BACKOFF_BASE * 2 ** (job.fast_deaths - 2), BACKOFF_MAX)
            job.restart_timer = self._loop.call_later(delay, self._restart_due, job)

    def _restart_due(self, job: Job) -> None:
        self._loop.assert_in_loop()
        job.restart_timer = None
        if job.active and job.state == JobState.FLAPPING:
            job.set_state(JobState.RUNNING)
        self._manage(job)

    def _flap(self, job: Job) -> None:
        self._loop.assert_in_loop()
        rule = job.flapping.rule
        for proc in list(job.processes.values()):
            self._stop_proc(proc, "flapping")
        s, n = job.spec.session, job.spec.name
        topic = proc_topic(s, n, "flap")
        base = {"event": "flap", "name": n, "session": s, "job": job.name, "max_retry": rule.max_retry}
        if job.flapping.next_retry():
            job.set_state(JobState.FLAPPING)
            job.restart_timer = self._loop.call_later(rule.retry_in, self._restart_due, job)
            self.events.publish(topic, {**base, "attempt": job.flapping.retries, "retry_in": rule.retry_in,
                                        "gave_up": False})
        else:
            self.events.publish(topic, {**base, "attempt": job.flapping.retries, "retry_in": None, "gave_up": True})
            job.active = False
            job.set_state(JobState.FAILED)
            job.stop_reason = "flapping"
            self._publish_job(job, "stop", reason="flapping")

    # ------------------------------------------------------------------ orphans (subreaper)
    def _children_os_pids(self) -> set[int]:
        pids: set[int] = set()
        try:
            tasks = os.listdir("/proc/self/task")
        except OSError:
            return pids
        for tid in tasks:
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids.update(int(p) for p in f.read().split())
            except OSError:
                continue
        return pids

    def _orphans(self) -> set[int]:
        ours = {p.os_pid for p in self._procs.values()} | self._ignored_os_pids
        return self._children_os_pids() - ours

    def _reap_orphans(self) -> None:
        self._loop.assert_in_loop()
        for os_pid in self._orphans():
            try:
                os.waitpid(os_pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def _reap_orphans_every(self, interval: float) -> None:
        self._reap_orphans()
        self._loop.call_later(interval, self._reap_orphans_every, interval)

    def _kill_adopted(self) -> None:
        """At shutdown, the grandchildren we adopted as subreaper go too: no orphans."""
        self._loop.assert_in_loop()
        for pgid in list(self._lingering):
            self._signal_group(pgid, signal.SIGKILL)
        orphans = self._orphans()
        for os_pid in orphans:
            try:
                os.kill(os_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while orphans and time.monotonic() < deadline:
            for os_pid in list(orphans):
                try:
                    if os.waitpid(os_pid, os.WNOHANG)[0]:
                        orphans.discard(os_pid)
                except ChildProcessError:
                    orphans.discard(os_pid)
            if orphans:
                time.sleep(0.01)


    # ------------------------------------------------------------------ IO thread
    def _on_lines(self, proc: Process, stream: OutputStream, first: int, count: int, payload: bytes) -> None:
        self._io.assert_in_loop()
        s, n = proc.spec.session, proc.spec.name
        msg = {"pid": proc.pid, "os_pid": proc.os_pid, "job": proc.job, "label": stream.label,
               "seq": first, "lines": count}
        self.events.publish(io_topic(s, n, proc.pid, stream.label), msg, payload)
        if self.log_writer is not None:
            self.log_writer.write(proc.job, stream.label, proc.spec, proc.pid, proc.os_pid, first, payload,
                                  count)


def _last_line(proc: Process, limit: int = 200) -> str:
    """The last line a process wrote (stderr first), trimmed, for an error message."""
    for label in sorted(proc.streams, key=lambda name: name != "stderr"):
        stream = proc.streams[label]
        lines = stream.read(max(0, stream.last_seq - 1))
        if lines:
            return lines[-1][1].decode("utf-8", "replace").strip()[:limit]
    return ""
