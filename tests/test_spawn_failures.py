"""Failures are visible: a job that cannot spawn says why in status, info, HTTP-facing info,
watch and zsupd's log (one line per episode), and recovers on its own."""

import os
import re
import shutil
import subprocess

from conftest import PYTHON, ROOT, readline_within, wait_for
from test_http_support import gw  # noqa: F401

from zsup.bus.client import Subscriber


def status_row(d, job):
    return {r["job"]: r for r in d.call("status")}[job]


def zsupctl(d, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", "--state-dir", d.state_dir, *args],
                          capture_output=True, text=True, timeout=20, env=env)


def test_missing_binary_shows_failing_and_why(zsupd_factory, tmp_path):
    binary = tmp_path / "later.sh"
    d = zsupd_factory(f"[process:broken]\ncmd = {binary}\n")
    with Subscriber(d.pub, ["proc.default.broken."]) as sub:
        row = wait_for(lambda: (r := status_row(d, "default.broken"))["state"] == "failing" and r,
                       message="the job to be failing")
        assert "not an executable file" in row["last_error"] and row["running"] == 0
        info = d.call("info", name="broken")
        assert info["state"] == "failing" and "later.sh" in info["last_error"] and info["last_error_time"]
        out = zsupctl(d, "status")
        assert out.returncode == 0 and re.search(r"default\.broken\s+failing: cannot execute .*later\.sh", out.stdout)

        # several retries, one log line for the episode (at ERROR: shown at the default verbosity)
        errors = []
        wait_for(lambda: (ev := sub.recv(0.2)) is not None and ev.topic.endswith(".spawn_error")
                 and errors.append(ev) is None and len(errors) >= 3, timeout=15, message="three retries")
        assert "later.sh" in errors[0].msg["error"]
        lines = [l for l in d.log().splitlines() if "cannot spawn" in l]
        assert len(lines) == 1 and " ERROR " in lines[0], lines

    # the binary appears: the next retry spawns, the job is running again, the error is gone
    binary.write_text("#!/bin/sh\nexec sleep 300\n")
    binary.chmod(0o755)
    wait_for(lambda: status_row(d, "default.broken")["state"] == "running"
             and status_row(d, "default.broken")["running"] == 1, timeout=15, message="recovery")
    assert d.call("info", name="broken")["last_error"] is None


def test_vanished_cwd_is_named(zsupd_factory, tmp_path):
    where = tmp_path / "app"
    where.mkdir()
    d = zsupd_factory(f"[process:lost]\ncmd = sleep 300\ncwd = {where}\nnumprocesses = 0\n")
    shutil.rmtree(where)
    d.call("scale", name="lost", n=1)
    row = wait_for(lambda: (r := status_row(d, "default.lost"))["state"] == "failing" and r)
    assert row["last_error"] == f"cwd {str(where)!r}: no such directory"


def test_watch_shows_the_spawn_error(zsupd_factory, tmp_path):
    d = zsupd_factory("[process:broken]\ncmd = /nonexistent/zsup-test-binary\n")
    watch = subprocess.Popen([PYTHON, "-m", "zsup.cli.zsupctl", "--state-dir", d.state_dir, "watch", "proc.broken"],
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        line = readline_within(watch.stdout, message="a watch line")
        while ".spawn_error " not in line:
            line = readline_within(watch.stdout, message="a spawn_error line")
        assert line.endswith("cannot spawn: cannot execute '/nonexistent/zsup-test-binary': not an executable file\n")
    finally:
        watch.kill()
        watch.wait(5)
        watch.stdout.close()


def test_http_job_info_has_last_error(gw):
    gw.load({"name": "broken", "cmd": "/nonexistent/zsup-test-binary"})
    info = wait_for(lambda: (a := gw.get("/jobs/default/broken")).json["state"] == "failing" and a.json)
    assert info["last_error"] == "cannot execute '/nonexistent/zsup-test-binary': not an executable file"


def test_the_log_line_shows_at_the_default_verbosity(zsupd_factory):
    d = zsupd_factory("[process:broken]\ncmd = /nonexistent/zsup-test-binary\n", start=False)
    env = dict(os.environ, PYTHONPATH=ROOT, ZSUP_STATE_DIR=d.state_dir)
    d._log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.zsupd", "-c", d.config_path, "--state-dir", d.state_dir],
                              stdout=d._log, stderr=d._log, env=env)  # no -v
    d.wait_ready()
    with Subscriber(d.pub, ["proc.default.broken.spawn_error"]) as sub:
        errors = []
        wait_for(lambda: (ev := sub.recv(0.2)) is not None and errors.append(ev) is None and len(errors) >= 2,
                 timeout=15, message="retries")
    wait_for(lambda: "job default.broken cannot spawn: cannot execute" in d.log(), message="the error line")
    assert d.log().count("cannot spawn") == 1


def test_a_process_that_exits_at_once_shows_failing_with_its_last_line(zsupd_factory, tmp_path):
    """A server that cannot start (say it cannot bind its port) spawns fine, then exits at
    once: the job is `failing` with its exit and last line, not "running 0/1"; it is
    `running` again once a process stays up."""
    flag = tmp_path / "can-listen"
    script = tmp_path / "server.sh"
    script.write_text(f"#!/bin/sh\n[ -e {flag} ] && exec sleep 300\n"
                      "echo 'error: cannot listen on 127.0.0.1:80: Address already in use' >&2\nexit 3\n")
    script.chmod(0o755)
    d = zsupd_factory(f"[process:server]\ncmd = {script}\n")
    row = wait_for(lambda: (r := status_row(d, "default.server"))["state"] == "failing" and r,
                   message="the job to be failing")
    assert row["last_error"].startswith("exits at once (code 3)"), row
    assert "cannot listen on 127.0.0.1:80" in row["last_error"]
    out = zsupctl(d, "status")
    wanted = r"default\.server\s+failing: exits at once \(code 3\): error: cannot listen"
    assert re.search(wanted, out.stdout), out.stdout
    flag.touch()
    wait_for(lambda: (r := status_row(d, "default.server"))["state"] == "running" and r["last_error"] is None,
             timeout=20, message="the job to run again")
    log = d.log()
    assert log.count("job default.server fails: exits at once (code 3)") == 1, log
    assert "job default.server runs again" in log
