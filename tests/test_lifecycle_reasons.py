"""Why a job is `failing` when zsup itself stopped its processes for a failed check: the check's
reason, not the signal zsup sent (`exits at once (signal 15)` said nothing useful)."""

from conftest import wait_for
from test_lifecycle import free_port


def test_a_ready_timeout_is_the_jobs_last_error(manager):
    port = free_port()  # nothing listens there
    manager.load({"name": "slow", "cmd": "sleep", "args": ["300"], "ready": f"tcp:{port}",
                  "ready_timeout": 0.3})
    error = wait_for(lambda: manager.info("slow")["last_error"], timeout=10, message="a last_error")
    assert error.startswith(f"not ready after 0.3s (tcp:{port}: "), error
    assert error.count(f"tcp:{port}") == 1  # the probe's error names its check: not twice
    assert manager.info("slow")["state"] == "failing"


def test_failed_health_checks_are_the_jobs_last_error(manager):
    port = free_port()
    manager.load({"name": "sick", "cmd": "sleep", "args": ["300"], "health": f"tcp:127.0.0.1:{port}",
                  "health_interval": 0.2, "health_retries": 2, "health_timeout": 1})
    error = wait_for(lambda: manager.info("sick")["last_error"], timeout=10, message="a last_error")
    assert error.startswith(f"unhealthy: 2 failed health checks: tcp:127.0.0.1:{port}"), error


def test_zsupctl_status_says_what_a_job_waits_for(manager):
    from zsup.cli.zsupctl.format import job_state

    manager.load({"name": "web", "cmd": "sleep", "args": ["300"], "ready": "delay:0.1", "depends": "db"})
    row = next(r for r in manager.status() if r["job"] == "default.web")
    assert job_state(row) == "waiting for default.db (not loaded)"
    manager.load({"name": "db", "cmd": "sleep", "args": ["300"], "ready": "delay:0.3"})
    wait_for(lambda: job_state(next(r for r in manager.status() if r["job"] == "default.web")) == "ready",
             message="web ready once db is")
