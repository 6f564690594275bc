"""Restart a process above its job's `max_memory` or `max_cpu` (issue 16; pm2's max_memory_restart).

One timer on the supervisor loop, armed only while some running process has one of those
limits, samples every such process once a second from /proc/PID/stat (two numbers, a few
microseconds each: no psutil, no thread per process):
- `max_memory`: the process's resident set (RSS) at a sample, above the limit.
- `max_cpu`: its user+system CPU time over the last `limit_window` seconds, as a percentage
  of one CPU (200 = two CPUs busy), judged once the process has been watched that long.
Only the process zsup started counts, not its children (a cgroup, zsup/core/cgroup.py, caps
a whole tree).

A process above a limit is stopped as a restart stops it (its stop signal, `graceful_timeout`,
then SIGKILL) with stop reason `max_memory` or `max_cpu`, which counts as a failure
(zsup/core/lifecycle.py's FAILED_STOPS): the job's restart policy, back-off and flapping
rule then restart it. Before that, `proc.<session>.<job>.limit` is published with
`{limit, value, max, window, reason}`, and the job keeps the last one as `last_limit` in
`status` and `info` (with `pid` and `time`).

It also puts each process in its cgroup when zsupd runs with cgroups (zsup/core/cgroup.py):
`_resources_spawned` after a spawn, `_resources_reaped` after an exit (what the process left
in its cgroup gets its stop signal, and SIGKILL `graceful_timeout` later, then the folder goes).

Thread rule: everything here runs in the supervisor loop's thread.
"""

from __future__ import annotations

import collections
import logging
import os
import time

from zsup.core.cgroup import Cgroups, setup
from zsup.core.process import Process
from zsup.core.states import ProcessState

log = logging.getLogger(__name__)

TICK = 1.0
LIMIT_STOPS = ("max_memory", "max_cpu")  # the stop reasons of a process above a limit
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def read_usage(os_pid: int) -> tuple[float, int] | None:
    """(CPU seconds, user + system; RSS bytes) of a live process; None once it is gone."""
    try:
        with open(f"/proc/{os_pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count from the last ")"
    rest = data[data.rindex(b")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK, int(rest[21]) * PAGE_SIZE


def show_size(n: float) -> str:
    for unit in ("", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}" if not unit else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


class ResourceWatch:
    """Mixed into the Manager (zsup/core/supervision.py): `_resources_spawned(proc)` after each
    spawn, `_resources_reaped(proc)` after each exit."""

    #: zsupd sets its own (zsup/core/cgroup.py's `setup`) before the manager starts
    cgroups: Cgroups = Cgroups(None, "zsupd did not set cgroups up")

    def use_cgroups(self, proc_dir: str = "/proc/self") -> dict:
        """Set zsupd's cgroups up (zsup/core/cgroup.py), before the manager starts: `info()`."""
        self.cgroups = setup(proc_dir)
        return self.cgroups.info()

    def _resources_spawned(self, proc: Process) -> None:
        error = self.cgroups.place(proc)
        if error is not None:
            log.warning("process %s (%s) runs outside its cgroup: %s", proc.pid, proc.job, error)
        if proc.spec.max_memory is None and proc.spec.max_cpu is None:
            return
        watched = self.__dict__.setdefault("_watched", {})
        watched[proc.pid] = (proc, collections.deque())
        if self.__dict__.get("_watch_timer") is None:
            self._watch_timer = self._loop.call_later(TICK, self._watch_tick)

    def _resources_reaped(self, proc: Process, final: bool = False) -> None:
        """What the process left in its cgroup (`setsid()` grandchildren included) gets the
        stop signal, then SIGKILL graceful_timeout later; the cgroup goes once empty."""
        if not self.cgroups.active or self.cgroups.release(proc):
            return
        if final:
            self._loop.call_later(0.1, self._resources_reaped, proc, True)  # until the kernel empties it
            return
        self.cgroups.signal(proc, proc.spec.stop_signal)
        self._loop.call_later(proc.graceful_timeout, self._resources_reaped, proc, True)

    def _watch_tick(self) -> None:
        self._loop.assert_in_loop()
        self._watch_timer = None
        watched: dict = self._watched
        now = time.monotonic()
        for pid, (proc, samples) in list(watched.items()):
            if proc.state != ProcessState.RUNNING:
                del watched[pid]  # stopping or gone: a limit no longer matters
                continue
            usage = read_usage(proc.os_pid)
            if usage is None:
                continue
            cpu, rss = usage
            spec = proc.spec
            if spec.max_memory is not None and rss > spec.max_memory:
                self._over_limit(proc, "max_memory", rss, spec.max_memory,
                                 f"rss {show_size(rss)} > max_memory {show_size(spec.max_memory)}")
                continue
            if spec.max_cpu is None:
                continue
            samples.append((now, cpu))
            # keep the newest sample at or before the window's start: the average spans it all
            while len(samples) > 2 and samples[1][0] <= now - spec.limit_window:
                samples.popleft()
            start, start_cpu = samples[0]
            if now - start >= spec.limit_window * 0.99:
                percent = (cpu - start_cpu) / (now - start) * 100
                if percent > spec.max_cpu:
                    self._over_limit(proc, "max_cpu", round(percent, 1), spec.max_cpu,
                                     f"cpu {percent:.0f}% over {spec.limit_window:g}s > max_cpu {spec.max_cpu:g}%")
        if watched:
            self._watch_timer = self._loop.call_later(TICK, self._watch_tick)

    def _over_limit(self, proc: Process, limit: str, value, maximum, reason: str) -> None:
        self._watched.pop(proc.pid, None)
        log.info("process %s (%s): %s: restarted", proc.pid, proc.job, reason)
        record = {"limit": limit, "value": value, "max": maximum, "window": proc.spec.limit_window,
                  "reason": reason}
        self._publish_proc(proc, "limit", **record)
        job = self._jobs.get(proc.job)
        if job is not None:
            job.last_limit = {**record, "pid": proc.pid, "time": time.time()}
        self._stop_proc(proc, limit)
