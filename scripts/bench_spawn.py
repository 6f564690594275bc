#!/usr/bin/env python3
"""Scenario 1, spawn: one job of 200 `sleep 1000`.

Measured, for each daemon (zsupd, circusd, supervisord):
- start_s: from launching the daemon until 200 children of it run `sleep` (exec done; zsup's
  children exec through `setpriv` first, so argv[0] is checked, not just the count);
- stop_s: from the job's stop command until the daemon has no child left (all reaped);
- restart_cmd_s: with the daemon up, from the job's start command until all 200 run again.
Machine limit: a plain loop of os.posix_spawn of the same 200 processes in a process of its
own, started by a line on its stdin, then (another line) SIGTERM to each and waitpid; watched
by the same poller as the daemons, so that the limit pays the same observer.

The poller reads /proc every WATCH_INTERVAL (1 ms). Every 0.2 ms, as first, it took about a
core of the machine's two from the daemon under test and its children (zsupd's start
command: 0.175 s against 0.155 s at 2 ms), while the limit ran without it.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

N = 200
WATCH_INTERVAL = 0.001

LOOP = """
import os, signal, sys
exe, n = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
pids = [os.posix_spawn(exe, [exe, "1000"], os.environ) for _ in range(n)]
sys.stdin.readline()
for pid in pids:
    os.kill(pid, signal.SIGTERM)
for pid in pids:
    os.waitpid(pid, 0)
"""


def run_one(kind: str, tuned: bool) -> dict:
    d = bl.make_daemon(kind, [bl.Job("job", [bl.SLEEP, "1000"], N)])
    d.start()
    watch = bl.ChildWatch(d.pid)
    t_all = watch.wait_count(N, 120, WATCH_INTERVAL)
    start_s = t_all - d.t_start
    d.wait_ready()
    t0 = time.monotonic()
    d.stop_job("job")
    stop_s = watch.wait_gone(120, WATCH_INTERVAL) - t0
    d.wait_idle("job")
    t0 = time.monotonic()
    d.start_job("job")
    restart_cmd_s = watch.wait_count(N, 120, WATCH_INTERVAL) - t0
    d.stop()
    return {"start_s": start_s, "stop_s": stop_s, "start_cmd_s": restart_cmd_s}


def limit() -> dict:
    import subprocess

    loop = subprocess.Popen([sys.executable, "-c", LOOP, bl.SLEEP, str(N)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert loop.stdout.readline() == "ready\n"
        watch = bl.ChildWatch(loop.pid)
        t0 = time.monotonic()
        loop.stdin.write("start\n")
        loop.stdin.flush()
        t1 = watch.wait_count(N, 60, WATCH_INTERVAL)
        t2 = time.monotonic()
        loop.stdin.write("stop\n")
        loop.stdin.flush()
        t3 = watch.wait_gone(60, WATCH_INTERVAL)
        loop.wait(60)
    finally:
        loop.kill()
        loop.wait()
    return {"start_s": t1 - t0, "stop_s": t3 - t2, "start_cmd_s": t1 - t0}


if __name__ == "__main__":
    bl.scenario_main("spawn", run_one, limit)
