"""cgroup v2 per job (issue 16): detection and fallback on this machine, and the real path on
a cgroup2 file system mounted for the test (as root), where placement and cgroup.kill work
without controllers (memory.max, cpu.max and pids.max need a delegated hierarchy: see
docs/config.md)."""

import os
import subprocess
import tempfile

import pytest
from conftest import alive, wait_for

from zsup.core import cgroup
from zsup.core.jobspec import JobSpec
from zsup.errors import BadRequest


def test_detection_says_why_not_here():
    found = cgroup.detect()
    if found.active:  # a delegating host: the info names the cgroup zsupd would use
        assert found.info()["active"] is True and os.path.isdir(found.info()["path"])
        return
    assert found.info() == {"active": False, "path": None, "reason": found.reason}
    assert found.reason  # e.g. "cgroup v2 at /sys/fs/cgroup/unified offers no memory, cpu, pids controller ..."
    # what the daemon uses then: process groups, every method a no-op
    assert found.stats("default.x") is None and found.release(None) is True


def test_zsupd_version_says_whether_cgroups_are_active(zsupd_factory):
    d = zsupd_factory("")
    info = d.call("version")["cgroups"]
    assert info == cgroup.detect().info() or info["active"]
    if not info["active"]:
        assert "cgroups: inactive: " + info["reason"] in open(d.log_path).read()


def test_cgroup_keys_checked_at_the_door():
    spec = JobSpec.from_dict({"name": "a", "cmd": "true", "cgroup_memory_max": "1G", "cgroup_cpu_max": "150%",
                              "cgroup_pids_max": 64})
    assert (spec.cgroup_memory_max, spec.cgroup_cpu_max, spec.cgroup_pids_max) == (1 << 30, 150.0, 64)
    for key, value in [("cgroup_memory_max", "1k"), ("cgroup_cpu_max", "0.5"), ("cgroup_pids_max", 0),
                       ("cgroup_cpu_max", "lots")]:
        with pytest.raises(BadRequest) as info:
            JobSpec.from_dict({"name": "a", "cmd": "true", key: value})
        assert str(info.value).startswith(key + ": ")


@pytest.fixture
def cgroup2_base():
    """A fresh cgroup under a cgroup2 file system mounted for this test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting cgroup2 needs root")
    mnt = tempfile.mkdtemp(prefix="zsup-cg2-")
    if subprocess.run(["mount", "-t", "cgroup2", "none", mnt], capture_output=True).returncode != 0:
        os.rmdir(mnt)
        pytest.skip("cannot mount cgroup2 here")
    base = os.path.join(mnt, f"zsup-test-{os.getpid()}")
    try:
        os.mkdir(base)
        yield base
    finally:
        for root, dirs, _ in os.walk(base, topdown=False):
            for path in [os.path.join(root, name) for name in dirs]:
                with open(os.path.join(path, "cgroup.kill"), "w") as f:
                    f.write("1")
                wait_for(lambda p=path: _try_rmdir(p), timeout=5)
        wait_for(lambda: _try_rmdir(base), timeout=5)
        subprocess.run(["umount", mnt], check=False)
        os.rmdir(mnt)


def _try_rmdir(path):
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def test_detection_of_a_writable_hierarchy():
    # without controllers required, the v2 mount this host has is found and writable (as root)
    found = cgroup.detect(needed=())
    if not found.active:
        pytest.skip(found.reason)
    assert os.path.isfile(os.path.join(found.base, "cgroup.procs"))


def test_a_setsid_grandchild_is_placed_and_stopped_with_its_process(manager, recorder, cgroup2_base):
    manager.cgroups = cgroup.Cgroups(cgroup2_base, "test")
    # the grandchild leaves the process group (setsid) and ignores SIGTERM, as does the shell
    script = "trap '' TERM; sleep 0.2; setsid sleep 300 & echo $!; wait"  # placed before it forks
    manager.load({"name": "tree", "cmd": "sh", "args": ["-c", script], "graceful_timeout": 0.5})
    pid = manager.info("tree")["pids"][0]
    wait_for(lambda: recorder.output(pid).strip())
    grandchild = int(recorder.output(pid).split()[0])
    leaf = os.path.join(cgroup2_base, "job-default.tree", f"p-{pid}")
    members = wait_for(lambda: (lambda m: m if len(m) == 2 else None)(
        open(os.path.join(leaf, "cgroup.procs")).read().split()))
    assert sorted(int(m) for m in members) == sorted([manager.get_process(pid)["os_pid"], grandchild])
    manager.stop_job("tree")
    # SIGTERM ignored: SIGKILL after 0.5 s, to the group and, through cgroup.kill, the grandchild
    wait_for(lambda: not alive(grandchild), timeout=10, message="the setsid grandchild killed")
    wait_for(lambda: not os.path.exists(leaf), timeout=10, message="the process's cgroup removed")
    assert wait_for(lambda: recorder.find("tree.exit"))[0]["term_signal"] == 9


def test_leftovers_of_an_exited_process_are_stopped(manager, recorder, cgroup2_base):
    manager.cgroups = cgroup.Cgroups(cgroup2_base, "test")
    manager.load({"name": "orphan", "cmd": "sh", "args": ["-c", "sleep 0.2; setsid sleep 300 & echo $!"],
                  "restart": "never", "graceful_timeout": 5})
    wait_for(lambda: recorder.find("orphan.reap"))
    pid = recorder.find("orphan.spawn")[0]["pid"]
    grandchild = int(recorder.output(pid).split()[0])
    wait_for(lambda: not alive(grandchild), timeout=10, message="the grandchild stopped (SIGTERM)")
    wait_for(lambda: not os.path.exists(os.path.join(cgroup2_base, "job-default.orphan")), timeout=10)
    stats = manager.cgroups.stats("default.orphan")
    assert stats is None  # no memory controller on this mount: no memory.current
