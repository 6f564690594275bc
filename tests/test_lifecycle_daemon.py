"""The lifecycle keys through every door: the ini file, JSON `load`, the Procfile tool's
`-o`, and what zsupctl status/info show, against a real zsupd."""

import subprocess
import time

from conftest import PYTHON, wait_for
from test_lifecycle import SERVER, free_port
from test_zsupctl import Streamer, zsupctl

from zsup.cli.procfile_tool import main as procfile_main


def row(d, job):
    return next(r for r in d.call("status") if r["job"] == job)


def status_line(d, job):
    out = zsupctl(d, "status").stdout
    return next(line for line in out.splitlines() if line.startswith(job))


def test_ini_keys_and_status_column(tmp_path, zsupd_factory):
    (tmp_path / "server.py").write_text(SERVER)
    port = free_port()
    d = zsupd_factory(f"""
[process:web]
cmd = {PYTHON} {tmp_path / "server.py"} tcp {port} 1.5
ready = tcp:{port}
ready_timeout = 20
health = tcp:{port}
health_interval = 0.2

[process:once]
cmd = sh -c "exit 3"
restart = never
""")
    wait_for(lambda: row(d, "default.once")["state"] == "exited", message="once exited")
    assert "exited (3)" in status_line(d, "default.once")
    assert row(d, "default.web")["ready"] == 0
    assert "starting (0/1 ready)" in status_line(d, "default.web")
    wait_for(lambda: row(d, "default.web")["ready"] == 1, message="web ready")
    assert "ready" in status_line(d, "default.web").split()
    info = zsupctl(d, "info", "web").stdout
    assert "READY" in info and "1 ready" in info
    assert d.call("get", name="web")["health"] == f"tcp:{port}"


def test_json_load_and_a_bad_check_is_refused(zsupd_factory):
    d = zsupd_factory()
    d.call("load", config={"name": "d", "cmd": "sleep 300", "ready": "delay:0.3", "restart": "on-failure"})
    wait_for(lambda: row(d, "default.d")["ready"] == 1, message="ready after the delay")
    proc = subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", "--state-dir", d.state_dir, "load_process", "-"],
                          input='{"name": "bad", "cmd": "true", "ready": "ping:3"}', capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode != 0 and "ready: unknown check 'ping'" in proc.stderr
    assert "default.bad" not in d.call("jobs")


def test_procfile_tool_options(tmp_path, zsupd_factory, capsys):
    d = zsupd_factory()
    app = tmp_path / "shop"
    app.mkdir()
    (app / "Procfile").write_text("web: sleep 300\nonce: exit 4\n")
    code = procfile_main(["--endpoint", d.bus, "-d", str(app), "load", "-o", "web.ready=delay:0.2",
                          "-o", "once.restart=never", "-o", "health_retries=5"])
    assert code == 0, capsys.readouterr().err
    assert d.call("get", name="shop.web")["ready"] == "delay:0.2"
    assert d.call("get", name="shop.once")["health_retries"] == 5
    wait_for(lambda: row(d, "shop.once")["state"] == "exited", message="once exited")
    assert row(d, "shop.once")["exit_codes"] == [4]
    wait_for(lambda: row(d, "shop.web")["ready"] == 1)
    code = procfile_main(["--endpoint", d.bus, "-d", str(app), "load", "-o", "nope.ready=tcp:1", "other"])
    assert code != 0 and "no process type 'nope'" in capsys.readouterr().err


def test_schedule_in_the_ini_file_and_status(zsupd_factory):
    d = zsupd_factory("""
[process:report]
cmd = sh -c "exit 0"
schedule = * * * * * *
""")
    wait_for(lambda: row(d, "default.report")["last_run"], timeout=10, message="a run")
    wait_for(lambda: row(d, "default.report")["state"] == "scheduled")
    line = status_line(d, "default.report")
    assert "scheduled" in line and "last run 20" in line and ", next 20" in line


def test_watch_shows_the_new_events(zsupd_factory):
    d = zsupd_factory()
    d.call("load", config={"name": "w", "cmd": "sleep 300", "ready": "delay:0.1"})
    d.call("load", config={"name": "once", "cmd": "true", "restart": "never"})
    watch = Streamer(d, "watch")
    try:
        # the subscription reaches zsupd a moment after watch starts: trigger until it shows
        next_try = [0.0]

        def seen(lines):
            ready = any("proc.default.w.ready" in line and "ready after" in line for line in lines)
            exited = any("job.default.once.exited" in line and "exit codes 0" in line for line in lines)
            if not (ready and exited) and time.monotonic() > next_try[0]:
                d.call("restart_job", name="w")
                d.call("start_job", name="once")
                next_try[0] = time.monotonic() + 0.5
            return ready and exited

        watch.wait_for(seen, message="the ready and exited events")
    finally:
        watch.close()


def test_watch_words_for_the_new_events():
    from zsup.cli.zsupctl.follow import summarize

    assert summarize("proc.default.web.ready", {"event": "ready", "pid": 3, "os_pid": 9, "after": 0.5,
                                                 "check": "tcp:80"}) == "pid 3 (os pid 9) ready after 0.5s (tcp:80)"
    assert summarize("proc.default.web.unhealthy", {"event": "unhealthy", "pid": 3, "os_pid": 9,
                                                     "reason": "3 failed"}) == "pid 3 (os pid 9) (3 failed)"
    assert summarize("job.default.web.roll", {"event": "roll", "job": "default.web", "phase": "failed",
                                              "replaced": 1, "total": 3, "reason": "not ready"}) == \
        "default.web rolling restart failed 1/3 (not ready)"
    assert summarize("job.default.once.exited", {"event": "exited", "job": "default.once",
                                                 "exit_codes": [0, 3]}) == "default.once exit codes 0, 3"


def test_status_column_words():
    from zsup.cli.zsupctl.format import job_state

    base = {"state": "running", "running": 2, "ready": 2, "unhealthy": 0, "checked": True, "reason": None}
    assert job_state(base) == "ready"
    assert job_state({**base, "checked": False}) == "running"
    assert job_state({**base, "ready": 1, "reason": "tcp:80: refused"}) == "starting (1/2 ready): tcp:80: refused"
    assert job_state({**base, "unhealthy": 1, "reason": "3 failed"}) == "unhealthy: 3 failed"
    assert job_state({"state": "exited", "exit_codes": [0, None]}) == "exited (0,-)"
    assert job_state({"state": "failing", "last_error": "before_start: exited with 3"}) == \
        "failing: before_start: exited with 3"
