#!/usr/bin/env python3
"""Scenario 4, control: with 200 children running, 500 sequential status calls, then 200
full-info calls (or as many as fit in 20 s, at least 10), through each daemon's own API;
p50/p99 latency of one call (client side, connection kept open).

status:
- zsup: the bus Client's `status` (every job with the zsup and OS pids of all 200 processes);
- circus: circus.client.CircusClient, `{"command": "list", "properties": {"name": "job"}}`
  (the 200 pids of the watcher);
- supervisord: XML-RPC `supervisor.getAllProcessInfo` over its unix socket (200 entries).
full info of the job (every field each daemon keeps about each of its 200 processes):
- zsup: `info name=job` (pids, state, times, exit status, output seqs, the job's config);
- circus: `stats name=job` (pid, cmdline, cpu, memory, age of each process, from psutil);
- supervisord: `getAllProcessInfo` again (it has no fuller per-process call).
Each answer is checked to hold 200 running processes.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

N = 200
CALLS = 100 if bl.QUICK else 500
INFO_CALLS = 100 if bl.QUICK else 200
INFO_SECONDS = 10 if bl.QUICK else 20  # and at least 10 calls: circus's `stats` of 200 is slow


def run_one(kind: str, tuned: bool) -> dict:
    d = bl.make_daemon(kind, [bl.Job("job", [bl.SLEEP, "1000"], N)])
    d.start()
    bl.ChildWatch(d.pid).wait_count(N, 120)
    d.wait_ready()
    bl.wait_for(lambda: d.status_count(d.status()) == N, 30, 0.05, "200 processes in the status")
    for _ in range(20):  # warm-up: connections, caches
        d.status()
    lat = []
    for _ in range(CALLS):
        t0 = time.perf_counter()
        result = d.status()
        lat.append(time.perf_counter() - t0)
    assert d.status_count(result) == N, f"{kind}: {d.status_count(result)} processes in the answer"
    ms = [x * 1000 for x in lat]
    out = {"p50_ms": bl.percentile(ms, 50), "p99_ms": bl.percentile(ms, 99), "max_ms": max(ms), "calls": CALLS}
    for _ in range(5):
        d.info("job")
    lat = []
    stop_at = time.monotonic() + INFO_SECONDS
    while len(lat) < INFO_CALLS and (len(lat) < 10 or time.monotonic() < stop_at):
        t0 = time.perf_counter()
        result = d.info("job")
        lat.append(time.perf_counter() - t0)
    assert d.info_count(result) == N, f"{kind}: {d.info_count(result)} processes in the info"
    ms = [x * 1000 for x in lat]
    out.update(info_p50_ms=bl.percentile(ms, 50), info_p99_ms=bl.percentile(ms, 99), info_calls=len(lat))
    return out


ECHO = ("import sys, zmq\n"
        "s = zmq.Context().socket(zmq.ROUTER); s.bind(sys.argv[1])\n"
        "while True: s.send_multipart(s.recv_multipart())\n")


def limit() -> dict:
    """A request/reply round trip over an ipc:// zmq socket to a process that only echoes."""
    import subprocess
    import tempfile

    import zmq

    work = tempfile.mkdtemp(prefix="bench-echo-")
    endpoint = f"ipc://{work}/echo.sock"
    server = subprocess.Popen([sys.executable, "-c", ECHO, endpoint])
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        lat = []
        for i in range(CALLS + 20):
            t0 = time.perf_counter()
            sock.send_multipart([b"", b'{"cmd": "status"}'])
            if not sock.poll(10000):
                raise TimeoutError("the echo server does not answer")
            sock.recv_multipart()
            if i >= 20:
                lat.append(time.perf_counter() - t0)
    finally:
        sock.close()
        server.kill()
        server.wait()
    ms = [x * 1000 for x in lat]
    return {"p50_ms": bl.percentile(ms, 50), "p99_ms": bl.percentile(ms, 99), "max_ms": max(ms),
            "calls": CALLS, "info_p50_ms": bl.percentile(ms, 50), "info_p99_ms": bl.percentile(ms, 99)}


if __name__ == "__main__":
    bl.scenario_main("control", run_one, limit)
