"""The Manager: jobs, their processes, and every operation of gaffer's manager API.

All supervisor state is owned by one thread, the supervisor loop: public methods run their
body there (`@supervised`) and hand back the result, so there is no lock to forget and every
spawn happens in one long-lived thread (the death signal of a child follows the thread that
forked it). The loop wakes on a child's pidfd the moment it exits, and on timers (graceful
stop, back-off, flapping retries); nothing polls. Output is read by a second loop thread
(PipeReader) and published from there.

This module holds the manager's life (start, stop) and its commands and queries; what they
set in motion (spawning, stopping, reaping, restarting, flapping) is in supervision.py, and
the states a job or process goes through, with their allowed changes, in states.py.

Thread rule: every method here may be called from any thread (the `@supervised` ones hop to
the supervisor thread and wait), except the `_`-prefixed ones, which run in the supervisor
thread only; those that change state check it with `Loop.assert_in_loop()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import logging
import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Iterable, Iterator

from zsup.bus.parse import parse_scale, parse_signal
from zsup.core.checks import CheckPool
from zsup.core.events import EventEmitter
from zsup.core.job import Job, life_info
from zsup.core.jobspec import MAX_SECONDS, check_env, to_number
from zsup.core.loop import Loop
from zsup.core.output import OutputStream
from zsup.core.pipes import PipeReader
from zsup.core.process import Process
from zsup.core.states import ProcessState
from zsup.core.stats import StatsSampler, process_tree_stats
from zsup.core.supervision import Supervision
from zsup.errors import BadRequest, Conflict, NotFound

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def job_order(fullname: str) -> tuple[str, str]:
    """The sort key of every job listing: (session, name), not the dotted string, whose
    order differs when a session name holds a character below "." (`a-b.x` vs `a.y`)."""
    session, _, name = fullname.partition(".")
    return session, name


def supervised(method):
    """Run the method in the supervisor loop's thread and return its result."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return self._loop.call_and_wait(functools.partial(method, self, *args, **kwargs), timeout=60)

    return wrapper


