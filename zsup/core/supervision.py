"""The supervision half of the Manager: spawning, stopping and restarting (what follows an
exit, reaping included, is zsup/core/exits.py).

Everything here runs in the supervisor loop's thread (the Loop named "zsup-supervisor"),
except `_on_lines`, which the IO loop calls. The public, `@supervised` half of the Manager
(zsup/core/manager.py) calls in here; nothing here is called from any other thread. Each
state-changing entry checks that rule with `Loop.assert_in_loop()` (a thread-ident compare),
so a call from the wrong thread fails loudly in tests instead of racing in production.
"""

from __future__ import annotations

import logging
import signal
import time

from zsup.bus.topics import io_topic, job_topic, proc_topic
from zsup.core.depends import Ordering
from zsup.core.exits import Exits
from zsup.core.hooks import Hooks
from zsup.core.job import Job
from zsup.core.jobspec import JobSpec, check_env, split_job_name
from zsup.core.leftovers import Leftovers
from zsup.core.lifecycle import Lifecycle
from zsup.core.output import OutputStream
from zsup.core.process import Process, SpawnError
from zsup.core.resources import LIMIT_STOPS, ResourceWatch
from zsup.core.rolling import Rolling
from zsup.core.schedule import Scheduling
from zsup.core.states import JobState, ProcessState
from zsup.errors import BadRequest, NotFound

log = logging.getLogger(__name__)

BACKOFF_RESET = 1.0  # a process that lived this long is not crash-looping
START_GRACE = 5.0  # a process that fails within this long of its start could not start: `failing`
BACKOFF_BASE = 0.01
BACKOFF_MAX = 10.0
# Spawning a big count is done in slices: at most this long (and this many) per turn of the
# supervisor loop, which then serves what queued meanwhile (a `status`, an exit, a SIGTERM)
# before the next slice. One fork+exec costs about a millisecond. A small count (up to
# SPAWN_MIN) is always spawned at once, so a job of a few processes runs when `load` answers.
SPAWN_SLICE = 0.02
SPAWN_MIN = 16
SPAWN_BATCH = 64


