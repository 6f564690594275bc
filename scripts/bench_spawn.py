#!/usr/bin/env python3
"""Scenario 1, spawn: one job of 200 `sleep 1000`.

Measured, for each daemon (zsupd, circusd, supervisord):
- start_s: from launching the daemon until 200 children of it run `sleep` (exec done; zsup's
  children exec through `setpriv` first, so argv[0] is checked, not just the count);
- stop_s: from the job's stop command until the daemon has no child left (all reaped);
- restart_cmd_s: with the daemon up, from the job's start command until all 200 run again.
Machine limit: a plain loop of os.posix_spawn of the same 200 processes, then SIGTERM to each
and waitpid.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

N = 200


def run_one(kind: str, tuned: bool) -> dict:
    d = bl.make_daemon(kind, [bl.Job("job", [bl.SLEEP, "1000"], N)])
    d.start()
    watch = bl.ChildWatch(d.pid)
    t_all = watch.wait_count(N, 120)
    start_s = t_all - d.t_start
    d.wait_ready()
    t0 = time.monotonic()
    d.stop_job("job")
    stop_s = watch.wait_gone(120) - t0
    d.wait_idle("job")
    t0 = time.monotonic()
    d.start_job("job")
    restart_cmd_s = watch.wait_count(N, 120) - t0
    d.stop()
    return {"start_s": start_s, "stop_s": stop_s, "start_cmd_s": restart_cmd_s}


def limit() -> dict:
    t0 = time.monotonic()
    pids = [os.posix_spawn(bl.SLEEP, [bl.SLEEP, "1000"], os.environ) for _ in range(N)]
    watch = bl.ChildWatch(os.getpid())
    t1 = watch.wait_count(N, 60)
    t2 = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    for pid in pids:
        os.waitpid(pid, 0)
    t3 = time.monotonic()
    return {"start_s": t1 - t0, "stop_s": t3 - t2, "start_cmd_s": t1 - t0}


if __name__ == "__main__":
    bl.scenario_main("spawn", run_one, limit)
