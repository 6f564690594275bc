#!/usr/bin/env python3
"""Scenario 5, footprint: the daemon's RSS with 200 `sleep` children, and the CPU time it uses
over 10 idle seconds (5 in quick mode), from /proc (psutil), once the 200 run and 1 s passed.
CPU is given in % of one core. No client is connected during the idle time.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

N = 200
IDLE = 5.0 if bl.QUICK else 10.0


def run_one(kind: str, tuned: bool) -> dict:
    import psutil

    d = bl.make_daemon(kind, [bl.Job("job", [bl.SLEEP, "1000"], N)])
    d.start()
    bl.ChildWatch(d.pid).wait_count(N, 120)
    d.wait_ready()
    d.close_clients()
    time.sleep(1.0)
    proc = psutil.Process(d.pid)
    c0 = bl.cpu_seconds(d.pid)
    t0 = time.monotonic()
    time.sleep(IDLE)
    c1 = bl.cpu_seconds(d.pid)
    t1 = time.monotonic()
    return {"rss_mb": proc.memory_info().rss / 2**20, "idle_cpu_pct": (c1 - c0) / (t1 - t0) * 100,
            "threads": proc.num_threads(), "fds": proc.num_fds()}


def limit() -> dict:
    """A bare Python 3.11 interpreter that only sleeps: the floor of any Python daemon."""
    import subprocess

    import psutil

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        return {"rss_mb": psutil.Process(p.pid).memory_info().rss / 2**20, "idle_cpu_pct": 0.0}
    finally:
        p.kill()
        p.wait()


if __name__ == "__main__":
    bl.scenario_main("footprint", run_one, limit)
