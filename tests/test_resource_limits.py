"""max_memory and max_cpu over limit_window (issue 16): real processes that grow past them are
restarted gracefully, with a `limit` event and the reason in status/info."""

import sys

import pytest
from conftest import wait_for

from zsup.core.jobspec import JobSpec
from zsup.core.resources import read_usage
from zsup.errors import BadRequest

# grows its RSS by 8M every 50 ms (touched pages count), up to 400M, then sleeps
GROW = ("import time\nchunks = []\nfor _ in range(50):\n    chunks.append(bytearray(8 << 20))\n"
        "    time.sleep(0.05)\ntime.sleep(60)\n")
BUSY = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\nwhile True:\n    pass\n"


def test_memory_over_max_is_restarted(manager, recorder):
    manager.load({"name": "grow", "cmd": sys.executable, "args": ["-c", GROW], "max_memory": "64M",
                  "graceful_timeout": 5})
    first = manager.info("grow")["pids"][0]
    wait_for(lambda: recorder.find("grow.limit"), timeout=20, message="a limit event")
    event = recorder.find("grow.limit")[0]
    assert event["pid"] == first and event["limit"] == "max_memory" and event["max"] == 64 << 20
    assert event["value"] > 64 << 20 and "max_memory 64.0M" in event["reason"]
    # stopped gracefully (SIGTERM: python dies of it), reason max_memory, and replaced
    wait_for(lambda: [m for m in recorder.find("grow.exit") if m["pid"] == first], timeout=10)
    exit_msg = next(m for m in recorder.find("grow.exit") if m["pid"] == first)
    assert exit_msg["reason"] == "max_memory" and exit_msg["term_signal"] == 15
    wait_for(lambda: [p for p in manager.info("grow")["pids"] if p != first], timeout=10)
    row = next(r for r in manager.status() if r["job"] == "default.grow")
    assert row["last_limit"]["limit"] == "max_memory" and row["last_limit"]["pid"] == first
    assert manager.info("grow")["last_limit"]["value"] == event["value"]


def test_cpu_over_max_is_restarted(manager, recorder):
    manager.load({"name": "busy", "cmd": sys.executable, "args": ["-c", BUSY], "max_cpu": "30%",
                  "limit_window": 2})
    first = manager.info("busy")["pids"][0]
    wait_for(lambda: recorder.find("busy.limit"), timeout=20, message="a limit event")
    event = recorder.find("busy.limit")[0]
    assert event["limit"] == "max_cpu" and event["max"] == 30 and event["window"] == 2
    assert event["value"] > 30
    wait_for(lambda: [m for m in recorder.find("busy.exit") if m["pid"] == first], timeout=10)
    exit_msg = next(m for m in recorder.find("busy.exit") if m["pid"] == first)
    assert exit_msg["reason"] == "max_cpu" and exit_msg["exit_code"] == 3  # its own SIGTERM handler ran
    wait_for(lambda: [p for p in manager.info("busy")["pids"] if p != first], timeout=10)


def test_quiet_process_is_left_alone(manager, recorder):
    manager.load({"name": "idle", "cmd": "sleep", "args": ["30"], "max_cpu": 50, "max_memory": "100M",
                  "limit_window": 1})
    pid = manager.info("idle")["pids"][0]
    os_pid = manager.get_process(pid)["os_pid"]
    # /proc's RSS of a process that has just exec'd can read 0 for a moment (the kernel sums
    # its per-CPU counters lazily): wait for the first count, then check it is below the limit
    wait_for(lambda: read_usage(os_pid)[1] > 0, timeout=5, message="the process's first RSS count")
    cpu, rss = read_usage(os_pid)
    assert 0 < rss < 100 << 20 and cpu < 1
    # three windows pass without a limit event
    with pytest.raises(AssertionError):
        wait_for(lambda: recorder.find("idle.limit"), timeout=3.5)
    assert manager.info("idle")["pids"] == [pid]


def test_watched_limits_checked_at_the_door():
    base = {"name": "a", "cmd": "true"}
    spec = JobSpec.from_dict({**base, "max_memory": "1G", "max_cpu": "150%", "limit_window": "30"})
    assert (spec.max_memory, spec.max_cpu, spec.limit_window) == (1 << 30, 150.0, 30.0)
    assert JobSpec.from_dict(base).limit_window == 10.0
    assert JobSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
    for key, value, words in [("max_memory", "lots", "expected a size"), ("max_memory", "10k", "at least 1M"),
                              ("max_memory", True, "expected a size"), ("max_cpu", "fast", "percentage"),
                              ("max_cpu", 0, "above 0"), ("limit_window", "0.5", "between 1"),
                              ("limit_window", "x", "expected seconds")]:
        with pytest.raises(BadRequest, match=words) as info:
            JobSpec.from_dict({**base, key: value})
        assert str(info.value).startswith(key)


def test_watched_limits_from_the_ini():
    from zsup.daemon.config import ConfigError, parse_config

    spec = parse_config("[process:web]\ncmd = sleep 1\nmax_memory = 256M\nmax_cpu = 80\nlimit_window = 5\n").jobs[0]
    assert (spec.max_memory, spec.max_cpu, spec.limit_window) == (256 << 20, 80.0, 5.0)
    with pytest.raises(ConfigError, match=r"\[process:web\] max_cpu: "):
        parse_config("[process:web]\ncmd = sleep 1\nmax_cpu = lots\n")


def test_zsupd_restarts_from_the_ini_and_zsupctl_status_says_why(zsupd_factory, tmp_path):
    import os
    import subprocess

    from conftest import PYTHON, ROOT

    script = tmp_path / "grow.py"
    script.write_text(GROW)
    d = zsupd_factory(f"[process:grow]\ncmd = {PYTHON} {script}\nmax_memory = 48M\ngraceful_timeout = 5\n")
    info = wait_for(lambda: d.call("info", name="grow")["last_limit"], timeout=20, message="a limit restart")
    assert info["limit"] == "max_memory" and info["max"] == 48 << 20
    out = subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", "--state-dir", d.state_dir, "status"],
                         capture_output=True, text=True, timeout=30,
                         env={k: v for k, v in os.environ.items() if k not in ("ZSUP_BUS", "ZSUP_PUB")}
                         | {"PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("default.grow"))
    assert "(restarted: rss " in line and "> max_memory 48.0M)" in line


def test_procfile_options_carry_the_limits():
    from zsup.cli.procfile_app import apply_options

    jobs = apply_options([{"name": "web", "cmd": "true"}, {"name": "worker", "cmd": "true"}],
                         ["web.max_memory=256M", "max_cpu=90", "worker.limit_window=30", "web.sockets=api"])
    web, worker = (JobSpec.from_dict(job, "app") for job in jobs)
    assert (web.max_memory, web.max_cpu, web.sockets) == (256 << 20, 90.0, ["api"])
    assert (worker.max_memory, worker.max_cpu, worker.limit_window) == (None, 90.0, 30.0)