class Manager(Supervision):
    """Jobs and their processes, behind gaffer's manager API. Public methods: any thread."""

    #: The cap on the sum of every loaded job's wanted count (`numprocesses`), checked by
    #: load, update and scale; zsupd sets it from `[zsup] max_processes_total`.
    max_processes_total: int = 10_000

    def run_supervised(self, fn: Callable[[], Any]) -> Any:
        """Run `fn()` on the supervisor thread as one call and return its result (any thread).

        Manager methods called inside `fn` run inline, so a command that changes state and
        reads the result back costs one hand-over, not two."""
        return self._loop.call_and_wait(fn, timeout=60)

    def __init__(self, events: EventEmitter | None = None, log_writer=None, subreaper: bool = False,
                 stats_interval: float = 1.0, pids: Iterator[int] | None = None):
        self.events = events or EventEmitter()
        # anything with write(job, label, spec, pid, os_pid, seq, data, lines): `lines` is the
        # batch's line count, already counted on the IO thread
        self.log_writer = log_writer
        self.subreaper = subreaper
        self._loop = Loop("zsup-supervisor")
        self._io = Loop("zsup-io")
        self._pipes = PipeReader(self._io, self._on_lines, batch_in=self._loop)
        self._jobs: dict[str, Job] = {}
        self._procs: dict[int, Process] = {}  # every live process, kept-alive or committed
        self._attached = 0  # those of _procs not detached: a stop of all waits for them
        self._exited: OrderedDict[int, Process] = OrderedDict()
        # drained exits on their way back from the IO thread (zsup/core/exits.py)
        self._drained: deque[Process] = deque()
        self._drained_called = False
        # zsup pids, never reused: zsupd passes one that survives its restarts (daemon/store.py)
        self._pid_counter = pids if pids is not None else itertools.count(1)
        self._ignored_os_pids: set[int] = set()
        self._adoptable: dict[str, list[dict]] = {}  # job -> detached processes to find again
        self._lingering: dict[int, Process] = {}  # pgid -> its exited leader, while members live on
        #: Called (supervisor thread) with a pgid once a group outliving its leader is empty.
        self.group_listeners: list[Callable[[int], None]] = []
        self._all_gone = threading.Event()
        self._all_gone.set()
        self.stats_sampler = StatsSampler(self, stats_interval)
        self._checks, self._waiting = CheckPool(), set()  # lifecycle.py; jobs waiting (depends.py)
        self.started = False
        self.stopping = False

    # ------------------------------------------------------------------ life of the manager
    def start(self) -> None:
        if self.subreaper:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                log.warning("could not become a child subreaper: errno %s", ctypes.get_errno())
        self._io.start()
        self._loop.start()
        if self.subreaper:
            self._loop.call_soon(self._reap_orphans_every, 1.0)
        self.started = True

    def stop(self, timeout: float | None = None) -> None:
        """Stop every job gracefully (stop signal, graceful_timeout, SIGKILL) and wait."""
        if not self.started:
            return
        self.stopping = True
        longest = self._loop.call_and_wait(self._stop_everything, timeout=60)
        deadline = (timeout if timeout is not None else longest + 5.0)
        self._all_gone.wait(deadline)
        self.stats_sampler.stop()
        if self.subreaper:
            self._loop.call_and_wait(self._kill_adopted, timeout=10)
        self._loop.call_and_wait(self._life_shutdown, timeout=10)
        self._loop.stop()
        self._io.stop()
        self.started = False

    # ------------------------------------------------------------------ job management
    @supervised
    def load(self, config, session: str | None = None, env: dict | None = None, start: bool = True) -> dict:
        spec = self._make_spec(config, session, env)
        if spec.fullname in self._jobs:
            raise Conflict(f"job {spec.fullname} is already loaded")
        self._check_total(spec.numprocesses)
        job = Job(spec)
        self._add_jobs([job])
        with self._undo_load([job]):
            self._publish_job(job, "create")
            self._adopt_detached(job)
            if start:
                self._start_job(job)
        return job.info()

    @supervised
    def load_many(self, configs: Iterable, session: str | None = None, start: bool = True) -> list[str]:
        """Load several jobs at once: all are checked before any is loaded, and they start in
        priority order (0 first)."""
        specs = [self._make_spec(c, session, None) for c in configs]
        self._check_depends(specs, strict=True)
        names = [s.fullname for s in specs]
        dupes = {n for n in names if names.count(n) > 1} | {n for n in names if n in self._jobs}
        if dupes:
            raise Conflict(f"job {sorted(dupes)[0]} is already loaded")
        self._check_total(sum(s.numprocesses for s in specs))
        jobs = [Job(spec) for spec in specs]
        self._add_jobs(jobs)
        with self._undo_load(jobs):
            for job in jobs:
                self._publish_job(job, "create")
                self._adopt_detached(job)
            if start:
                for job in sorted(jobs, key=lambda j: j.spec.priority):
                    self._start_job(job)
        return names

    def _add_jobs(self, jobs: list[Job]) -> None:
        """Add jobs, keeping `_jobs` in listing order (session, name): every listing built by
        walking it comes out sorted, and a load (rare) pays for it, not each query."""
        self._jobs.update((job.name, job) for job in jobs)
        ordered = sorted(self._jobs.items(), key=lambda item: job_order(item[0]))
        self._jobs.clear()
        self._jobs.update(ordered)

    @contextlib.contextmanager
    def _undo_load(self, jobs: list[Job]):
        """A load is all or nothing: if starting fails half-way, the jobs just added go."""
        try:
            yield
        except BaseException:
            for job in jobs:
                if self._jobs.get(job.name) is job:
                    self._stop_job(job, "unload", publish=False)
                    del self._jobs[job.name]
                    self._publish_job(job, "delete")
            raise

    def _check_total(self, adding: int, replacing: Job | None = None) -> None:
        """BadRequest if `adding` more wanted processes would pass max_processes_total."""
        total = sum(j.numprocesses for j in self._jobs.values() if j is not replacing) + adding
        if total > self.max_processes_total:
            raise BadRequest(f"numprocesses: {total} processes in all would be above max_processes_total "
                             f"({self.max_processes_total})")

    @supervised
    def unload(self, name: str, session: str | None = None) -> dict:
        job = self._job(name, session)
        self._stop_job(job, "unload")
        for proc in list(job.committed.values()):  # one-off processes go with their job
            self._stop_proc(proc, "unload")
        del self._jobs[job.name]
        self._publish_job(job, "delete")
        return {"ok": True}

    @supervised
    def update(self, config, session: str | None = None, env: dict | None = None, start: bool | None = None) -> dict:
        """Replace a job's config; its processes are replaced by new ones."""
        spec = self._make_spec(config, session, env)
        job = self._job(spec.fullname)
        self._check_total(spec.numprocesses, replacing=job)
        was_active = job.active
        if spec.restart_mode == "rolling" and start is not False and self._roll_update(job, spec):
            return job.info()
        self._stop_job(job, "update", publish=False)
        job.spec = spec
        job.numprocesses = spec.numprocesses
        job.flapping = Job(spec).flapping
        job.fast_deaths = 0
        self._publish_job(job, "update")
        if was_active if start is None else start:
            self._start_job(job)
        return job.info()

    @supervised
    def reload(self, name: str, session: str | None = None) -> dict:
        """Restart every process of a job; the process count goes back to the config's."""
        job = self._job(name, session)
        job.numprocesses = job.spec.numprocesses
        self._restart_job(job)
        return job.info()

    @supervised
    def restart_job(self, name: str, session: str | None = None) -> dict:
        """Replace every process of a job, count kept (gaffer's stopall), as its restart_mode says."""
        job = self._job(name, session)
        self._restart_job(job)
        return job.info()

    @supervised
    def rolling_restart(self, name: str, session: str | None = None, max_surge: int | None = None) -> dict:
        """A rolling restart (docs/lifecycle.md); answers at once, `info` follows the roll."""
        job = self._job(name, session)
        self._roll_restart(job, max_surge)
        return job.info()

    @supervised
    def restart(self) -> list[str]:
        """Restart every active job, in priority order."""
        jobs = sorted((j for j in self._jobs.values() if j.active), key=lambda j: j.spec.priority)
        for job in jobs:
            self._restart_job(job)
        return [j.name for j in jobs]

    @supervised
    def start_job(self, name: str, session: str | None = None) -> bytes:
        """Start the job; its info, as `info_json` has it (a job of hundreds answers from the
        cached fragments rather than hundreds of dicts)."""
        job = self._job(name, session)
        self._start_job(job)
        return job.info_json()

    @supervised
    def stop_job(self, name: str, session: str | None = None) -> bytes:
        """Stop the job; its info, as `info_json` has it."""
        job = self._job(name, session)
        self._stop_job(job, "stop")
        return job.info_json()

    @supervised
    def start_all(self) -> list[str]:
        jobs = sorted(self._jobs.values(), key=lambda j: j.spec.priority)
        for job in jobs:
            self._start_job(job)
        return [j.name for j in jobs]

    @supervised
    def stop_all(self) -> list[str]:
        for job in self._jobs.values():
            self._stop_job(job, "stop")
        return list(self._jobs)

    @supervised
    def scale(self, name: str, n, session: str | None = None) -> dict:
        job = self._job(name, session)
        target = parse_scale(job.numprocesses, n)
        if target > job.spec.max_processes:
            raise BadRequest(f"n: {target} processes is above the job's max_processes ({job.spec.max_processes})")
        if target > job.numprocesses:
            self._check_total(target, replacing=job)
        changed = target != job.numprocesses
        job.numprocesses = target
        self._manage(job)
        if changed:  # gaffer's manager announces a scale as its job's `update`
            self._publish_job(job, "update", numprocesses=target)
        return {"job": job.name, "numprocesses": job.numprocesses}

    @supervised
    def commit(self, name: str, graceful_timeout: float | None = None, env: dict | None = None,
               session: str | None = None) -> int:
        """Start one process of the job that is not restarted and not counted by scale."""
        job = self._job(name, session)
        env = check_env("env", env) if env is not None else None
        if graceful_timeout is not None:
            graceful_timeout = to_number("graceful_timeout", graceful_timeout, float, 0, maximum=MAX_SECONDS)
        if len(self._procs) >= self.max_processes_total:  # one-off processes are not counted by scale
            raise BadRequest(f"commit: {len(self._procs)} processes run, max_processes_total is "
                             f"{self.max_processes_total}")
        proc = self._spawn(job, committed=True, env=env, graceful_timeout=graceful_timeout)
        return proc.pid

    # ------------------------------------------------------------------ queries
    @supervised
    def jobs(self, session: str | None = None) -> list[str]:
        return [n for n, j in self._jobs.items() if session is None or j.spec.session == session]

    @supervised
    def sessions(self) -> list[str]:
        return sorted({j.spec.session for j in self._jobs.values()})

    @supervised
    def get(self, name: str, session: str | None = None) -> dict:
        return self._job(name, session).spec.to_dict()

    @supervised
    def info(self, name: str, session: str | None = None) -> dict:
        return self._job(name, session).info()

    @supervised
    def saved(self, name: str, session: str | None = None) -> dict:
        """What the store keeps of a job across restarts of zsupd: config, count, active."""
        job = self._job(name, session)
        return {"config": job.spec.to_dict(), "numprocesses": job.numprocesses, "active": job.active}

    @supervised
    def info_json(self, name: str, session: str | None = None) -> bytes:
        """`info` already encoded as JSON (what the bus replies): per process, only what
        changed since the last call is encoded again (Job.info_json)."""
        return self._job(name, session).info_json()

    @supervised
    def status(self) -> list[dict]:
        """One summary per job: what a status table shows."""
        out = []
        for job in self._jobs.values():
            running = job.running()
            out.append({
                "job": job.name,
                "state": job.state.value,
                "active": job.active,
                "numprocesses": job.numprocesses,
                "running": len(running),
                "pids": [p.pid for p in running],
                "os_pids": [p.os_pid for p in running],
                "started": min((p.started for p in running), default=None),
                "cmd": job.spec.cmd,
                "last_error": job.last_error,
                **job.lifecycle(running),
            })
        return out

    @supervised
    def pids(self, name: str | None = None, session: str | None = None) -> list[int]:
        if name is None:
            if session is None:
                return sorted(self._procs)
            return sorted(p.pid for p in self._procs.values() if p.spec.session == session)
        job = self._job(name, session)
        return sorted(p.pid for p in self._live_procs(job))

    @supervised
    def get_process(self, pid) -> dict:
        return life_info(self._process(pid, alive=False))

    def stats(self, name: str, session: str | None = None) -> dict:
        """psutil figures for every process of a job, and their sums. Sampled outside the
        supervisor thread so psutil's /proc reads never delay supervision."""
        job_name, procs = self._loop.call_and_wait(self._job_procs, name, session, timeout=60)
        return self.stats_sampler.job_stats(job_name, procs)

    def process_stats(self, pid) -> dict:
        proc = self._loop.call_and_wait(self._process, pid, timeout=60)
        return process_tree_stats(self.stats_sampler.cache, proc)

    def _job_procs(self, name, session):
        job = self._job(name, session)
        return job.name, self._live_procs(job)

    @staticmethod
    def _live_procs(job) -> list:
        return [p for p in (*job.processes.values(), *job.committed.values()) if p.state != ProcessState.EXITED]

    # ------------------------------------------------------------------ processes
    @supervised
    def stop_process(self, pid) -> dict:
        """Stop one process; a kept-alive job replaces it at once (as gaffer does)."""
        proc = self._process(pid)
        self._stop_proc(proc, "stop_process")
        job = self._jobs.get(proc.job)
        if job is not None and not proc.committed:
            self._manage(job)
        return {"pid": proc.pid, "stopping": True}

    @supervised
    def kill(self, pid, sig) -> dict:
        proc = self._process(pid)
        signum = parse_signal(sig)
        proc.signal(signum)
        return {"pid": proc.pid, "signal": signum}

    @supervised
    def killall(self, name: str, sig, session: str | None = None) -> dict:
        job = self._job(name, session)
        signum = parse_signal(sig)
        pids = []
        for proc in list(job.processes.values()) + list(job.committed.values()):
            if proc.signal(signum):
                pids.append(proc.pid)
        return {"job": job.name, "signal": signum, "pids": pids}

    @supervised
    def send(self, pid, data, label: str | None = None) -> dict:
        """Write data, as given, to the process's stdin."""
        proc = self._process(pid, alive=False)
        if proc.state == ProcessState.EXITED:
            raise Conflict(f"process {proc.pid} has exited: its stdin is closed")
        if not proc.spec.redirect_input:
            raise Conflict(f"process {proc.pid} ({proc.job}) has no stdin to write to (redirect_input is off)")
        if proc.stdin_fd < 0:
            raise Conflict(f"process {proc.pid} ({proc.job}) closed its stdin")
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray)):
            raise BadRequest("data: expected a string")
        self._pipes.write(proc, bytes(data))
        return {"pid": proc.pid, "bytes": len(data)}

    def writelines(self, pid, lines: list) -> dict:
        if not isinstance(lines, list):
            raise BadRequest("lines: expected a list of strings")
        data = "".join(l if str(l).endswith("\n") else f"{l}\n" for l in map(str, lines))
        return self.send(pid, data)

    @supervised
    def read_output(self, pid, label: str | None = None, since: int = 0, limit: int | None = None) -> dict:
        proc = self._process(pid, alive=False)
        stream = self._stream(proc, label)
        try:
            since = int(since or 0)
            limit = None if limit is None else int(limit)
        except (TypeError, ValueError):
            raise BadRequest("since and limit: expected integers") from None
        lines = stream.read(since, limit)
        return {
            "pid": proc.pid,
            "label": stream.label,
            "last_seq": stream.last_seq,
            "state": proc.state.value,
            "lines": [{"seq": s, "data": d.decode("utf-8", "replace")} for s, d in lines],
        }

    def _stream(self, proc: Process, label: str | None) -> OutputStream:
        if not proc.streams:
            raise NotFound(f"process {proc.pid} has no captured output")
        if label in (None, ""):
            return next(iter(proc.streams.values()))
        if label not in proc.streams:
            raise NotFound(f"process {proc.pid} has no stream {label!r} (has {', '.join(proc.streams)})")
        return proc.streams[label]

    # ------------------------------------------------------------------ stats interest
    def monitor(self, pattern: str = "stats") -> None:
        self.stats_sampler.watch(pattern)

    def unmonitor(self, pattern: str = "stats") -> None:
        self.stats_sampler.unwatch(pattern)

    def snapshot(self) -> list[Process]:  # for the stats sampler (a copy made in the supervisor thread)
        return self._loop.call_and_wait(lambda: list(self._procs.values()), timeout=60)

    @supervised
    def expect_detached(self, records: list[dict]) -> None:
        """Detached processes a previous zsupd left running (`{job, os_pid, started}`, checked
        by the caller to be the same processes): the job of that name, when it is loaded,
        lists them again instead of starting new ones."""
        for record in records:
            self._adoptable.setdefault(record["job"], []).append(record)

    def ignore_child(self, os_pid: int) -> None:
        """A child of this process that zsup did not spawn (never reaped as an orphan)."""
        self._ignored_os_pids.add(os_pid)
