"""Process statistics with psutil, sampled only while someone listens.

psutil's cpu_percent needs two readings of the same Process object, so objects are cached
per (os pid, start time) and reused between samples. The sampler thread exists only while at
least one pattern is watched: an idle zsupd reads nothing from /proc.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

from zsup.bus.topics import stats_topic, topic_matches

log = logging.getLogger(__name__)


class PsCache:
    def __init__(self):
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self._lock = threading.Lock()

    def get(self, os_pid: int, started: float) -> psutil.Process:
        key = (os_pid, started)
        with self._lock:
            proc = self._procs.get(key)
            if proc is None:
                import psutil  # at the first sample, not at zsupd's start

                proc = psutil.Process(os_pid)
                proc.cpu_percent(None)  # first call primes the counter
                self._procs[key] = proc
            return proc

    def prune(self, alive: set[tuple[int, float]]) -> None:
        with self._lock:
            for key in list(self._procs):
                if key not in alive:
                    del self._procs[key]


def one_stats(proc: psutil.Process) -> dict:
    with proc.oneshot():
        mem = proc.memory_info()
        cpu_times = proc.cpu_times()
        return {
            "os_pid": proc.pid,
            "cpu": proc.cpu_percent(None),
            "mem": round(proc.memory_percent(), 3),
            "rss": mem.rss,
            "vms": mem.vms,
            "mem_info1": mem.rss,
            "mem_info2": mem.vms,
            "ctime": round(cpu_times.user + cpu_times.system, 3),
            "username": proc.username(),
            "nice": proc.nice(),
            "cmdline": " ".join(proc.cmdline()),
        }


def process_tree_stats(cache: PsCache, process) -> dict:
    """Stats of one zsup process and of each of its children (recursively)."""
    import psutil

    try:
        ps = cache.get(process.os_pid, process.started)
        out = one_stats(ps)
        children = []
        for child in ps.children(recursive=True):
            try:
                children.append(one_stats(cache.get(child.pid, child.create_time())))
            except psutil.Error:
                continue
        out["children"] = children
    except psutil.Error:
        out = {"os_pid": process.os_pid, "cpu": 0.0, "mem": 0.0, "rss": 0, "vms": 0, "ctime": 0.0,
               "username": None, "nice": None, "cmdline": "", "children": [], "gone": True}
    out["pid"] = process.pid
    out["job"] = process.job
    return out


class StatsSampler:
    def __init__(self, manager, interval: float = 1.0):
        self.manager = manager
        self.interval = interval
        self.cache = PsCache()
        self._patterns: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watch(self, pattern: str) -> None:
        with self._lock:
            self._patterns[pattern] = self._patterns.get(pattern, 0) + 1
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="zsup-stats", daemon=True)
                self._thread.start()

    def unwatch(self, pattern: str) -> None:
        with self._lock:
            if pattern in self._patterns:
                self._patterns[pattern] -= 1
                if self._patterns[pattern] <= 0:
                    del self._patterns[pattern]

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def job_stats(self, job: str, processes: list) -> dict:
        stats = [process_tree_stats(self.cache, p) for p in processes]
        total = {"cpu": 0.0, "mem": 0.0, "rss": 0, "vms": 0}
        for st in stats:
            for entry in [st] + st["children"]:
                for key in total:
                    total[key] += entry.get(key) or 0
        total["cpu"] = round(total["cpu"], 2)
        total["mem"] = round(total["mem"], 3)
        return {"job": job, "processes": stats, **total}

    def _run(self) -> None:
        while not self._stopped:
            with self._lock:
                patterns = list(self._patterns)
                if not patterns:
                    self._thread = None
                    return
            try:
                self._sample(patterns)
            except Exception:
                log.exception("stats sampling failed")
            self._wake.wait(self.interval)

    def _sample(self, patterns: list[str]) -> None:
        if not self.manager.started:
            return
        procs = self.manager.snapshot()
        alive = set()
        for proc in procs:
            s, n = proc.spec.session, proc.spec.name
            topic = stats_topic(s, n, proc.pid)
            alive.add((proc.os_pid, proc.started))
            # bus patterns are raw ZeroMQ prefixes: a plain prefix match samples all they get
            if not any(topic.startswith(p) or topic_matches(p, topic) for p in patterns):
                continue
            stats = process_tree_stats(self.cache, proc)
            self.manager.events.publish(topic, {"event": "stats", "name": n, "session": s, **stats})
        # children's cache entries are keyed by their own start time; keep them while parents live
        if len(procs) == 0:
            self.cache.prune(set())
