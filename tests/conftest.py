"""Shared test helpers: waiting on conditions with a deadline, and cleaning up processes."""

import os
import signal
import sys
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
    from zsup.manager import Manager

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
