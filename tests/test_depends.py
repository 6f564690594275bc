"""Order between jobs: `depends` starts a job after its dependencies are ready and stops it
before them; an unknown job or a cycle is refused, naming it."""

import pytest
from conftest import wait_for

from zsup.daemon.config import ConfigError, load_config
from zsup.errors import BadRequest

# exits 0.4 s after its stop signal; the dependency (a sleep) exits at once on its own: stopped
# too early, it would exit first
SLOW_STOP = ["-c", "trap 'sleep 0.4; exit 0' TERM; while :; do sleep 0.05; done"]


def index(recorder, topic, **match):
    for i, (t, m, _) in enumerate(list(recorder.events)):
        if t == topic and all(m.get(k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {topic} {match}")


def test_a_job_starts_once_its_dependencies_are_ready(manager, recorder):
    manager.load_many([
        {"name": "web", "cmd": "sleep", "args": ["300"], "depends": "db, cache"},
        {"name": "db", "cmd": "sleep", "args": ["300"], "numprocesses": 2, "ready": "delay:0.4"},
        {"name": "cache", "cmd": "sleep", "args": ["300"]},
    ])
    info = manager.info("web")
    assert info["running"] == 0 and info["waiting_for"] == ["default.db"] and info["state"] == "running"
    wait_for(lambda: manager.info("web")["running"] == 1, message="web started")
    assert manager.info("web")["waiting_for"] == []
    db_ready = [i for i, (t, _, _) in enumerate(recorder.events) if t == "proc.default.db.ready"]
    assert len(db_ready) == 2 and index(recorder, "proc.default.web.spawn") > max(db_ready)
    assert manager.get("web")["depends"] == ["default.db", "default.cache"]


def test_a_finished_dependency_lets_dependents_start(manager):
    manager.load({"name": "app", "cmd": "sleep", "args": ["300"], "depends": "migrate"})
    assert manager.info("app")["waiting_for"] == ["default.migrate (not loaded)"]
    manager.load({"name": "migrate", "cmd": "sh", "args": ["-c", "sleep 0.2"], "restart": "never"})
    wait_for(lambda: manager.info("app")["running"] == 1, message="app started after the migration")


def test_stop_runs_in_reverse_order(manager, recorder):
    manager.load_many([{"name": "db", "cmd": "sleep", "args": ["300"]},  # quick to stop
                       {"name": "web", "cmd": "sh", "args": SLOW_STOP, "depends": ["db"]}])
    wait_for(lambda: manager.info("web")["running"] == 1)
    manager.stop_all()
    wait_for(lambda: manager.pids() == [], message="all stopped")
    assert index(recorder, "proc.default.web.exit") < index(recorder, "proc.default.db.exit")
    # a dependency stopped alone goes at once
    manager.start_all()
    wait_for(lambda: manager.info("web")["running"] == 1)
    manager.stop_job("db")
    wait_for(lambda: manager.info("db")["running"] == 0 and manager.pids("db") == [], timeout=5)
    assert manager.info("web")["running"] == 1


def test_shutdown_stops_dependents_first(manager, recorder):
    manager.load_many([{"name": "db", "cmd": "sleep", "args": ["300"]},  # quick to stop
                       {"name": "web", "cmd": "sh", "args": SLOW_STOP, "depends": "db"}])
    wait_for(lambda: manager.info("web")["running"] == 1)
    manager.stop(timeout=10)
    assert index(recorder, "proc.default.web.exit") < index(recorder, "proc.default.db.exit")


def test_unknown_jobs_and_cycles_are_refused(manager, tmp_path):
    with pytest.raises(BadRequest, match="depends: job default.a depends on default.nope, an unknown job"):
        manager.load_many([{"name": "a", "cmd": "true", "depends": "nope"}])
    with pytest.raises(BadRequest, match=r"depends: a cycle: default.a -> default.b -> default.a"):
        manager.load_many([{"name": "a", "cmd": "true", "depends": "b"}, {"name": "b", "cmd": "true", "depends": "a"}])
    with pytest.raises(BadRequest, match="depends on itself"):
        manager.load({"name": "a", "cmd": "true", "depends": "a"})
    assert manager.jobs() == []
    path = tmp_path / "zsup.ini"
    path.write_text("[process:web]\ncmd = x\ndepends = db\n")
    with pytest.raises(ConfigError, match=r"\[process:web\] depends: job default.web depends on default.db"):
        load_config(str(path))
    path.write_text("[process:a]\ncmd = x\ndepends = app.b\n[process:app:b]\ncmd = x\ndepends = default.a\n")
    with pytest.raises(ConfigError, match=r"depends: a cycle: default.a -> app.b -> default.a"):
        load_config(str(path))


def test_a_scheduled_job_cannot_be_depended_on(manager, tmp_path):
    """A scheduled job is never ready: depending on it is refused whichever comes first."""
    backup = {"name": "backup", "cmd": "true", "schedule": "0 3 * * *"}
    with pytest.raises(BadRequest, match="job default.web depends on default.backup, a scheduled job"):
        manager.load_many([{"name": "web", "cmd": "sleep", "args": ["300"], "depends": "backup"}, backup])
    manager.load(backup)
    with pytest.raises(BadRequest, match="a scheduled job"):
        manager.load({"name": "web", "cmd": "sleep", "args": ["300"], "depends": "backup"})
    manager.unload("backup")
    manager.load({"name": "web", "cmd": "sleep", "args": ["300"], "depends": "backup"}, start=False)
    with pytest.raises(BadRequest, match="job default.web depends on default.backup, a scheduled job"):
        manager.load(backup)
    assert [j for j in manager.jobs()] == ["default.web"]
    path = tmp_path / "zsup.ini"
    path.write_text("[process:web]\ncmd = x\ndepends = backup\n[process:backup]\ncmd = x\nschedule = 0 3 * * *\n")
    with pytest.raises(ConfigError, match=r"\[process:web\] depends: job default.web depends on default.backup, "
                                          "a scheduled job"):
        load_config(str(path))


def test_an_update_of_a_dependency_replaces_its_processes(manager):
    manager.load_many([{"name": "db", "cmd": "sleep", "args": ["300"]},
                       {"name": "web", "cmd": "sleep", "args": ["300"], "depends": "db"}])
    wait_for(lambda: manager.info("web")["running"] == 1)
    old = manager.pids("db")
    manager.update({"name": "db", "cmd": "sleep", "args": ["301"]})
    wait_for(lambda: (pids := manager.pids("db")) and not set(pids) & set(old), message="db replaced")
    assert manager.info("web")["running"] == 1
