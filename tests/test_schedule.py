"""Scheduled jobs (`schedule = CRON`), with cronsim's six-field form (seconds first) so a test
sees several runs in a few seconds."""

import time

import pytest
from conftest import wait_for

from zsup.core.jobspec import JobSpec
from zsup.errors import BadRequest


def test_a_scheduled_job_runs_when_due_and_waits_again(manager, recorder):
    manager.load({"name": "tick", "cmd": "sh", "args": ["-c", "exit 2"], "schedule": "*/1 * * * * *"})
    info = manager.info("tick")
    assert info["state"] == "scheduled" and info["running"] == 0 and info["next_run"] > time.time() - 0.01
    assert info["config"]["restart"] == "never"
    wait_for(lambda: len(recorder.find("job.default.tick.run")) >= 2, timeout=10, message="two runs")
    wait_for(lambda: manager.info("tick")["state"] == "scheduled" and manager.info("tick")["exit_codes"] == [2])
    info = manager.info("tick")
    assert info["last_run"] and info["next_run"] > info["last_run"]
    row = next(r for r in manager.status() if r["job"] == "default.tick")
    assert row["schedule"] == "*/1 * * * * *" and row["next_run"] and row["last_run"]
    runs = len(recorder.find("job.default.tick.run"))
    manager.stop_job("tick")  # a stop cancels the schedule
    assert manager.info("tick")["next_run"] is None
    time.sleep(1.5)
    assert len(recorder.find("job.default.tick.run")) == runs


def test_an_overlapping_run_is_skipped(manager, recorder):
    manager.load({"name": "long", "cmd": "sleep", "args": ["2.5"], "schedule": "* * * * * *"})
    skipped = wait_for(lambda: recorder.find("job.default.long.run_skipped"), timeout=10, message="a skip")[0]
    assert skipped["reason"] == "the previous run is still going"
    assert len(recorder.find("proc.default.long.spawn")) == 1


def test_bad_schedules_are_refused():
    for value in ("every day", "61 * * * *", "* * *"):
        with pytest.raises(BadRequest, match="^schedule:"):
            JobSpec.from_dict({"name": "x", "cmd": "true", "schedule": value})
    with pytest.raises(BadRequest, match="^restart: a job with a schedule"):
        JobSpec.from_dict({"name": "x", "cmd": "true", "schedule": "* * * * *", "restart": "always"})
    spec = JobSpec.from_dict({"name": "x", "cmd": "true", "schedule": "0  3 * * 1"})
    assert spec.schedule == "0 3 * * 1" and JobSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
