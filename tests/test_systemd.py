"""systemd: the notify protocol with a real NOTIFY_SOCKET listener around a real zsupd, and the
unit file checked by systemd-analyze (docs/systemd.md)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, wait_for

from zsup.daemon.notify import Notifier, socket_address, watchdog_interval

PRINT_ENV = ("import os, sys, time\n"
             "print('NOTIFY_SOCKET=%s' % os.environ.get('NOTIFY_SOCKET'), flush=True)\n"
             "time.sleep(300)\n")


class Listener:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages = []

    def next(self, timeout=15.0):
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if line)
        self.messages.append(fields)
        return fields

    def until(self, key, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            fields = self.next(max(0.01, deadline - time.monotonic()))
            if key in fields:
                return fields

    def close(self):
        self.sock.close()


def job_config(cmd_args):
    return (f"[process:app]\ncmd = {sys.executable}\nargs = -u -c {cmd_args!r}\n")


@pytest.fixture
def abstract_listener():
    name = f"zsup-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    listener = Listener("\0" + name)
    try:
        yield listener, "@" + name
    finally:
        listener.close()


def test_notify_protocol_around_a_real_zsupd(zsupd_factory, tmp_path, monkeypatch, abstract_listener):
    listener, address = abstract_listener
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "300000")  # a ping every 0.15 s
    script = tmp_path / "env.py"
    script.write_text(PRINT_ENV)
    d = zsupd_factory(f"[process:app]\ncmd = {sys.executable}\nargs = -u {script}\n", start=False)
    d.start(wait=False)

    ready = listener.until("READY")
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("1 jobs, ")
    assert d.call("ping") == "pong"  # READY came once the bus listens
    # the watchdog pings keep coming, and the status line follows the jobs
    assert listener.until("WATCHDOG")["WATCHDOG"] == "1"
    assert listener.until("WATCHDOG")["WATCHDOG"] == "1"
    wait_for(lambda: "1/1 processes running" in (listener.next().get("STATUS") or ready["STATUS"]),
             message="status with the running process")
    # the job does not inherit the notify socket
    pid = d.call("pids", name="app")[0]
    out = wait_for(lambda: d.call("read_output", pid=pid)["lines"], message="the job's output")
    assert out[0]["data"] == "NOTIFY_SOCKET=None\n"

    # SIGHUP: RELOADING=1, then READY=1 again
    d.proc.send_signal(signal.SIGHUP)
    reloading = listener.until("RELOADING")
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert listener.until("READY")["READY"] == "1"

    # SIGTERM: STOPPING=1, then zsupd exits
    d.proc.terminate()
    assert listener.until("STOPPING")["STOPPING"] == "1"
    assert d.proc.wait(20) == 0


def test_notify_to_a_socket_file(tmp_path):
    path = str(tmp_path / "notify")
    if len(path) > 100:
        pytest.skip("tmp path too long for a unix socket")
    listener = Listener(path)
    try:
        environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
        notifier = Notifier(environ)
        assert environ == {}  # taken out: children do not inherit them
        assert notifier.watchdog == 1.0
        notifier.ready("3 jobs")
        assert listener.next() == {"READY": "1", "STATUS": "3 jobs"}
        notifier.stopping()
        assert listener.next() == {"STOPPING": "1", "STATUS": "stopping"}
        notifier.stop()
    finally:
        listener.close()


def test_notify_settings_read_as_systemd_writes_them():
    assert socket_address("@abc") == b"\0abc"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("") is None and socket_address("vsock:2:1234") is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000"}) == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None  # not ours
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert not Notifier({}).enabled and Notifier({}).send(READY=1) is False
    # a listener that is gone: the send fails quietly
    assert Notifier({"NOTIFY_SOCKET": "@zsup-nobody-listens-here"}).send(READY=1) is False


def _verify(unit_path):
    """systemd-analyze verify: its exit status, and the complaints about the unit itself."""
    run = subprocess.run(["systemd-analyze", "verify", unit_path], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(unit_path))
    complaints = [line for line in (run.stdout + run.stderr).splitlines() if "zsupd.service" in line]
    return run.returncode, complaints


def test_unit_installed_by_make_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    stage = tmp_path / "stage"
    zsupd = os.path.join(os.path.dirname(sys.executable), "zsupd")
    if not os.access(zsupd, os.X_OK):
        pytest.skip(f"no zsupd entry point next to {sys.executable}")
    subprocess.run(["make", "-s", "-C", ROOT, "install-service", f"DESTDIR={stage}", f"ZSUPD={zsupd}"],
                   check=True, capture_output=True, timeout=60)
    unit = stage / "etc" / "systemd" / "system" / "zsupd.service"
    text = unit.read_text()
    assert f"ExecStart={zsupd} -c /etc/zsup/zsup.ini" in text
    for line in ("Type=notify", "Delegate=yes", "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=mixed"):
        assert line in text.splitlines()
    assert (stage / "etc" / "zsup" / "zsup.ini").read_text().startswith("[zsup]")
    assert _verify(str(unit)) == (0, [])

    # the check can fail: a misspelt type and a missing program are reported
    bad = tmp_path / "bad" / "zsupd.service"
    bad.parent.mkdir()
    bad.write_text(text.replace("Type=notify", "Type=notfy").replace(zsupd, "/nonexistent/zsupd"))
    status, complaints = _verify(str(bad))
    assert status != 0 or complaints
    assert any("notfy" in line for line in complaints), complaints
