"""Hooks around a process's life, run for real: order, env, output under the label `hook`,
a failing before_start failing the spawn, and hook_timeout."""

import pytest
from conftest import wait_for

from zsup.core.jobspec import JobSpec
from zsup.core.manager import Manager
from zsup.errors import BadRequest


class LogLines:
    """What the job's log would get: (job, label, data) per write."""

    def __init__(self):
        self.writes = []

    def write(self, job, label, spec, pid, os_pid, seq, data, lines=None):
        self.writes.append((job, label, data))


@pytest.fixture
def logged():
    log = LogLines()
    m = Manager(log_writer=log)
    m.start()
    try:
        yield m, log
    finally:
        m.stop(timeout=10)


def test_hooks_run_in_order_with_their_env(logged, tmp_path):
    manager, log = logged
    trace = tmp_path / "trace"
    hook = f'echo "$ZSUP_HOOK pid=$ZSUP_PID code=$ZSUP_EXIT_CODE" >> {trace}; echo "said $ZSUP_HOOK"'
    # the process notes, when it gets its stop signal, what the trace holds by then
    manager.load({"name": "svc", "cmd": "sh",
                  "args": ["-c", f"trap 'echo term >> {trace}; exit 0' TERM; while :; do sleep 0.05; done"],
                  "ready": "delay:0.2", "before_start": hook, "after_start": hook, "before_stop": hook,
                  "after_stop": hook})
    wait_for(lambda: trace.exists() and "after_start" in trace.read_text(), message="after_start")
    pid = manager.info("svc")["processes"][0]["pid"]
    manager.stop_job("svc")
    wait_for(lambda: "after_stop" in trace.read_text(), message="after_stop")
    lines = trace.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["before_start", "after_start", "before_stop", "term",
                                                   "after_stop"]
    assert lines[0] == "before_start pid=0 code=" and lines[1] == f"after_start pid={pid} code="
    assert lines[4] == f"after_stop pid={pid} code=0"
    # the hook's output reaches the log a moment after its trace line
    hooks = lambda: [(label, data) for job, label, data in list(log.writes) if label == "hook"]
    wait_for(lambda: ("hook", b"said after_stop\n") in hooks(), message="after_stop's output logged")
    assert ("hook", b"said before_start\n") in hooks()


def test_a_failing_before_start_fails_the_spawn(manager, recorder):
    manager.load({"name": "guarded", "cmd": "sleep", "args": ["300"], "before_start": "echo no db >&2; exit 3"})
    error = wait_for(lambda: recorder.find("proc.default.guarded.spawn_error"))[0]["error"]
    assert error == "before_start: exited with 3"
    wait_for(lambda: manager.info("guarded")["state"] == "failing")
    assert manager.info("guarded")["last_error"] == "before_start: exited with 3"
    assert manager.info("guarded")["running"] == 0 and not recorder.find("proc.default.guarded.spawn")
    out = b"".join(d for t, m, d in recorder.events if t.startswith("io.default.guarded.") and m["label"] == "hook")
    assert b"no db" in out


def test_hook_timeout(manager, recorder):
    manager.load({"name": "slow", "cmd": "sleep", "args": ["300"], "before_start": "sleep 30",
                  "hook_timeout": 0.3, "restart": "never"})
    error = wait_for(lambda: recorder.find("proc.default.slow.spawn_error"), timeout=10)[0]["error"]
    assert error == "before_start: timed out after 0.3s"
    wait_for(lambda: manager.info("slow")["state"] == "exited")


def test_bad_hooks_are_refused():
    with pytest.raises(BadRequest, match="^before_stop:"):
        JobSpec.from_dict({"name": "x", "cmd": "true", "before_stop": ["a"]})
    with pytest.raises(BadRequest, match="^hook_timeout:"):
        JobSpec.from_dict({"name": "x", "cmd": "true", "hook_timeout": -1})
