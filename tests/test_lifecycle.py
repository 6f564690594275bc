"""Restart policies, readiness and health checks, with real servers and a real sd_notify."""

import os
import shutil
import socket
import textwrap

import pytest
from conftest import PYTHON, wait_for

from zsup.core.jobspec import JobSpec
from zsup.errors import BadRequest

# A TCP or HTTP server that starts listening after DELAY seconds; HTTP answers 200 while the
# file HEALTHY (if given) exists, else 503.
SERVER = textwrap.dedent("""
    import os, socket, sys, time, http.server
    kind, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    healthy = sys.argv[4] if len(sys.argv) > 4 else None
    time.sleep(delay)
    if kind == "tcp":
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port)); s.listen(16)
        print("listening", flush=True)
        while True:
            c, _ = s.accept(); c.close()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = healthy is None or os.path.exists(healthy)
            self.send_response(200 if ok else 503); self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")

# A tiny sd_notify sender: READY=1 after DELAY, STATUS=..., then WATCHDOG=1 for BEATS beats.
NOTIFIER = textwrap.dedent("""
    import os, socket, sys, time
    delay, beats = float(sys.argv[1]), int(sys.argv[2])
    def send(msg):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(msg.encode(), os.environ["NOTIFY_SOCKET"]); s.close()
    time.sleep(delay)
    send("READY=1\\nSTATUS=serving 3 clients")
    for _ in range(beats):
        time.sleep(0.1); send("WATCHDOG=1")
    time.sleep(300)
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "notifier.py").write_text(NOTIFIER)
    return tmp_path


def readiness(manager, name):
    return [p["readiness"] for p in manager.info(name)["processes"] if p["state"] == "running"]


def spawns(recorder, name):
    return recorder.find(f"proc.default.{name}.spawn")


# ------------------------------------------------------------------ restart policies
def test_restart_never_leaves_the_job_exited_with_its_codes(manager, recorder):
    manager.load({"name": "once", "cmd": "sh", "args": ["-c", "exit $((ZSUP_INSTANCE + 2))"],
                  "numprocesses": 2, "restart": "never"})
    wait_for(lambda: manager.info("once")["state"] == "exited", message="job exited")
    info = manager.info("once")
    assert sorted(info["exit_codes"]) == [3, 4] and not info["active"]
    assert len(spawns(recorder, "once")) == 2
    assert recorder.find("job.default.once.exited")[0]["exit_codes"]
    row = next(r for r in manager.status() if r["job"] == "default.once")
    assert row["state"] == "exited" and sorted(row["exit_codes"]) == [3, 4]
    manager.start_job("once")  # a start runs it again
    wait_for(lambda: len(spawns(recorder, "once")) == 4)
    wait_for(lambda: manager.info("once")["state"] == "exited")


def test_restart_on_failure_restarts_only_a_failure(manager, recorder, tmp_path):
    mark = tmp_path / "ran"
    # fails the first time, succeeds the second
    manager.load({"name": "job", "cmd": "sh", "args": ["-c", f"test -e {mark} && exit 0; touch {mark}; exit 1"],
                  "restart": "on-failure"})
    wait_for(lambda: manager.info("job")["state"] == "exited", message="job exited")
    assert len(spawns(recorder, "job")) == 2 and manager.info("job")["exit_codes"] == [0]
    # a death by a signal zsup did not send is a failure
    manager.load({"name": "sig", "cmd": "sleep", "args": ["300"], "restart": "on-failure"})
    first = manager.info("sig")["processes"][0]["os_pid"]
    os.kill(first, 9)
    wait_for(lambda: len(spawns(recorder, "sig")) == 2, message="restart after SIGKILL")
    # a stop is not
    manager.stop_job("sig")
    assert manager.info("sig")["state"] == "stopped"


def test_bad_restart_and_checks_are_refused():
    base = {"name": "x", "cmd": "true"}
    for options, word in [({"restart": "sometimes"}, "restart"), ({"ready": "ping:1"}, "ready"),
                          ({"ready": "tcp:99999"}, "ready"), ({"ready": "log:("}, "ready"),
                          ({"ready": "http:ftp://x"}, "ready"), ({"health": "log:x"}, "health"),
                          ({"health": "delay:1"}, "health"), ({"ready": "delay:-1"}, "ready"),
                          ({"ready_timeout": 0}, "ready_timeout"), ({"health_retries": 0}, "health_retries"),
                          ({"watchdog_sec": 5}, "watchdog_sec")]:
        with pytest.raises(BadRequest, match=f"^{word}:"):
            JobSpec.from_dict({**base, **options})
    spec = JobSpec.from_dict({**base, "ready": "tcp:localhost:8080", "health": "http:http://h/x",
                              "restart": "on-failure"})
    assert JobSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
    assert spec.to_dict()["ready"] == "tcp:localhost:8080"


