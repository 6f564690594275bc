"""zsupd as a container's init: pid 1 of a real PID namespace (`unshare --pid --fork
--mount-proc`, as root), reaping orphans, stopping its jobs on SIGTERM/SIGINT and exiting with
`exit_with`'s status (docs/systemd.md)."""

import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest
from conftest import PYTHON, ROOT, kill_tree, wait_for

# The main job: makes orphans (grandchildren that outlive their parent, then exit: zombies
# of whoever adopted them unless reaped), says so once they are dead, then either exits 7 or
# waits for SIGTERM and exits 42.
MAIN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))
for i in range(5):
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
time.sleep(0.6)
print("orphans dead", flush=True)
if sys.argv[1] == "exit":
    sys.exit(7)
while True:
    time.sleep(1)
"""


def can_unshare():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], timeout=10,
                              capture_output=True).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_pidns = pytest.mark.skipif(not can_unshare(), reason="needs root and unshare --pid (a PID namespace)")


class InitZsupd:
    def __init__(self, tmp_path, mode, args=()):
        script = tmp_path / "main.py"
        script.write_text(MAIN)
        self.state_dir = str(tmp_path / "state")
        config = tmp_path / "zsup.ini"
        config.write_text(f"[zsup]\nexit_with = main\n\n[process:main]\ncmd = {sys.executable}\n"
                          f"args = -u {script} {mode}\n\n[process:other]\ncmd = sleep\nargs = 300\n")
        self.bus = f"ipc://{self.state_dir}/zsupd.sock"
        self.log = open(tmp_path / "zsupd.log", "ab")
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-m", "zsup.cli.zsupd", "-c", str(config),
             "--state-dir", self.state_dir, "-v", *args], stdout=self.log, stderr=self.log, env=env)

    def zsupd(self):
        """zsupd as seen from outside: unshare's child."""
        return wait_for(lambda: (psutil.Process(self.proc.pid).children() or [None])[0],
                        message="zsupd in the namespace")

    def call(self, cmd, **args):
        from zsup.bus.client import Client

        with Client(self.bus, timeout=10) as c:
            return c.call(cmd, **args)

    def wait_ready(self):
        from zsup.errors import Unavailable

        def ready():
            assert self.proc.poll() is None, open(self.log.name).read()[-2000:]
            try:
                return self.call("ping") == "pong"
            except (Unavailable, OSError):
                return False
        wait_for(ready, timeout=20, interval=0.05, message="zsupd to answer in the namespace")

    def output(self, job):
        pids = self.call("pids", name=job)
        return "".join(l["data"] for p in pids for l in self.call("read_output", pid=p)["lines"])

    def stop(self):
        kids = []
        if self.proc.poll() is None:
            kids = [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
            self.proc.kill()  # unshare; then the namespace's pid 1 and so everything in it
            self.proc.wait(10)
        kill_tree(kids)
        self.log.close()


def zombies(root_pid):
    found = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@needs_pidns
def test_pid1_reaps_orphans_and_exits_with_the_jobs_status_on_sigterm(tmp_path):
    z = InitZsupd(tmp_path, "wait")  # no --init: pid 1 is detected
    try:
        z.wait_ready()
        zsupd = z.zsupd()
        assert z.call("get_process", pid=z.call("pids", name="main")[0])["os_pid"] > 1
        wait_for(lambda: "orphans dead" in z.output("main"), timeout=20, message="the orphans to die")
        wait_for(lambda: not zombies(zsupd.pid), timeout=10, message="every orphan reaped")
        assert "init mode (pid 1)" in open(z.log.name).read()
        zsupd.send_signal(signal.SIGTERM)
        assert z.proc.wait(30) == 42, open(z.log.name).read()[-2000:]  # main's status, through unshare
    finally:
        z.stop()


@needs_pidns
def test_init_exits_when_the_exit_with_job_exits(tmp_path):
    z = InitZsupd(tmp_path, "exit", args=["--init"])
    try:
        assert z.proc.wait(30) == 7, open(z.log.name).read()[-2000:]
        assert "default.main exited with status 7: stopping (exit_with)" in open(z.log.name).read()
    finally:
        z.stop()


@needs_pidns
def test_sigint_stops_the_jobs_too(tmp_path):
    z = InitZsupd(tmp_path, "wait", args=["--init"])
    try:
        z.wait_ready()
        # its SIGTERM handler is set once it speaks
        wait_for(lambda: "orphans dead" in z.output("main"), timeout=20, message="main running")
        z.zsupd().send_signal(signal.SIGINT)
        assert z.proc.wait(30) == 42  # main got its stop signal (SIGTERM) and exited 42
    finally:
        z.stop()


def test_exit_with_outside_init_mode(zsupd_factory, tmp_path):
    script = tmp_path / "main.py"
    script.write_text("import sys, time\ntime.sleep(0.3)\nsys.exit(5)\n")
    d = zsupd_factory(f"[zsup]\nexit_with = default.main\n[process:main]\ncmd = {sys.executable}\nargs = {script}\n"
                      "[process:other]\ncmd = sleep\nargs = 300\n")
    other = d.call("get_process", pid=d.call("pids", name="other")[0])["os_pid"]
    assert d.proc.wait(30) == 5
    wait_for(lambda: not psutil.pid_exists(other) or psutil.Process(other).status() == psutil.STATUS_ZOMBIE,
             message="the other job stopped")


def test_exit_with_must_name_a_job():
    from zsup.daemon.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="exit_with"):
        parse_config("[zsup]\nexit_with = a.b.c\n", "x.ini")
