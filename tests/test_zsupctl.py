"""zsupctl against a real zsupd: every command, run as a subprocess, as a user would."""

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time

import pytest
from conftest import PYTHON, ROOT, wait_for

CONFIG = f"""
[process:dummy]
cmd = {PYTHON}
args = {ROOT}/etc/dummy.py
numprocesses = 2
graceful_timeout = 2

[process:echo]
cmd = {PYTHON} {ROOT}/etc/echo.py
redirect_input = true
graceful_timeout = 2
"""


def ctl_env(state_dir=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("ZSUP_BUS", None)
    env.pop("ZSUP_PUB", None)
    if state_dir:
        env["ZSUP_STATE_DIR"] = state_dir
    return env


def zsupctl(d, *args, input=None, check=True, env_state=False):
    """Run zsupctl once; the daemon is found by --state-dir (or ZSUP_STATE_DIR with env_state)."""
    where = [] if env_state else ["--state-dir", d.state_dir]
    proc = subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", *where, *args], input=input, capture_output=True,
                          text=True, timeout=20, env=ctl_env(d.state_dir if env_state else None))
    if check:
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


class Streamer:
    """A long-running zsupctl (watch, tail, logs -f) whose lines are read with a deadline."""

    def __init__(self, d, *args):
        self.proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.zsupctl", "--state-dir", d.state_dir, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ctl_env())
        self.lines = []
        self._queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def _drain(self):
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def wait_for(self, predicate, timeout=10, message="output", interval=0.02):
        def check():
            self._drain()
            return predicate(self.lines)
        return wait_for(check, timeout=timeout, interval=interval, message=f"{message}; got {self.lines}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return self.proc.returncode

    def close(self):
        self.stop()
        self.proc.stderr.close()


def wait_running(d, name, n):
    return wait_for(lambda: (info := d.call("info", name=name))["running"] == n and info,
                    message=f"{name} to run {n} processes")


def ring(d, pid, label="stdout"):
    return [line["data"] for line in d.call("read_output", pid=pid, label=label)["lines"]]


# ---------------------------------------------------------------------------------- queries, scale


def test_status_queries_and_scale(zsupd_factory):
    d = zsupd_factory(CONFIG)
    wait_running(d, "dummy", 2)
    wait_running(d, "echo", 1)

    out = zsupctl(d, "status").stdout.splitlines()
    assert out[0].split() == ["JOB", "STATE", "PROCS", "UPTIME", "CPU%", "MEM"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["default.dummy"][1:3] == ["running", "2/2"]
    assert rows["default.echo"][1:3] == ["running", "1/1"]
    assert re.fullmatch(r"\d+s|\d+m\d\ds", rows["default.dummy"][3])
    assert re.fullmatch(r"\d+(\.\d)?[KMG]", rows["default.dummy"][5])
    assert len({len(line.split("running")[0]) for line in out[1:]}) == 1  # columns aligned

    status = json.loads(zsupctl(d, "status", "--json").stdout)  # a global option after the command
    assert {row["job"] for row in status} == {"default.dummy", "default.echo"}
    assert all(row["stats"]["rss"] > 0 for row in status)

    assert zsupctl(d, "processes", env_state=True).stdout.split() == ["default.dummy", "default.echo"]
    assert zsupctl(d, "sessions").stdout.split() == ["default"]
    assert zsupctl(d, "ping").stdout.strip() == "pong"
    assert re.fullmatch(r"zsupctl \S+, zsupd \S+ \(bus protocol 1\)\ncgroups: (active \(.+\)|inactive \(.+\); "
                        r"jobs are held by process groups)\n", zsupctl(d, "version").stdout)
    assert [int(p) for p in zsupctl(d, "pids", "dummy").stdout.split()] == d.call("pids", name="dummy")

    info = zsupctl(d, "info", "dummy").stdout
    assert "job:        default.dummy" in info and "2 running / 2 wanted" in info
    stats = zsupctl(d, "stats", "dummy").stdout.splitlines()
    assert stats[0].split() == ["PID", "OS", "PID", "CPU%", "MEM%", "RSS", "CMDLINE"]
    assert len(stats) == 4 and stats[-1].startswith("total") and "dummy.py" in stats[1]
    config = json.loads(zsupctl(d, "get", "echo").stdout)
    assert config["redirect_input"] is True and config["name"] == "echo"

    tail = zsupctl(d, "tail", "dummy", "-n", "1", "--no-follow").stdout.splitlines()
    assert {int(line.split(" | ")[0]) for line in tail} == set(d.call("pids", name="dummy"))

    for args, expected in [(("scale", "dummy", "3"), 3), (("scale", "dummy", "+2"), 5), (("scale", "dummy", "-1"), 4),
                           (("scale", "dummy", "=1"), 1), (("add", "dummy", "2"), 3), (("sub", "dummy", "1"), 2)]:
        out = zsupctl(d, *args).stdout.strip()
        assert out == f"scaled default.dummy to {expected} process{'es' if expected > 1 else ''}", args
        assert d.call("info", name="dummy")["numprocesses"] == expected
    assert json.loads(zsupctl(d, "--json", "scale", "dummy", "4").stdout) == {"job": "default.dummy",
                                                                             "numprocesses": 4}

    assert zsupctl(d, "stop", "dummy").stdout.strip() == "stopped default.dummy"
    wait_running(d, "dummy", 0)
    assert zsupctl(d, "start", "dummy").stdout.strip() == "started default.dummy (4 processes wanted)"
    wait_running(d, "dummy", 4)

    missing = zsupctl(d, "info", "nope", check=False)
    assert (missing.returncode, missing.stderr) == (1, "zsupctl: no job default.nope\n")


# ---------------------------------------------------------------------------------- load, unload


def test_load_process_from_file_and_stdin(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    job = {"name": "one", "cmd": PYTHON, "args": [f"{ROOT}/etc/dummy.py"], "numprocesses": 1, "graceful_timeout": 2}
    path = tmp_path / "one.json"
    path.write_text(json.dumps(job))
    assert zsupctl(d, "load_process", str(path)).stdout.strip() == "loaded default.one"
    wait_running(d, "one", 1)

    two = dict(job, name="two")
    assert zsupctl(d, "load_process", "-", input=json.dumps(two)).stdout.strip() == "loaded default.two"
    jobs = [dict(job, name="a"), dict(job, name="b")]
    out = zsupctl(d, "load_process", "-", "--session", "grp", "--no-start", input=json.dumps(jobs)).stdout
    assert out.splitlines() == ["loaded grp.a (not started)", "loaded grp.b (not started)"]
    assert d.call("info", name="grp.a")["active"] is False
    assert sorted(d.call("jobs")) == ["default.one", "default.two", "grp.a", "grp.b"]

    assert zsupctl(d, "unload", "grp.b").stdout.strip() == "unloaded grp.b"
    assert "grp.b" not in d.call("jobs")

    bad = zsupctl(d, "load_process", "-", input="{not json", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("zsupctl: stdin: not valid JSON") and bad.stderr.count("\n") == 1
    dup = zsupctl(d, "load_process", str(path), check=False)
    assert dup.returncode == 1 and dup.stderr == "zsupctl: job default.one is already loaded\n"


# ---------------------------------------------------------------------------------- kill, reload


def test_kill_and_reload(zsupd_factory):
    d = zsupd_factory(CONFIG)
    before = wait_running(d, "dummy", 2)["pids"]

    out = zsupctl(d, "kill", str(before[0]), "KILL").stdout.strip()
    assert out == f"sent SIGKILL to process {before[0]}"
    wait_for(lambda: before[0] not in d.call("pids", name="dummy") and len(d.call("pids", name="dummy")) == 2,
             message="the killed process to be replaced")

    current = d.call("pids", name="dummy")
    out = zsupctl(d, "kill", "dummy", "SIGHUP").stdout.strip()  # dummy.py dies on SIGHUP
    assert out.startswith("sent SIGHUP to default.dummy (2 processes")
    wait_for(lambda: not set(current) & set(d.call("pids", name="dummy")) and
             d.call("info", name="dummy")["running"] == 2, message="both processes replaced")

    d.call("scale", name="dummy", n="=3")
    current = wait_running(d, "dummy", 3)["pids"]
    assert zsupctl(d, "reload", "dummy").stdout.strip() == "reloaded default.dummy (2 processes)"
    wait_for(lambda: (info := d.call("info", name="dummy"))["running"] == 2 and not set(current) & set(info["pids"]),
             message="new processes after reload")

    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace("[process:echo]", "[process:other]"))
    out = zsupctl(d, "reload").stdout.splitlines()
    assert out == ["added: default.other", "removed: default.echo"]
    assert sorted(d.call("jobs")) == ["default.dummy", "default.other"]
    assert zsupctl(d, "reload").stdout.strip() == "config reloaded: nothing changed"


# ---------------------------------------------------------------------------------- stdin, commit


def test_send_and_commit(zsupd_factory):
    d = zsupd_factory(CONFIG)
    pid = wait_running(d, "echo", 1)["pids"][0]
    assert zsupctl(d, "send", str(pid), "hello", "world").stdout.strip() == f"sent 12 bytes to process {pid}"
    zsupctl(d, "send", "--no-newline", str(pid), "no newline")
    zsupctl(d, "send", str(pid), "!")
    wait_for(lambda: ring(d, pid) == ["hello world\n", "no newline!\n"], message="echoed lines")

    committed = int(zsupctl(d, "commit", "echo").stdout)
    assert committed in d.call("pids", name="echo")
    assert d.call("get_process", pid=committed)["committed"] is True
    zsupctl(d, "send", str(committed), "to the committed one")
    wait_for(lambda: ring(d, committed) == ["to the committed one\n"], message="committed echo")

    assert zsupctl(d, "reopen-logs").stdout.strip() == "log files reopened"


# ---------------------------------------------------------------------------------- live commands


def test_watch_prints_process_events(zsupd_factory):
    d = zsupd_factory(CONFIG)
    wait_running(d, "dummy", 2)
    watch = Streamer(d, "watch", "proc.dummy")  # gaffer's form: job dummy of session default
    try:
        # the subscription reaches zsupd a moment after watch starts: trigger until it shows
        next_kill = [0.0]

        def seen(lines):
            if any(" proc.default.dummy.spawn " in line for line in lines):
                return any(" proc.default.dummy.exit " in line for line in lines)
            pids = d.call("info", name="dummy")["pids"]
            if pids and time.monotonic() > next_kill[0]:
                d.call("kill", pid=pids[0], sig="KILL")
                next_kill[0] = time.monotonic() + 0.5
            return False

        watch.wait_for(seen, message="spawn and exit lines")
        line = next(line for line in watch.lines if ".spawn " in line)
        assert re.fullmatch(r"\d\d:\d\d:\d\d default\.dummy \| proc\.default\.dummy\.spawn pid \d+ \(os pid \d+\)",
                            line)
        assert not any("echo" in line or " io." in line for line in watch.lines)
        assert watch.stop(signal.SIGINT) == 0  # Ctrl-C ends watch quietly
        assert watch.proc.stderr.read() == ""
    finally:
        watch.close()


def test_tail_ring_then_live_without_duplicates(zsupd_factory):
    d = zsupd_factory(CONFIG)
    pid = wait_running(d, "echo", 1)["pids"][0]
    for word in ("one", "two"):
        d.call("send", pid=pid, data=f"{word}\n")
    wait_for(lambda: len(ring(d, pid)) == 2, message="two lines in the ring")
    tail = Streamer(d, "tail", "echo")
    try:
        tail.wait_for(lambda lines: lines == ["one", "two"], message="ring lines")
        for word in ("three", "four"):
            d.call("send", pid=pid, data=f"{word}\n")
        tail.wait_for(lambda lines: len(lines) >= 4, message="live lines")
        d.call("send", pid=pid, data="five\n")
        tail.wait_for(lambda lines: len(lines) >= 5, message="one more live line")
        assert tail.lines == ["one", "two", "three", "four", "five"]
    finally:
        tail.close()


def test_logs_read_back_and_follow(zsupd_factory):
    d = zsupd_factory(CONFIG)
    pid = wait_running(d, "echo", 1)["pids"][0]
    for word in ("alpha", "beta", "gamma"):
        d.call("send", pid=pid, data=f"{word}\n")

    def logged():
        return zsupctl(d, "logs", "echo").stdout.splitlines() == ["alpha", "beta", "gamma"]

    wait_for(logged, message="lines in the log file", interval=0.1)
    assert zsupctl(d, "logs", "echo", "-n", "1").stdout.splitlines() == ["gamma"]
    assert zsupctl(d, "logs", "echo", "--since", "10m", "--label", "stdout").stdout.split() == ["alpha", "beta",
                                                                                             "gamma"]
    assert zsupctl(d, "logs", "echo", "--since", "2999-01-01T00:00:00").stdout == ""
    records = [json.loads(line) for line in zsupctl(d, "--json", "logs", "echo").stdout.splitlines()]
    assert [(r["pid"], r["seq"], r["line"]) for r in records] == [(pid, 1, "alpha"), (pid, 2, "beta"), (pid, 3, "gamma")]

    follow = Streamer(d, "logs", "echo", "-f")
    try:
        follow.wait_for(lambda lines: lines == ["alpha", "beta", "gamma"], message="lines from the files")
        d.call("send", pid=pid, data="delta\n")
        follow.wait_for(lambda lines: len(lines) >= 4, message="a live line")
        d.call("send", pid=pid, data="epsilon\n")
        follow.wait_for(lambda lines: len(lines) >= 5, message="one more live line")
        assert follow.lines == ["alpha", "beta", "gamma", "delta", "epsilon"]
    finally:
        follow.close()


# ---------------------------------------------------------------------------------- errors, help


def test_no_zsupd_answering(tmp_path):
    proc = subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", "--state-dir", str(tmp_path), "--timeout", "0.3",
                           "status"], capture_output=True, text=True, timeout=20, env=ctl_env())
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"zsupctl: no zsupd answering at ipc://{tmp_path}/zsupd.sock (is it running?)\n"


@pytest.mark.parametrize("args", [[], ["scale", "web"], ["scale", "web", "many"], ["add", "web", "-2"],
                                  ["frobnicate"], ["logs", "web", "--since", "yesterday"], ["send", "x", "hi"]])
def test_bad_arguments_exit_2(args, tmp_path):
    proc = subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", "--state-dir", str(tmp_path), "--timeout", "0.3",
                           *args], capture_output=True, text=True, timeout=20, env=ctl_env())
    assert proc.returncode == 2, (args, proc.stderr)
    assert "zsupctl" in proc.stderr and "Traceback" not in proc.stderr


def test_help_on_every_command(capsys):
    from zsup.cli import zsupctl

    parser = zsupctl.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # every name and alias
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as exit_info:
            zsupctl.main([name, "--help"] if name else ["--help"])
        assert exit_info.value.code == 0
        assert "usage: zsupctl" in capsys.readouterr().out
