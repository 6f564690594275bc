#!/usr/bin/env python3
"""How long `ping` and `status` take while zsupd spawns many processes (issue 12).

Starts a real zsupd in a temporary state dir, loads one job of N `sleep` processes (default
1000) from a second client, and meanwhile calls `ping` and `status` back to back until all N
run. Prints the latencies (median, p99, max, in ms), the time until all run, and how long a
SIGTERM to zsupd takes to stop everything. The target is a max under 100 ms: zsupd spawns in
slices of about 20 ms (zsup/core/supervision.py, SPAWN_SLICE) and serves queued commands in
between.

    .venv/bin/python scripts/bench_busy_bus.py [N]
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from zsup.bus.client import Client  # noqa: E402
from zsup.errors import Unavailable  # noqa: E402


def main(n: int) -> dict:
    state = tempfile.mkdtemp(prefix="zsup-busy-")
    config = os.path.join(state, "zsup.ini")
    open(config, "w").close()
    bus = f"ipc://{state}/zsupd.sock"
    env = dict(os.environ, PYTHONPATH=ROOT, ZSUP_STATE_DIR=state)
    daemon = subprocess.Popen([sys.executable, "-m", "zsup.cli.zsupd", "-c", config, "--state-dir", state],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with Client(bus, timeout=0.5) as c:
                    if c.call("ping") == "pong":
                        break
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
        job = {"name": "many", "cmd": "sleep", "args": ["1000"], "numprocesses": n, "redirect_output": [],
               "graceful_timeout": 5}

        def load():
            with Client(bus, timeout=120) as c:
                c.call("load", config=job)

        lat = {"ping": [], "status": []}
        t0 = time.monotonic()
        loader = threading.Thread(target=load)
        loader.start()
        running = 0
        with Client(bus, timeout=120) as c:
            while running < n:
                for cmd in ("ping", "status"):
                    t = time.monotonic()
                    result = c.call(cmd)
                    lat[cmd].append((time.monotonic() - t) * 1000)
                    if cmd == "status":
                        running = sum(r["running"] for r in result if r["job"] == "default.many")
        all_running_s = time.monotonic() - t0
        loader.join()
        t = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        stop_s = time.monotonic() - t

        def figures(values):
            values = sorted(values)
            return {"median_ms": round(statistics.median(values), 2),
                    "p99_ms": round(values[int(len(values) * 0.99) - 1 if len(values) > 1 else 0], 2),
                    "max_ms": round(values[-1], 2), "calls": len(values)}

        return {"processes": n, "all_running_s": round(all_running_s, 2), "sigterm_stop_s": round(stop_s, 2),
                "ping": figures(lat["ping"]), "status": figures(lat["status"])}
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))