class Supervision(Exits, Leftovers, Lifecycle, Rolling, Ordering, Hooks, Scheduling, ResourceWatch):
    """Mixed into Manager, whose __init__ makes the state used here: `_loop`, `_pipes`,
    `_jobs`, `_procs`, `_exited`, `_pid_counter`, `_ignored_os_pids`, `_all_gone`, `_lingering`,
    `group_listeners`, `events`, `log_writer`, `stopping`."""

    #: zsupd's listening sockets by name (zsup/daemon/sockets.py): replaced whole, never changed in place
    socket_fds: dict[str, int] = {}

    def _stop_everything(self) -> float:
        self._loop.assert_in_loop()
        longest = 0.0
        for job in self._jobs.values():
            job.active = False
            self._cancel_restart(job)
            self._schedule_cancel(job)
        layers = 1 + max((self._depth(j) for j in self._jobs.values() if j.spec.depends), default=0)
        for proc in list(self._procs.values()):
            job = self._jobs.get(proc.job)
            if proc.spec.detach or (job and (job.stop_deferred or self._stop_after_dependents(job, "shutdown"))):
                continue  # a detached process outlives the manager by design; a dependency waits
            longest = max(longest, proc.graceful_timeout + (proc.spec.hook_timeout if proc.spec.before_stop else 0))
            self._stop_proc(proc, "shutdown")
        if not self._attached:
            self._all_gone.set()
        return longest * layers


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
        self._roll_cancel(job)
        job.roll_result = None
        job.active = True
        if job.stop_deferred:  # stopped and started in one go (an update): the old ones go now
            self._stop_deferred_now(job)
        if job.spec.schedule:  # runs when due, not now
            job.set_state(JobState.SCHEDULED)
            job.stop_reason = job.last_error = job.last_error_time = None
            self._publish_job(job, "start")
            self._schedule_arm(job)
            return
        job.set_state(JobState.RUNNING)
        job.stop_reason = None
        job.last_error = job.last_error_time = None  # a new start, a new episode
        job.last_error_exit = False
        job.fast_deaths = 0
        job.finished.clear()
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
        self._roll_cancel(job)
        self._schedule_cancel(job)
        self._waiting.discard(job.name)
        if not self._stop_later(job, reason):
            for proc in list(job.processes.values()):
                self._stop_proc(proc, reason)
        if publish:
            self._publish_job(job, "stop", reason=reason)

    def _restart_job(self, job: Job, mode: str | None = None) -> None:
        """Replace every process: all at once, or a rolling restart (`mode`, else the job's
        `restart_mode`)."""
        self._loop.assert_in_loop()
        if (mode or job.spec.restart_mode) == "rolling" and self._roll(job):
            return
        self._roll_cancel(job)
        for proc in list(job.processes.values()):
            self._stop_proc(proc, "restart")
        self._publish_job(job, "restart")
        job.finished.clear()
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
        if not job.active or job.restart_timer is not None or self.stopping or job.state == JobState.SCHEDULED \
                or self._gated(job):
            return
        running = job.running()
        wanted = job.numprocesses + (len(job.roll.pending) if job.roll else 0)  # a roll's surge
        for proc in running[: max(0, len(running) - wanted)]:
            self._stop_proc(proc, "scale")  # the oldest go first
        missing = wanted - len(running) - len(job.finished) - job.hook_starts
        spawning = missing > 0
        deadline = time.monotonic() + SPAWN_SLICE
        with self.events.held():  # a slice's events go out in one burst (zsup/core/events.py)
            for done in range(min(missing, SPAWN_BATCH)):
                if self._spawn_hooked(job) is None:
                    return
                if done + 1 >= SPAWN_MIN and time.monotonic() > deadline:
                    missing -= done + 1
                    break
            else:
                missing -= SPAWN_BATCH
        if missing > 0:  # the rest in the next turn, after what queued meanwhile
            self._loop.call_soon(self._manage_rest, job)
        elif spawning:
            # the burst is over: make the new processes' info fragments now, while nothing
            # waits, not in the answer of the next command (a stop's, built while the exits
            # of hundreds pour in before it can reap them)
            self._loop.call_soon(self._warm_info, job)

    def _manage_rest(self, job: Job) -> None:
        if self._jobs.get(job.name) is job:
            self._manage(job)

    def _warm_info(self, job: Job) -> None:
        if self._jobs.get(job.name) is job:
            job.warm_info()

    def _spawn(self, job: Job, committed: bool = False, env: dict | None = None,
               graceful_timeout: float | None = None) -> Process | None:
        self._loop.assert_in_loop()
        proc = Process(next(self._pid_counter), job.spec, committed, graceful_timeout)
        if not committed:  # ZSUP_INSTANCE: the lowest slot (1..) no running process of the job
            taken = {p.instance for p in job.running()}  # holds; one being stopped hands it on
            proc.instance = next(n for n in range(1, len(taken) + 2) if n not in taken)
            env = {**(env or {}), "ZSUP_INSTANCE": str(proc.instance)}
        try:
            env = {**(env or {}), **self._life_env(job, proc)}
            proc.spawn(env, self.socket_fds)
        except SpawnError as exc:
            self._life_ended(proc)
            self._publish_proc(proc, "spawn_error", error=exc.message)
            if committed:
                raise
            self._spawn_failed(job, exc.message)
            # Counted as a death, later: the back-off or flapping rule decides when to retry.
            self._loop.call_soon(self._on_death, job, proc)
            return None
        self._procs[proc.pid] = proc
        self._attached += not proc.spec.detach
        self._resources_spawned(proc)  # its cgroup; max_memory, max_cpu (zsup/core/resources.py)
        (job.committed if committed else job.processes)[proc.pid] = proc
        self._all_gone.clear()
        self._loop.add_reader(proc.pidfd, lambda _fd, p=proc: self._on_pidfd(p))
        # `spawn` goes out before the IO loop may read (and publish) the process's first line
        self._publish_proc(proc, "spawn", detach=proc.spec.detach, committed=committed,
                           instance=proc.instance)
        self._pipes.add(proc)
        self._life_spawned(job, proc)
        if not committed and job.last_error is not None:
            if job.last_error_exit:  # it failed by exiting at once: recovered once it stays up
                self._loop.call_later(START_GRACE, self._check_survived, job, proc)
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
        """A kept-alive process failed within START_GRACE of its start: like a spawn error,
        the job is `failing` with why (its exit and the last line it wrote, e.g. a server's
        "cannot listen"), until a process of it stays up that long."""
        how = f"signal {proc.term_signal}" if proc.term_signal else f"code {proc.exit_code}"
        error = f"exits at once ({how})"
        last = _last_line(proc)
        if last:
            error += f": {last}"
        error = self._check_failure(proc) or error  # stopped by zsup for a failed check: why
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
        job = self._jobs.get(proc.job)
        if job is None or not self._run_hook(job, proc, "before_stop", lambda _error: self._send_stop(proc)):
            self._send_stop(proc)

    def _send_stop(self, proc: Process) -> None:
        """The stop signal, and SIGKILL graceful_timeout later (after before_stop, if any)."""
        if proc.state != ProcessState.STOPPING:
            return  # it exited while its before_stop hook ran
        sig = proc.spec.stop_signal
        if proc.spec.detach:
            proc.signal(sig)
        else:
            proc.signal_group(sig)
        proc.stop_timer = self._loop.call_later(proc.graceful_timeout, self._kill_now, proc)

    def _kill_now(self, proc: Process) -> None:
        self._loop.assert_in_loop()
        if proc.state == ProcessState.STOPPING:
            log.warning("process %s (%s) ignored its stop signal for %ss: SIGKILL", proc.pid, proc.job,
                     proc.graceful_timeout)
            if proc.spec.detach:
                proc.signal(signal.SIGKILL)
            else:
                proc.signal_group(signal.SIGKILL)
                self.cgroups.kill(proc)  # its whole tree, setsid() included (zsup/core/cgroup.py)

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
            self._attached += not proc.spec.detach
            job.processes[proc.pid] = proc
            self._all_gone.clear()
            self._loop.add_reader(proc.pidfd, lambda _fd, p=proc: self._on_pidfd(p))
            log.info("job %s: found detached process %s (os pid %s) again", job.name, proc.pid, proc.os_pid)
            self._publish_proc(proc, "spawn", detach=True, committed=False, adopted=True)
            self._resources_spawned(proc)  # its cgroup and max_memory/max_cpu, as for a spawn

    def _on_death(self, job: Job, proc: Process) -> None:
        """A kept-alive process died on its own (or could not spawn): restart it."""
        self._loop.assert_in_loop()
        if not job.active or self.stopping or self._jobs.get(job.name) is not job:
            return
        if not self._policy_restarts(job, proc):
            self._finished(job, proc)
            return
        if job.flapping:
            if job.flapping.record_restart():
                self._flap(job)
                return
            self._manage(job)
            return
        if proc.os_pid and proc.uptime() < START_GRACE and (proc.exit_code or proc.term_signal) \
                and proc.stop_reason not in LIMIT_STOPS:  # a limit restart is no failure to start
            self._died_at_once(job, proc)
        if proc.os_pid and proc.uptime() >= BACKOFF_RESET:
            job.fast_deaths = 0
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

    # ------------------------------------------------------------------ lookups (supervisor thread)
    def _make_spec(self, config, session, env) -> JobSpec:
        if isinstance(config, JobSpec):
            spec = config
            if session and session != spec.session:
                spec = JobSpec.from_dict({**spec.to_dict(), "session": session})
        else:
            if not isinstance(config, dict):
                raise BadRequest("config: a job must be a JSON object")
            config = dict(config)
            if session:
                config.pop("session", None)
            spec = JobSpec.from_dict(config, session)
        if env:
            spec.env = {**spec.env, **check_env("env", env)}
        self._check_depends([spec])
        return spec

    def _job(self, name, session=None) -> Job:
        if isinstance(name, Job):
            return name
        sess, short = split_job_name(name, session)
        job = self._jobs.get(f"{sess}.{short}")
        if job is None:
            raise NotFound(f"no job {sess}.{short}")
        return job

    def _process(self, pid, alive: bool = True) -> Process:
        try:
            pid = int(pid)
        except (TypeError, ValueError):
            raise BadRequest(f"pid: expected an integer, got {pid!r}") from None
        proc = self._procs.get(pid)
        if proc is None and not alive:
            proc = self._exited.get(pid)
        if proc is None:
            raise NotFound(f"no process {pid}")
        return proc

    # ------------------------------------------------------------------ IO thread
    def _on_lines(self, proc: Process, stream: OutputStream, first: int, count: int, payload: bytes) -> None:
        self._io.assert_in_loop()
        s, n = proc.spec.session, proc.spec.name
        msg = {"pid": proc.pid, "os_pid": proc.os_pid, "job": proc.job, "label": stream.label,
               "seq": first, "lines": count}
        self.events.publish(io_topic(s, n, proc.pid, stream.label), msg, payload)
        if proc.spec.ready is not None and proc.spec.ready.kind == "log":
            self._log_ready(proc, payload)
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
