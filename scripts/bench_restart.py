#!/usr/bin/env python3
"""Scenario 2, restart: SIGKILL the child of a one-process job, time until its replacement runs.

Ten one-process jobs of `sleep 1000`, killed in turn, 30 kills in all (10 in quick mode). A
child is killed only once it has run for 1.05 s, so that no daemon takes it for a crash loop
(zsup's back-off resets after 1 s of uptime, supervisord's default startsecs is 1 s): what is
measured is the ordinary restart of a process that died, not a back-off. Ten jobs instead of
one keep that wait from dominating the run time; each kill still hits a one-process job.

Latency: from just before kill(SIGKILL) until a new child of the daemon runs `sleep` (exec
done), polled through /proc every 0.2 ms. p50/p95/max per run. A run stops early after 10 s
(5 s quick) of kills, with at least 3 kills: circus's default takes seconds per restart.
circus and supervisord run twice: with their defaults, and with their most favourable
settings (circus check_delay = 0.01 s instead of 1 s; supervisord startsecs = 0).
Machine limit: kill, waitpid, posix_spawn, until the new child runs `sleep`.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

JOBS = 10
KILLS = 10 if bl.QUICK else 30
SETTLE = 1.05
# A daemon that takes seconds per restart (circus's default check_delay is 5 s) would alone
# blow the bench's time limit: a run stops killing after this many seconds (at least 3 kills).
BUDGET = 5.0 if bl.QUICK else 10.0


def run_one(kind: str, tuned: bool) -> dict:
    d = bl.make_daemon(kind, [bl.Job(f"r{i}", [bl.SLEEP, "1000"], 1) for i in range(JOBS)], tuned=tuned)
    d.start()
    watch = bl.ChildWatch(d.pid)
    watch.wait_count(JOBS, 60)
    seen = {pid: time.monotonic() for pid in watch.running()}
    lat = []
    t_first = time.monotonic()
    for _ in range(KILLS):
        if len(lat) >= 3 and time.monotonic() - t_first > BUDGET:
            break
        victim = min(seen, key=seen.get)
        wait = seen[victim] + SETTLE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        before = watch.running()
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        deadline = t0 + 30
        while True:
            now_running = watch.running()
            new = now_running - before
            if new:
                t1 = time.monotonic()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replacement after 30 s ({len(now_running)} running)")
            time.sleep(0.0002)
        lat.append(t1 - t0)
        del seen[victim]
        for pid in new:
            seen[pid] = t1
    return summary(lat)


def summary(lat):
    ms = [x * 1000 for x in lat]
    return {"p50_ms": bl.percentile(ms, 50), "p95_ms": bl.percentile(ms, 95), "max_ms": max(ms),
            "kills": len(ms)}


def limit() -> dict:
    lat = []
    pid = os.posix_spawn(bl.SLEEP, [bl.SLEEP, "1000"], os.environ)
    watch = bl.ChildWatch(os.getpid())
    watch.wait_count(1, 10)
    for _ in range(KILLS):
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pid = os.posix_spawn(bl.SLEEP, [bl.SLEEP, "1000"], os.environ)
        while bl.argv0(pid) != bl.SLEEP.encode():
            time.sleep(0.0002)
        lat.append(time.monotonic() - t0)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return summary(lat)


if __name__ == "__main__":
    variants = [("zsup", False), ("circus", False), ("circus", True), ("supervisord", False),
                ("supervisord", True)]
    bl.scenario_main("restart", run_one, limit, variants)
