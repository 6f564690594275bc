"""zsupd's counters, and the snapshot the `metrics` bus command answers (docs/metrics.md).

The gateway renders the snapshot in Prometheus's text format (zsup.http.metrics); zsupd
itself knows nothing of Prometheus. Thread rules:
  - `on_event` is an EventEmitter listener on `proc.` and `job.` topics: those are published
    on the supervisor thread only, and `snapshot` reads the per-job counters inside a
    supervised call, so they need no lock;
  - `count_request` runs on the bus's control thread, as does `snapshot` (the `metrics`
    command): no lock either.
Every table is bounded: per-job counters go when the job is deleted, exit codes are at most
256 numbers and the signal names per job, and unknown command names share one label.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

from zsup import __version__
from zsup.bus.schema import COMMANDS

UNKNOWN_COMMAND = "(unknown)"


def _exit_code(msg: dict) -> str:
    """The `code` label of an exit: the exit status, or the name of the killing signal."""
    if msg.get("term_signal"):
        try:
            return signal.Signals(msg["term_signal"]).name
        except ValueError:
            return f"signal {msg['term_signal']}"
    code = msg.get("exit_code")
    return "unknown" if code is None else str(code)


class JobCounters:
    __slots__ = ("restarts", "spawn_failures", "flaps", "exits", "last_exit", "gave_up")

    def __init__(self) -> None:
        self.restarts = 0
        self.spawn_failures = 0
        self.flaps = 0
        self.exits: Counter[str] = Counter()
        self.last_exit: int | None = None
        self.gave_up = False  # the flapping rule stopped the job (until it is started again)


class DaemonMetrics:
    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.started = time.time()
        self.jobs: dict[str, JobCounters] = {}
        self._committed: set[int] = set()  # zsup pids of live one-shot processes
        self.requests: Counter[tuple[str, str]] = Counter()

    # -- counting
    def on_event(self, topic: str, msg: dict, data: bytes | None) -> None:
        """EventEmitter listener (supervisor thread)."""
        job, event = msg.get("job"), msg.get("event")
        if not job:
            return
        if topic.startswith("job.") and event == "delete":
            self.jobs.pop(job, None)
            return
        counters = self.jobs.get(job)
        if counters is None:
            counters = self.jobs[job] = JobCounters()
        if topic.startswith("job."):
            if event == "start":
                counters.gave_up = False
            return
        if event == "spawn":
            if msg.get("committed"):
                self._committed.add(msg["pid"])
        elif event == "spawn_error":
            counters.spawn_failures += 1
        elif event == "flap":
            counters.flaps += 1
            counters.gave_up = bool(msg.get("gave_up"))
        elif event == "exit":
            counters.exits[_exit_code(msg)] += 1
            counters.last_exit = msg.get("exit_code")
            # A kept-alive process that died on its own is replaced (after the back-off or
            # the flapping rule's wait): that is a restart. Stops zsup asked for are not.
            if not msg.get("reason") and msg.get("pid") not in self._committed:
                counters.restarts += 1
        elif event == "reap":
            self._committed.discard(msg.get("pid"))

    def count_request(self, cmd: str, outcome: str) -> None:
        """One answered bus request (control thread); `outcome` is "ok" or an error code."""
        self.requests[(cmd if cmd in COMMANDS else UNKNOWN_COMMAND, outcome)] += 1

    # -- the snapshot
    def snapshot(self) -> dict[str, Any]:
        """What the `metrics` command answers (control thread). Job state and counters are
        read in one supervised call; the processes' /proc reads happen after it, here."""
        d = self.daemon
        asked = time.monotonic()

        def read():
            lag = time.monotonic() - asked
            rows = []
            for row in d.manager.status():
                c = self.jobs.get(row["job"]) or JobCounters()
                rows.append({
                    "job": row["job"], "state": row["state"], "active": row["active"],
                    "wanted": row["numprocesses"] if row["active"] else 0, "running": row["running"],
                    "ready": row.get("ready", row["running"]),
                    "flapping": row["state"] == "flapping" or (row["state"] == "failed" and c.gave_up),
                    "restarts": c.restarts, "spawn_failures": c.spawn_failures, "flaps": c.flaps,
                    "exits": dict(c.exits), "last_exit_code": c.last_exit,
                    "os_pids": list(zip(row["pids"], row["os_pids"])),
                })
            for gone in set(self.jobs) - {row["job"] for row in rows}:
                del self.jobs[gone]  # exits that came after the job's delete
            return lag, rows

        lag, rows = d.supervise(read)
        processes = []
        for row in rows:
            for pid, os_pid in row.pop("os_pids"):
                proc = _process(os_pid)
                if proc is not None:
                    processes.append({"job": row["job"], "pid": pid, "os_pid": os_pid, **proc})
        logs = dict(d.log_writer.stats())
        target = getattr(d.job_logs, "target", None)
        if target is not None:  # journal or syslog: counted as the files are
            sent = target.stats()
            for key, theirs in (("bytes_written", "bytes_sent"), ("lines_written", "lines_sent"),
                                ("write_errors", "errors"), ("lines_dropped", "dropped")):
                logs[key] = logs.get(key, 0) + sent[theirs]
        bus = d.bus
        return {
            "daemon": {"version": __version__, "pid": os.getpid(), "start_time": self.started,
                       "loop_lag": {"supervisor": lag}, **(_process(os.getpid()) or {})},
            "jobs": rows,
            "processes": processes,
            "requests": [{"cmd": cmd, "outcome": outcome, "count": n}
                         for (cmd, outcome), n in sorted(self.requests.items())],
            "events": {"published": getattr(bus, "events_sent", 0),
                       "dropped": {"bus": getattr(bus, "events_dropped", 0),
                                   "webhooks": getattr(d.webhooks, "dropped", 0)}},
            "logs": {key: logs.get(key, 0) for key in
                     ("bytes_written", "write_errors", "lines_written", "lines_dropped")},
        }


def _process(os_pid: int) -> dict | None:
    """CPU seconds, RSS, open fds and start time of one OS process; None once it is gone."""
    import psutil  # when metrics are asked for, not at zsupd's start

    try:
        p = psutil.Process(os_pid)
        with p.oneshot():
            cpu = p.cpu_times()
            return {"cpu_seconds": cpu.user + cpu.system, "rss": p.memory_info().rss,
                    "fds": p.num_fds(), "start_time": p.create_time()}
    except psutil.Error:
        return None