# ------------------------------------------------------------------ readiness
@pytest.mark.parametrize("kind", ["tcp", "http", "log", "cmd"])
def test_ready_checks_pass_once_the_server_answers(manager, recorder, scripts, kind):
    port = free_port()
    server = "http" if kind == "http" else "tcp"
    connect = "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['PORT'])))"
    ready = {"tcp": f"tcp:127.0.0.1:{port}", "http": f"http:http://127.0.0.1:{port}/",
             "log": "log:^listen", "cmd": f'cmd:{PYTHON} -c "{connect}"'}[kind]
    manager.load({"name": "srv", "cmd": PYTHON, "args": [str(scripts / "server.py"), server, str(port), "0.6"],
                  "ready": ready, "env": {"PORT": str(port)}})
    assert readiness(manager, "srv") == ["starting"]
    row = next(r for r in manager.status() if r["job"] == "default.srv")
    assert row["ready"] == 0 and row["running"] == 1
    wait_for(lambda: recorder.find("proc.default.srv.ready"), message=f"{kind} ready")
    assert readiness(manager, "srv") == ["ready"]
    # the check did not pass before the server listened
    assert recorder.find("proc.default.srv.ready")[0]["after"] >= 0.5
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_ready_delay(manager, recorder):
    manager.load({"name": "d", "cmd": "sleep", "args": ["300"], "ready": "delay:0.3"})
    assert readiness(manager, "d") == ["starting"]
    wait_for(lambda: readiness(manager, "d") == ["ready"])
    assert recorder.find("proc.default.d.ready")[0]["after"] >= 0.29


def test_without_a_check_a_process_is_ready_at_once(manager):
    manager.load({"name": "plain", "cmd": "sleep", "args": ["300"]})
    assert readiness(manager, "plain") == ["ready"]


def test_notify_ready_status_and_watchdog(manager, recorder, scripts):
    manager.load({"name": "n", "cmd": PYTHON, "args": [str(scripts / "notifier.py"), "0.3", "5"],
                  "ready": "notify", "watchdog_sec": 0.5})
    assert readiness(manager, "n") == ["starting"]
    wait_for(lambda: readiness(manager, "n") == ["ready"], message="READY=1")
    proc = manager.info("n")["processes"][0]
    assert proc["status"] == "serving 3 clients"
    # five beats of 0.1 s, then silence: the watchdog restarts it
    event = wait_for(lambda: recorder.find("proc.default.n.unhealthy"), timeout=10)[0]
    assert "WATCHDOG=1" in event["reason"] and event["pid"] == proc["pid"]
    wait_for(lambda: len(spawns(recorder, "n")) == 2, message="restart after the watchdog")


@pytest.mark.skipif(not shutil.which("systemd-notify"), reason="no systemd-notify")
def test_notify_with_systemd_notify(manager, recorder):
    manager.load({"name": "sd", "cmd": "sh", "args": ["-c", "sleep 0.2; systemd-notify --ready; exec sleep 300"],
                  "ready": "notify"})
    wait_for(lambda: readiness(manager, "sd") == ["ready"], message="systemd-notify --ready")


def test_ready_timeout_is_a_failed_start(manager, recorder):
    port = free_port()  # nothing listens there
    manager.load({"name": "slow", "cmd": "sleep", "args": ["300"], "ready": f"tcp:{port}",
                  "ready_timeout": 0.4, "graceful_timeout": 1})
    event = wait_for(lambda: recorder.find("proc.default.slow.not_ready"), timeout=10)[0]
    assert "not ready after 0.4s" in event["reason"] and f"tcp:{port}" in event["reason"]
    wait_for(lambda: len(spawns(recorder, "slow")) >= 2, message="a new try after the timeout")
    exits = recorder.find("proc.default.slow.exit")
    assert exits[0]["reason"] == "ready_timeout"


def test_ready_timeout_under_flapping_fails_the_job(manager, recorder):
    manager.load({"name": "f", "cmd": "sleep", "args": ["300"], "ready": "delay:100", "ready_timeout": 0.1,
                  "flapping": {"attempts": 2, "window": 10, "retry_in": 0.1, "max_retry": 0}})
    wait_for(lambda: manager.info("f")["state"] == "failed", timeout=10, message="flapping gave up")


# ------------------------------------------------------------------ health
def test_health_failures_in_a_row_restart_the_process(manager, recorder, scripts, tmp_path):
    port = free_port()
    healthy = tmp_path / "healthy"
    healthy.touch()
    manager.load({"name": "web", "cmd": PYTHON,
                  "args": [str(scripts / "server.py"), "http", str(port), "0", str(healthy)],
                  "ready": f"http:http://127.0.0.1:{port}/", "health": f"http:http://127.0.0.1:{port}/",
                  "health_interval": 0.1, "health_timeout": 1, "health_retries": 3})
    wait_for(lambda: readiness(manager, "web") == ["ready"], message="ready")
    first = manager.info("web")["processes"][0]["pid"]
    healthy.unlink()
    event = wait_for(lambda: recorder.find("proc.default.web.unhealthy"), timeout=10)[0]
    assert event["pid"] == first and "3 failed health checks" in event["reason"] and "503" in event["reason"]
    healthy.touch()
    wait_for(lambda: [p for p in manager.info("web")["processes"]
                      if p["pid"] != first and p["readiness"] == "ready"], timeout=10, message="a new ready one")
    assert recorder.find("proc.default.web.exit")[0]["reason"] == "unhealthy"
