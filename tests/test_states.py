"""The thread rules, checked: the state machines, assert_in_loop, and no SQLite on a loop."""

import logging
import threading
import types

import pytest
from conftest import PYTHON, Recorder, wait_for

from zsup.core.job import Job
from zsup.core.jobspec import JobSpec
from zsup.core.loop import Loop, WrongThread
from zsup.core.process import Process
from zsup.core.states import JOB_TRANSITIONS, PROCESS_TRANSITIONS, IllegalTransition, JobState, ProcessState
from zsup.daemon.store import Store


def spec(name="x", **extra):
    return JobSpec.from_dict({"name": name, "cmd": "sleep", "args": ["300"], **extra})


# ------------------------------------------------------------------ the state machines
def test_state_strings_are_the_ones_clients_know():
    assert {s.value for s in ProcessState} == {"spawning", "running", "stopping", "exited"}
    assert {s.value for s in JobState} == {"stopped", "running", "flapping", "failed", "failing", "exited", "scheduled"}
    assert ProcessState.RUNNING == "running" and f"{JobState.FAILED}" == "failed"


def test_illegal_transitions_raise_and_change_nothing():
    proc = Process(1, spec())
    assert proc.state == ProcessState.SPAWNING
    with pytest.raises(IllegalTransition, match="spawning -> exited"):
        proc.set_state(ProcessState.EXITED)
    assert proc.state == ProcessState.SPAWNING
    proc.set_state(ProcessState.RUNNING)
    proc.set_state(ProcessState.STOPPING)
    with pytest.raises(IllegalTransition):
        proc.set_state(ProcessState.RUNNING)  # a stop is never undone
    proc.set_state(ProcessState.EXITED)
    for state in ProcessState:
        with pytest.raises(IllegalTransition):
            proc.set_state(state)  # exited is final

    job = Job(spec())
    assert job.state == JobState.STOPPED
    with pytest.raises(IllegalTransition, match="job default.x: no transition stopped -> flapping"):
        job.set_state(JobState.FLAPPING)
    with pytest.raises(IllegalTransition):
        job.set_state(JobState.FAILED)  # only a tripped flapping rule fails a job
    assert job.state == JobState.STOPPED
    job.set_state(JobState.RUNNING)
    job.set_state(JobState.FLAPPING)
    job.set_state(JobState.FAILED)
    with pytest.raises(IllegalTransition):
        job.set_state(JobState.FLAPPING)
    job.set_state(JobState.RUNNING)  # a start after a failure
    job.set_state(JobState.FAILING)  # a spawn failed
    with pytest.raises(IllegalTransition):
        Job(spec()).set_state(JobState.FAILING)  # a stopped job spawns nothing, fails nothing
    job.set_state(JobState.RUNNING)  # a spawn succeeded again


def events_of(recorder, pid):
    return [t.rsplit(".", 1)[-1] for t, m, _ in list(recorder.events) if t.startswith("proc.") and m.get("pid") == pid]


def test_each_process_transition_publishes_its_events(manager, recorder):
    manager.load({"name": "once", "cmd": PYTHON, "args": ["-c", "print('hi')"], "numprocesses": 0})
    pid = manager.commit("once")
    wait_for(lambda: "reap" in events_of(recorder, pid), message="the process to be reaped")
    expected = (PROCESS_TRANSITIONS[ProcessState.SPAWNING, ProcessState.RUNNING]
                + PROCESS_TRANSITIONS[ProcessState.RUNNING, ProcessState.EXITED])
    assert events_of(recorder, pid) == list(expected)
    info = manager.get_process(pid)
    assert info["state"] == "exited" and type(info["state"]) is str

    manager.load({"name": "long", "cmd": "sleep", "args": ["300"], "numprocesses": 0})
    pid = manager.commit("long")
    assert type(manager.get_process(pid)["state"]) is str
    manager.stop_process(pid)
    assert manager.get_process(pid)["state"] in ("stopping", "exited")
    wait_for(lambda: "reap" in events_of(recorder, pid), message="the stopped process to be reaped")
    expected = (PROCESS_TRANSITIONS[ProcessState.SPAWNING, ProcessState.RUNNING]
                + PROCESS_TRANSITIONS[ProcessState.STOPPING, ProcessState.EXITED])
    assert events_of(recorder, pid) == list(expected)


