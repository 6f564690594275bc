"""A rolling restart's new processes start like every other spawn: `before_start` first (once
per new process), and a failing `before_start` fails the roll, the old servers still serving."""

from conftest import wait_for
from test_lifecycle import free_port
from test_rolling import Client, job, live_os_pids, server  # noqa: F401 (a fixture)

from zsup.cli.zsupctl.format import job_state


def hook_runs(recorder, hook="before_start"):
    return [m for m in recorder.find("proc.default.web.hook") if m["hook"] == hook]


def test_a_roll_runs_before_start_and_after_start_for_each_new_process(manager, recorder, server,  # noqa: F811
                                                                       tmp_path):
    port, marker = free_port(), tmp_path / "marker"
    manager.load(job(server, port, before_start=f"echo start >> {marker}",
                     after_start=f"echo ready $ZSUP_PID >> {marker}"))
    wait_for(lambda: manager.info("web")["ready"] == 3, message="three servers ready")
    wait_for(lambda: len(hook_runs(recorder, "after_start")) == 3, message="three after_start hooks")
    assert marker.read_text().count("start\n") == 3
    old = live_os_pids(manager)
    manager.rolling_restart("web")
    done = wait_for(lambda: [m for m in recorder.find("job.default.web.roll") if m["phase"] == "done"],
                    timeout=30, message="the roll to end")[0]
    assert done["replaced"] == 3
    new = live_os_pids(manager)
    assert len(new) == 3 and not new & old
    wait_for(lambda: len(hook_runs(recorder, "after_start")) == 6, message="after_start of the new ones")
    lines = marker.read_text().splitlines()
    assert lines.count("start") == 6  # one before_start per process, old and new
    new_pids = {p["pid"] for p in manager.info("web")["processes"] if p["state"] == "running"}
    assert {int(line.split()[1]) for line in lines[-6:] if line.startswith("ready")} >= new_pids
    assert all(m["error"] is None for m in hook_runs(recorder))


def test_a_failing_before_start_rolls_back(manager, recorder, server, tmp_path):  # noqa: F811
    port, broken = free_port(), tmp_path / "broken"
    manager.load(job(server, port, numprocesses=2,
                     before_start=f"if [ -e {broken} ]; then echo migration failed; exit 4; fi"))
    wait_for(lambda: manager.info("web")["ready"] == 2, message="two servers ready")
    old = live_os_pids(manager)
    spawns = len(recorder.find("proc.default.web.spawn"))
    client = Client(port)
    client.start()
    try:
        wait_for(lambda: set(client.answers) == old, message="the client reaches both servers")
        broken.write_text("")
        manager.rolling_restart("web")
        failed = wait_for(lambda: [m for m in recorder.find("job.default.web.roll") if m["phase"] == "failed"],
                          timeout=20, message="the roll to fail")[0]
        assert failed["reason"] == "spawn failed: before_start: exited with 4" and failed["replaced"] == 0
        info = manager.info("web")
        assert info["roll"]["phase"] == "failed" and "before_start: exited with 4" in info["roll"]["reason"]
        assert info["state"] == "running"  # the old ones serve: the roll failed, not the job
        row = next(r for r in manager.status() if r["job"] == "default.web")
        assert job_state(row) == ("ready, rolling restart failed 0/2: spawn failed: before_start: "
                                  "exited with 4")  # zsupctl status's STATE
        errors = recorder.find("proc.default.web.spawn_error")
        assert [m["error"] for m in errors] == ["before_start: exited with 4"]
        seen = len(client.answers)
        wait_for(lambda: len(client.answers) > seen + 10, message="the old ones still answer")
        assert live_os_pids(manager) == old
        assert len(recorder.find("proc.default.web.spawn")) == spawns  # no new process ever ran
    finally:
        client.stop()
    assert client.errors == [] and set(client.answers) == old
    broken.unlink()  # fixed: the next roll goes through
    manager.rolling_restart("web")
    wait_for(lambda: manager.info("web")["roll"]["phase"] == "done", timeout=30, message="a roll that works")
    assert not live_os_pids(manager) & old
