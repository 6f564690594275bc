#!/usr/bin/env python3
"""Scenario 3, output: a child writes 1,000,000 short lines (`cat` of a file made by
`seq 1000000`, 6.9 MB); time until every line is captured.

- zsup: lines counted by a bus Subscriber on `io.` topics (bytes.count(b"\\n") of each data
  frame) AND in the job's log file (logs are on by default): done when both hold 1,000,000.
  The log is in zsup's default text format (timestamp, pid:seq, line); log_max_bytes = 0 so
  that no rotation (and gzip) happens during the run (the default rotates at 10 MB).
  The job is loaded with numprocesses = 0 and run once with `commit`.
- supervisord: its stdout_logfile (stdout_logfile_maxbytes = 0, no rotation; startsecs = 0
  and autorestart = false, so a one-shot child is not a failed start to retry).
- zsup with logs off (`log = false`): the same run, done when the bus subscriber has all
  1,000,000 lines (`nolog_lines_per_s`): the cost of capture and publishing alone.
- circus: a FileStream (respawn = False).
Machine limit: the same `cat` piped to `wc -l`. Reported as lines/s (1e6 / seconds).
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

LINES = 1_000_000
_DATA = None


def data_file() -> str:
    global _DATA
    if _DATA is None:
        fd, path = tempfile.mkstemp(prefix="bench-seq-", suffix=".txt")
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(b"%d\n" % i for i in range(1, LINES + 1)))
        _DATA = path
        import atexit

        atexit.register(os.unlink, path)
    return _DATA


class LineCounter:
    """Counts the lines of a growing file, reading only what was added."""

    def __init__(self, path: str):
        self.path = path
        self.f = None
        self.lines = 0

    def poll(self) -> int:
        if self.f is None:
            try:
                self.f = open(self.path, "rb")
            except FileNotFoundError:
                return 0
        while True:
            chunk = self.f.read(1 << 20)
            if not chunk:
                return self.lines
            self.lines += chunk.count(b"\n")

    def close(self):
        if self.f:
            self.f.close()


def run_zsup(log: bool = True) -> dict:
    d = bl.ZsupDaemon([], settings={"log_max_bytes": 0} if log else {"log": "false"})
    d.start()
    d.wait_ready()
    from zsup.bus.client import Subscriber

    sub = Subscriber(d.pub, patterns=["io."])
    # Slow joiner: be sure the subscription reached zsupd before the measured child starts.
    d.call("load", config={"name": "warm", "cmd": "/bin/sh",
                           "args": ["-c", "while :; do echo w; sleep 0.02; done"]})
    bl.wait_for(lambda: sub.recv(timeout=0.1) is not None, 10, 0, "the subscription")
    d.call("unload", name="warm")
    d.call("load", config={"name": "out", "cmd": bl.CAT, "args": [data_file()], "numprocesses": 0})
    log_path = d.call("log_paths", name="out", label="stdout")["paths"]["stdout"][0]
    counter = LineCounter(log_path)
    bus_lines = 0
    t_bus = t_log = None
    if not log:
        t_log = 0.0
    t0 = time.monotonic()
    pid = d.call("commit", name="out")["pid"]
    deadline = t0 + 120
    while t_bus is None or t_log is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bus {bus_lines}, log {counter.lines} of {LINES} lines after 120 s")
        if t_bus is None:
            ev = sub.recv(timeout=0.002)
            if ev is not None and ev.data and ev.msg.get("pid") == pid and ev.msg.get("label") == "stdout":
                bus_lines += ev.data.count(b"\n")
                if bus_lines >= LINES:
                    t_bus = time.monotonic()
        else:
            time.sleep(0.002)
        if t_log is None and counter.poll() >= LINES:
            t_log = time.monotonic()
    sub.close()
    counter.close()
    if not log:
        return {"seconds": t_bus - t0, "lines_per_s": LINES / (t_bus - t0), "bus_lines": bus_lines}
    total = max(t_bus, t_log) - t0
    return {"seconds": total, "lines_per_s": LINES / total, "bus_s": t_bus - t0, "log_s": t_log - t0,
            "bus_lines": bus_lines, "log_lines": counter.lines}


def run_file_daemon(kind: str) -> dict:
    work = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    log_path = os.path.join(work, "out.log")
    d = bl.make_daemon(kind, [bl.Job("out", [bl.CAT, data_file()], 1, autostart=False, restart=False,
                                     log_file=log_path)], workdir=work)
    d.start()
    d.wait_ready()
    counter = LineCounter(log_path)
    t0 = time.monotonic()
    d.start_job("out")
    deadline = t0 + 120
    while counter.poll() < LINES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{counter.lines} of {LINES} lines after 120 s")
        time.sleep(0.002)
    t1 = time.monotonic()
    counter.close()
    d.stop()
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": t1 - t0, "lines_per_s": LINES / (t1 - t0), "log_lines": counter.lines}


def run_one(kind: str, tuned: bool) -> dict:
    if kind != "zsup":
        return run_file_daemon(kind)
    result = run_zsup()
    for d in list(bl._daemons):
        d.stop()
    result["nolog_lines_per_s"] = run_zsup(log=False)["lines_per_s"]
    return result


def limit() -> dict:
    t0 = time.monotonic()
    out = subprocess.run(f"{bl.CAT} {data_file()} | wc -l", shell=True, capture_output=True, check=True)
    t1 = time.monotonic()
    assert int(out.stdout) == LINES, out.stdout
    return {"seconds": t1 - t0, "lines_per_s": LINES / (t1 - t0), "nolog_lines_per_s": LINES / (t1 - t0)}


if __name__ == "__main__":
    bl.scenario_main("output", run_one, limit)