def test_job_transitions_of_a_flapping_job_are_allowed_ones(manager, recorder):
    manager.load({"name": "bad", "cmd": "false", "flapping": "2, 1., 0.1, 2"})
    wait_for(lambda: manager.info("bad")["state"] == "failed", message="the flapping rule to give up")
    assert manager.info("bad")["stop_reason"] == "flapping"
    assert type(manager.status()[0]["state"]) is str
    flaps = recorder.find(".bad.flap")
    assert flaps[-1]["gave_up"] is True
    assert recorder.find("job.default.bad.stop")[-1]["reason"] == "flapping"
    assert "flap" in JOB_TRANSITIONS[JobState.RUNNING, JobState.FLAPPING]
    manager.start_job("bad")  # failed -> running is allowed: the job runs again
    assert manager.info("bad")["state"] == "running"
    manager.stop_job("bad")
    assert manager.info("bad")["state"] == "stopped"


# ------------------------------------------------------------------ assert_in_loop
def test_assert_in_loop_passes_in_the_loop_and_before_start():
    loop = Loop("test-loop")
    loop.assert_in_loop()  # not running: the caller's thread owns it
    loop.start()
    try:
        with pytest.raises(WrongThread, match="test-loop"):
            loop.assert_in_loop()
        loop.call_and_wait(loop.assert_in_loop, timeout=5)
    finally:
        loop.stop()
    loop.assert_in_loop()


def test_supervisor_state_refuses_other_threads(manager):
    manager.load({"name": "idle", "cmd": "sleep", "args": ["300"], "numprocesses": 1}, start=False)
    job = manager._jobs["default.idle"]
    for call in (lambda: manager._start_job(job), lambda: manager._manage(job),
                 lambda: manager._stop_job(job, "stop"), lambda: manager._flap(job)):
        with pytest.raises(WrongThread, match="zsup-supervisor"):
            call()
    assert manager.info("idle")["state"] == "stopped" and manager.pids("idle") == []
    manager.start_job("idle")
    pid = wait_for(lambda: manager.pids("idle"))[0]
    proc = manager._procs[pid]
    with pytest.raises(WrongThread):
        manager._stop_proc(proc, "stop")
    with pytest.raises(WrongThread, match="zsup-io"):
        manager._pipes._write(proc, b"x")
    assert manager.get_process(pid)["state"] == "running"


# ------------------------------------------------------------------ SQLite off the loops
def test_store_refuses_loop_threads_and_runs_deferred_work_in_order(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    loop = Loop("zsup-io")
    loop.start()
    try:
        with pytest.raises(WrongThread, match="zsup-io"):
            loop.call_and_wait(store.execute, "SELECT 1", timeout=5)
        with pytest.raises(WrongThread):
            loop.call_and_wait(store.call, lambda: 1, timeout=5)
        store.execute("CREATE TABLE t (n INTEGER)")
        threads = set()

        def insert(n):
            threads.add(threading.current_thread().name)
            store.execute("INSERT INTO t VALUES (?)", (n,))

        for n in range(100):
            loop.call_soon(store.defer, insert, n)  # handed over from the loop thread
        loop.call_and_wait(lambda: None, timeout=5)
        assert store.call(lambda: [r[0] for r in store.execute("SELECT n FROM t")]) == list(range(100))
        assert threads == {"zsup-store"}
        with pytest.raises(ZeroDivisionError):
            store.call(lambda: 1 / 0)  # the caller gets the exception; the thread goes on
        store.defer(insert, 100)
    finally:
        loop.stop()
        store.close()  # runs what was deferred before closing
    store = Store(str(tmp_path / "s.db"))
    assert store.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 101
    store.close()


def test_task_output_is_written_by_the_store_thread(tmp_path, manager, caplog):
    from zsup.services.tasks import TaskService

    store = Store(str(tmp_path / "zsupd.db"))
    daemon = types.SimpleNamespace(store=store, events=manager.events, manager=manager, settings={},
                                   config=types.SimpleNamespace(task_envs={"app.prod": {"GREETING": "hello"}}))
    code = "import os, sys\nfor i in range(200): print(os.environ['GREETING'], i)\nprint('bye', file=sys.stderr)"
    manager.load({"name": "run", "session": "app", "cmd": PYTHON, "args": ["-c", code], "numprocesses": 0})
    recorder = Recorder(manager.events, "task.")
    caplog.set_level(logging.ERROR)
    try:
        tasks = TaskService(daemon)
        task = tasks.create("app", "prod", "run")
        done = wait_for(lambda: tasks.get(task["id"])["status"] in ("finished", "failed") and tasks.get(task["id"]),
                        message="the task to end")
        assert done["status"] == "finished" and done["exitCode"] == 0
        expected = "".join(f"hello {i}\n" for i in range(200))
        assert sorted(done["output"].splitlines()) == sorted((expected + "bye\n").splitlines())
        assert expected in done["output"]  # one stream's lines stay in order
        assert recorder.find(".update")[-1]["status"] == "finished"
        assert not [r for r in caplog.records if "WrongThread" in r.getMessage() or r.exc_info]
    finally:
        store.close()

