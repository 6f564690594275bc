"""Per-job limits (issue 16): rlimits, nice, umask, oom_score_adj, seen by real processes in
/proc/self, and refused at the door when wrong."""

import os

import pytest
from conftest import wait_for

from zsup.core import spawner
from zsup.core.jobspec import JobSpec
from zsup.core.process import Process, SpawnError
from zsup.daemon.config import ConfigError, parse_config
from zsup.errors import BadRequest

# prints the lines the tests look at: limits, niceness (field 19 of stat), umask, oom score
SHOW = ("grep -E 'open files|processes|core file|address space|cpu time|file size' /proc/self/limits; "
        "echo nice=$(cut -d' ' -f19 /proc/self/stat); grep Umask /proc/self/status; "
        "echo oom=$(cat /proc/self/oom_score_adj)")


def run_show(manager, recorder, **limits):
    manager.load({"name": "show", "cmd": "sh", "args": ["-c", SHOW], "numprocesses": 0, **limits})
    pid = manager.commit("show")
    wait_for(lambda: recorder.find(".show.reap"))
    return recorder.output(pid).decode()


def limit_line(out, label):
    line = next(line for line in out.splitlines() if line.startswith(label))
    return line[len(label):].split()[:2]


@pytest.mark.skipif(not spawner.available(), reason="the C spawn helper is not built")
def test_limits_reach_the_program(manager, recorder):
    out = run_show(manager, recorder, rlimit_nofile=123, rlimit_nproc="500", rlimit_core="1M",
                   rlimit_as="2G", rlimit_cpu=50, rlimit_fsize="unlimited", nice=7, umask="027",
                   oom_score_adj=300)
    assert limit_line(out, "Max open files") == ["123", "123"]
    assert limit_line(out, "Max processes") == ["500", "500"]
    assert limit_line(out, "Max core file size") == [str(1 << 20)] * 2
    assert limit_line(out, "Max address space") == [str(2 << 30)] * 2
    assert limit_line(out, "Max cpu time") == ["50", "50"]
    assert limit_line(out, "Max file size") == ["unlimited", "unlimited"]
    assert "nice=7" in out and "Umask:\t0027" in out and "oom=300" in out


@pytest.mark.skipif(not spawner.available(), reason="the C spawn helper is not built")
def test_no_limit_keeps_zsupd_values(manager, recorder):
    out = run_show(manager, recorder)
    mask = os.umask(0)
    os.umask(mask)
    assert f"Umask:\t{mask:04o}" in out
    assert f"nice={os.getpriority(os.PRIO_PROCESS, 0)}" in out
    assert limit_line(out, "Max open files") == [str(v) for v in __import__("resource").getrlimit(7)]


def test_limit_checked_at_the_door():
    base = {"name": "a", "cmd": "true"}
    for key, value, words in [("rlimit_nofile", "many", "expected a number"),
                              ("rlimit_nofile", "unlimited", "no unlimited open files"),
                              ("rlimit_as", "1X", "expected a size"), ("rlimit_cpu", -1, "between 0"),
                              ("nice", 20, "between -20 and 19"), ("nice", True, "integer"),
                              ("umask", "089", "octal"), ("umask", 18, "octal string"),
                              ("umask", "1777", "between 000 and 777"),
                              ("oom_score_adj", 1001, "between -1000 and 1000")]:
        with pytest.raises(BadRequest, match=f"^{key}: .*{words}"):
            JobSpec.from_dict({**base, key: value})


def test_limits_in_the_config_file():
    cfg = parse_config("[process:web]\ncmd = sleep 1\nrlimit_nofile = 64\nrlimit_as = 512M\numask = 077\n"
                       "nice = 3\noom_score_adj = 10\n")
    spec = cfg.jobs[0]
    got = (spec.rlimit_nofile, spec.rlimit_as, spec.umask, spec.nice, spec.oom_score_adj)
    assert got == (64, 512 << 20, "077", 3, 10)
    assert JobSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match=r"\[process:web\] umask: .*octal"):
        parse_config("[process:web]\ncmd = sleep 1\numask = 999\n")


def test_without_the_helper_a_job_with_limits_is_refused(monkeypatch):
    monkeypatch.setattr(spawner, "_spawn", None)  # as where the C part was not built
    proc = Process(1, JobSpec.from_dict({"name": "a", "cmd": "true", "nice": 5}))
    with pytest.raises(SpawnError, match="C spawn helper"):
        proc.spawn()
