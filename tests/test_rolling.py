"""Rolling restarts: a job of real TCP servers sharing a port (SO_REUSEPORT) keeps answering a
client that connects all through the roll, and a failed roll leaves the old ones serving."""

import socket
import textwrap
import threading
import time

import pytest
from conftest import PYTHON, wait_for
from test_lifecycle import free_port
from test_zsupctl import zsupctl

# Listens on PORT (SO_REUSEPORT) after DELAY seconds and prints "listening"; answers each
# connection with its pid. ARG "hang" never listens (its readiness fails). On SIGTERM it
# accepts what is queued, then closes: a graceful server's drain.
SERVER = textwrap.dedent("""
    import os, select, signal, socket, sys, time
    port, delay = int(sys.argv[1]), sys.argv[2]
    if delay == "hang":
        time.sleep(300)
    time.sleep(float(delay))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port)); s.listen(128)
    r, w = os.pipe()
    signal.signal(signal.SIGTERM, lambda *a: os.write(w, b"x"))
    print("listening", flush=True)
    def answer(c):
        c.sendall(b"%d\\n" % os.getpid()); c.close()
    while True:
        ready, _, _ = select.select([s, r], [], [])
        if s in ready:
            answer(s.accept()[0])
        if r in ready:
            s.setblocking(False)
            while True:
                try:
                    answer(s.accept()[0])
                except BlockingIOError:
                    break
            s.close()
            sys.exit(0)
""")


class Client(threading.Thread):
    """Connects again and again; every connection must be answered with a pid."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.running = port, True
        self.answers, self.errors = [], []

    def run(self):
        while self.running:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
                    data = c.makefile().readline()
                if not data:
                    raise ConnectionError("closed without an answer")
                self.answers.append(int(data))
            except (OSError, ValueError) as exc:
                self.errors.append(repr(exc))
            time.sleep(0.01)

    def stop(self):
        self.running = False
        self.join(10)


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "server.py"
    path.write_text(SERVER)
    return str(path)


def job(server, port, delay="0.3", **extra):
    return {"name": "web", "cmd": PYTHON, "args": [server, str(port), delay], "numprocesses": 3,
            "ready": "log:^listening", "ready_timeout": 10, "graceful_timeout": 5, **extra}


def live_os_pids(manager):
    return {p["os_pid"] for p in manager.info("web")["processes"] if p["state"] == "running"}


def test_rolling_restart_loses_no_connection(manager, recorder, server):
    port = free_port()
    manager.load(job(server, port))
    wait_for(lambda: manager.info("web")["ready"] == 3, message="three servers ready")
    old = live_os_pids(manager)
    client = Client(port)
    client.start()
    try:
        wait_for(lambda: set(client.answers) == old, message="the client reaches every old server")
        info = manager.rolling_restart("web")
        assert info["roll"]["phase"] == "rolling" and info["roll"]["total"] == 3
        done = wait_for(lambda: [m for m in recorder.find("job.default.web.roll") if m["phase"] == "done"],
                        timeout=30, message="the roll to end")[0]
        assert done["replaced"] == 3
        new = live_os_pids(manager)
        assert len(new) == 3 and not new & old
        seen = len(client.answers)
        # the last old one may still answer what was queued to it while it drains
        wait_for(lambda: new <= set(client.answers[seen:]), message="the client reaches every new server")
        assert set(client.answers[seen:]) <= new | old
    finally:
        client.stop()
    assert client.errors == []
    steps = [m for m in recorder.find("job.default.web.roll") if m["phase"] == "step"]
    assert [m["replaced"] for m in steps] == [1, 2, 3]
    # the old ones went as rolled out, not as a plain restart or a scale-down
    assert all(m["reason"] == "rolling" for m in recorder.find("proc.default.web.stop_pid"))
    assert manager.info("web")["roll"]["phase"] == "done"


def test_failed_roll_leaves_the_old_processes_serving(manager, recorder, server):
    port = free_port()
    manager.load(job(server, port, ready_timeout=1.5))
    wait_for(lambda: manager.info("web")["ready"] == 3, message="three servers ready")
    old = live_os_pids(manager)
    client = Client(port)
    client.start()
    try:
        # an update to a broken version, rolled: its first new process never gets ready
        manager.update(job(server, port, delay="hang", ready_timeout=1.5, restart_mode="rolling"))
        failed = wait_for(lambda: [m for m in recorder.find("job.default.web.roll") if m["phase"] == "failed"],
                          timeout=20, message="the roll to fail")[0]
        assert "not ready after 1.5s" in failed["reason"] and failed["replaced"] == 0
        info = manager.info("web")
        assert info["roll"]["phase"] == "failed" and "not ready" in info["roll"]["reason"]
        assert info["config"]["args"][2] == "0.3"  # the old spec is back
        wait_for(lambda: live_os_pids(manager) == old, message="only the old servers")
        seen = len(client.answers)
        wait_for(lambda: len(client.answers) > seen + 10, message="the old ones still answer")
    finally:
        client.stop()
    assert client.errors == [] and set(client.answers) == old


def test_zsupctl_restart_rolling(zsupd_factory):
    d = zsupd_factory()
    d.call("load", config={"name": "w", "cmd": "sleep 300", "numprocesses": 2, "ready": "delay:0.2"})
    wait_for(lambda: d.call("info", name="w")["ready"] == 2)
    before = set(d.call("info", name="w")["pids"])
    out = zsupctl(d, "restart", "--rolling", "w").stdout
    assert "rolling restart of default.w: done, 2/2 replaced" in out
    after = set(d.call("info", name="w")["pids"])
    assert len(after) == 2 and not after & before
    assert "restarted default.w" in zsupctl(d, "restart", "w").stdout
    with pytest.raises(Exception, match="max_surge"):
        d.call("rolling_restart", name="w", max_surge=0)


def test_zsupctl_restart_rolling_of_a_job_with_nothing_to_roll_says_it_restarted(zsupd_factory):
    d = zsupd_factory()
    d.call("load", config={"name": "w", "cmd": "sleep 300", "numprocesses": 1}, start=False)
    out = zsupctl(d, "restart", "--rolling", "w").stdout
    assert out.strip() == "restarted default.w (not rolling: it had no running processes to replace)"
