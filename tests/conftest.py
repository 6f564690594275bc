"""Shared test helpers: waiting on conditions with a deadline, and cleaning up processes."""

import http.client
import os
import signal
import socket
import sys
import threading
import time

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def wait_for(condition, timeout=10.0, interval=0.005, message="condition"):
    """Poll until condition() is truthy; return its value or fail after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def readline_within(stream, timeout=15.0, message="a line"):
    """stream.readline(), failing with a clear message (not a hang) if no line comes in time.

    The read runs in a daemon thread: on timeout it stays blocked until the caller kills the
    process at the other end of the pipe (EOF ends it).
    """
    result = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise AssertionError(f"timed out after {timeout}s waiting for {message}")
    return result[0]


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client's connection over a unix socket (for `bind = unix:/path` endpoints)."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def mount(prefix, app):
    """A WSGI app serving `app` under `prefix`, as the gateway mounts /tasks and /agent."""

    def dispatch(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            environ = dict(environ, SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + prefix,
                           PATH_INFO=path[len(prefix):])
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here"]

    return dispatch


def close_ws_clients(clients):
    """Close ws4py clients a test made and wait for their threads, however the test ended."""
    for ws in clients:
        try:
            ws.close()
        except Exception:
            pass
    for ws in clients:
        try:
            wait_for(lambda: ws.terminated, timeout=5, message="websocket client closed")
        except AssertionError:
            ws.close_connection()
        if ws._th.is_alive():
            ws._th.join(5)


def alive(os_pid):
    try:
        proc = psutil.Process(os_pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_tree(os_pids):
    for pid in os_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def manager():
    from zsup.core.manager import Manager

    m = Manager(stats_interval=0.1)
    m.start()
    spawned = []
    m.events.subscribe("proc.", lambda t, msg, d: t.endswith(".spawn") and spawned.append(msg["os_pid"]))
    try:
        yield m
    finally:
        m.stop(timeout=10)
        # whatever a failing test left behind (detached children included) goes too
        kill_tree(spawned)


class Recorder:
    """Collects events from an EventEmitter for assertions."""

    def __init__(self, emitter, pattern="."):
        self.events = []
        emitter.subscribe(pattern, self)

    def __call__(self, topic, msg, data):
        self.events.append((topic, msg, data))

    def topics(self, prefix=""):
        return [t for t, _, _ in list(self.events) if t.startswith(prefix)]

    def find(self, topic_suffix):
        return [m for t, m, _ in list(self.events) if t.endswith(topic_suffix)]

    def output(self, pid, label="stdout"):
        return b"".join(d for t, m, d in list(self.events) if t.startswith("io.") and m["pid"] == pid
                        and m["label"] == label)


@pytest.fixture
def recorder(manager):
    return Recorder(manager.events)


class Zsupd:
    """A real zsupd in a subprocess, with its own state dir and config."""

    def __init__(self, tmp_path, config_text="", args=()):
        os.makedirs(tmp_path, exist_ok=True)
        self.state_dir = str(tmp_path / "state")
        self.config_path = str(tmp_path / "zsup.ini")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.args = list(args)
        self.proc = None
        self.log_path = str(tmp_path / "zsupd.log")
        self.bus = f"ipc://{self.state_dir}/zsupd.sock"
        self.pub = f"ipc://{self.state_dir}/zsupd-pub.sock"

    def start(self, wait=True):
        import subprocess

        env = dict(os.environ, PYTHONPATH=ROOT, ZSUP_STATE_DIR=self.state_dir)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.zsupd", "-c", self.config_path, "--state-dir",
                                      self.state_dir, "-v", *self.args], stdout=self._log, stderr=self._log, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=15):
        from zsup.bus.client import Client
        from zsup.errors import Unavailable

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"zsupd exited with {self.proc.returncode}: {self.log()}")
            try:
                with Client(self.bus, timeout=0.5) as c:
                    return c.call("ping") == "pong"
            except Unavailable:
                return False

        wait_for(ready, timeout=timeout, interval=0.05, message="zsupd to answer ping")

    def client(self, timeout=10):
        from zsup.bus.client import Client

        return Client(self.bus, timeout=timeout)

    def call(self, cmd, **args):
        with self.client() as c:
            return c.call(cmd, **args)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def children(self):
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout=20):
        """SIGTERM and wait; SIGKILL zsupd and anything it left if that fails."""
        if self.proc is None:
            return
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        kill_tree(kids)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def zsupd_factory(tmp_path):
    """Start real zsupd daemons: `zsupd_factory(config_text, args=())`; all stopped at the end."""
    started = []

    def make(config_text="", args=(), start=True, path=None):
        d = Zsupd(path or tmp_path, config_text, args)
        started.append(d)
        return d.start() if start else d

    try:
        yield make
    finally:
        for d in started:
            d.stop()
