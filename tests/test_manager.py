"""The supervisor core, driven in-process with real child processes."""

import os
import signal
import subprocess
import textwrap
import time

import psutil
import pytest
from conftest import PYTHON, ROOT, alive, kill_tree, readline_within, wait_for

from zsup.errors import BadRequest, Conflict, NotFound


def sleeper(name, n=1, **extra):
    return {"name": name, "cmd": "sleep", "args": ["300"], "numprocesses": n, **extra}


def running_os_pids(manager, name):
    return [p["os_pid"] for p in manager.info(name)["processes"] if p["state"] == "running"]


def test_load_scale_and_queries(manager, recorder):
    manager.load(sleeper("web", 2))
    manager.load(sleeper("worker"), session="app")
    wait_for(lambda: len(manager.pids("web")) == 2)
    assert manager.jobs() == ["app.worker", "default.web"]  # sorted (session, name): issue 19
    assert manager.jobs(session="app") == ["app.worker"]
    assert manager.sessions() == ["app", "default"]
    assert manager.scale("web", 1)["numprocesses"] == 3
    assert manager.scale("web", "+2")["numprocesses"] == 5
    assert manager.scale("web", "-1")["numprocesses"] == 4
    assert manager.scale("web", -1)["numprocesses"] == 3
    assert manager.scale("web", "=1")["numprocesses"] == 1
    wait_for(lambda: len(manager.pids("web")) == 1, message="scale down to 1")
    pid = manager.pids("web")[0]
    info = manager.get_process(pid)
    assert info["job"] == "default.web" and info["os_pid"] > 0 and info["state"] == "running"
    wait_for(lambda: psutil.Process(info["os_pid"]).cmdline() == ["sleep", "300"])
    assert manager.info("app.worker")["session"] == "app"
    assert "job.default.web.create" in recorder.topics()


def test_process_ids_are_never_reused(manager):
    manager.load(sleeper("a", 2))
    first = set(manager.pids("a"))
    manager.scale("a", "=0")
    wait_for(lambda: manager.pids("a") == [])
    manager.scale("a", "=2")
    second = set(manager.pids("a"))
    assert len(second) == 2 and not first & second and min(second) > max(first)


def test_crash_is_restarted_at_once(manager, recorder):
    manager.load(sleeper("web"))
    pid = manager.pids("web")[0]
    os_pid = manager.get_process(pid)["os_pid"]
    os.kill(os_pid, signal.SIGKILL)
    wait_for(lambda: [p for p in manager.pids("web") if p != pid], timeout=5)
    exits = recorder.find("proc.default.web.exit")
    assert exits[0]["pid"] == pid and exits[0]["term_signal"] == signal.SIGKILL


def test_exit_code_reported(manager, recorder):
    manager.load({"name": "once", "cmd": "sh", "args": ["-c", "exit 3"], "numprocesses": 0})
    pid = manager.commit("once")
    wait_for(lambda: recorder.find(".once.exit"))
    ex = recorder.find(".once.exit")[0]
    assert ex["pid"] == pid and ex["exit_code"] == 3 and ex["term_signal"] is None
    assert manager.get_process(pid)["state"] == "exited"


def test_commit_is_one_shot(manager, recorder):
    manager.load({"name": "task", "cmd": "sh", "args": ["-c", "echo run $GREETING"], "numprocesses": 0})
    pid = manager.commit("task", env={"GREETING": "hi"})
    wait_for(lambda: recorder.find(".task.reap"))
    assert recorder.output(pid) == b"run hi\n"
    assert manager.pids("task") == []
    assert len(recorder.find(".task.spawn")) == 1


def test_flapping_gives_up(manager, recorder):
    manager.load({"name": "bad", "cmd": "false", "flapping": "2, 1., 0.1, 2"})
    wait_for(lambda: manager.info("bad")["state"] == "failed", timeout=10)
    flaps = recorder.find(".bad.flap")
    assert [f["attempt"] for f in flaps] == [1, 2, 2]
    assert [f["gave_up"] for f in flaps] == [False, False, True]
    assert flaps[0]["retry_in"] == 0.1
    stop = recorder.find("job.default.bad.stop")[-1]
    assert stop["reason"] == "flapping"
    spawns = len(recorder.find(".bad.spawn"))
    assert spawns == 9  # (attempts + 1) lives, for the first try and each of 2 retries


def test_crash_loop_backs_off_without_flapping_rule(manager, recorder):
    manager.load({"name": "crash", "cmd": "false"})
    wait_for(lambda: len(recorder.find(".crash.spawn")) >= 5, timeout=10)
    t0 = len(recorder.find(".crash.spawn"))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        time.sleep(0.05)
    # exponential back-off: a few restarts in a second, not thousands
    assert len(recorder.find(".crash.spawn")) - t0 < 15
    info = manager.info("crash")
    # never gives up: still active and retrying; `failing` says why (it exits at once)
    assert info["active"] and info["state"] == "failing", info
    assert info["last_error"] == "exits at once (code 1)"


def test_graceful_timeout_escalates_to_sigkill(manager, recorder):
    script = "trap '' TERM; echo ready; while true; do sleep 0.05; done"
    manager.load({"name": "stubborn", "cmd": "sh", "args": ["-c", script], "graceful_timeout": 0.5})
    pid = manager.pids("stubborn")[0]
    wait_for(lambda: recorder.output(pid) == b"ready\n")
    t0 = time.monotonic()
    manager.stop_job("stubborn")
    wait_for(lambda: recorder.find(".stubborn.exit"), timeout=5)
    assert time.monotonic() - t0 >= 0.45
    assert recorder.find(".stubborn.exit")[0]["term_signal"] == signal.SIGKILL


def test_stop_signal_option(manager, recorder):
    script = "trap 'echo got INT; exit 0' INT; echo ready; while true; do sleep 0.05; done"
    manager.load({"name": "intjob", "cmd": "sh", "args": ["-c", script], "stop_signal": "INT"})
    pid = manager.pids("intjob")[0]
    wait_for(lambda: recorder.output(pid) == b"ready\n")
    manager.stop_job("intjob")
    wait_for(lambda: recorder.find(".intjob.exit"))
    assert b"got INT" in recorder.output(pid)
    assert recorder.find(".intjob.exit")[0]["exit_code"] == 0


def test_priority_order(manager, recorder):
    manager.load_many([sleeper("c", priority=2), sleeper("a", priority=0), sleeper("b", priority=1)])
    spawns = [m["name"] for m in recorder.find(".spawn")]
    assert spawns == ["a", "b", "c"]


def test_stdin_echo_and_errors(manager, recorder):
    manager.load({"name": "echo", "cmd": PYTHON, "args": [os.path.join(ROOT, "etc", "echo.py")],
                  "redirect_input": True})
    pid = manager.pids("echo")[0]
    manager.send(pid, "hello\n")
    manager.writelines(pid, ["a", "b"])
    wait_for(lambda: recorder.output(pid) == b"hello\na\nb\n")
    manager.load(sleeper("noin"))
    with pytest.raises(Conflict, match="redirect_input"):
        manager.send(manager.pids("noin")[0], "x")
    manager.stop_job("echo")
    wait_for(lambda: recorder.find(".echo.exit"))
    with pytest.raises(Conflict, match="exited"):
        manager.send(pid, "late\n")
    with pytest.raises(NotFound):
        manager.send(99999, "x")


def test_hundred_thousand_lines_in_order(manager, recorder):
    n = 100_000
    manager.load({"name": "chatty", "cmd": PYTHON, "args": ["-c", f"for i in range({n}): print(i)"],
                  "numprocesses": 0, "ring_size": n})
    pid = manager.commit("chatty")
    wait_for(lambda: recorder.find(".chatty.exit"), timeout=30)
    chunks = [(m["seq"], m["lines"], d) for t, m, d in recorder.events if t.startswith("io.") and m["pid"] == pid]
    expect = 1
    for seq, count, data in chunks:
        assert seq == expect
        assert data.count(b"\n") == count
        expect += count
    assert expect == n + 1
    lines = b"".join(d for _, _, d in chunks).split(b"\n")[:-1]
    assert lines == [str(i).encode() for i in range(n)]
    ring = manager.read_output(pid, "stdout", since=n - 3)
    assert [(l["seq"], l["data"]) for l in ring["lines"]] == [(n - 2, f"{n-3}\n"), (n - 1, f"{n-2}\n"), (n, f"{n-1}\n")]
    assert len(manager.read_output(pid, since=0)["lines"]) == n


def test_ring_buffer_keeps_last_lines(manager, recorder):
    manager.load({"name": "ring", "cmd": "seq", "args": ["1", "50"], "numprocesses": 0, "ring_size": 10})
    pid = manager.commit("ring")
    wait_for(lambda: recorder.find(".ring.exit"))
    out = manager.read_output(pid)
    assert [l["seq"] for l in out["lines"]] == list(range(41, 51))
    assert out["lines"][0]["data"] == "41\n"
    with pytest.raises(NotFound):
        manager.read_output(pid, "nope")


def test_long_line_passed_in_pieces(manager, recorder):
    manager.load({"name": "long", "cmd": PYTHON, "args": ["-c", "import sys,time; sys.stdout.write('x'*250); "
                  "sys.stdout.flush(); time.sleep(30)"], "max_line": 100})
    pid = manager.pids("long")[0]
    wait_for(lambda: len([m for t, m, d in recorder.events if t.startswith("io.")]) >= 2)
    pieces = [d for t, m, d in recorder.events if t.startswith("io.")]
    assert pieces[:2] == [b"x" * 100, b"x" * 100]


def test_redirect_output_labels_and_merge(manager, recorder):
    script = "echo out; echo err >&2"
    manager.load({"name": "two", "cmd": "sh", "args": ["-c", script], "numprocesses": 0,
                  "redirect_output": ["a", "b"]})
    manager.load({"name": "merged", "cmd": "sh", "args": ["-c", script], "numprocesses": 0,
                  "redirect_output": "out, out"})
    p1 = manager.commit("two")
    p2 = manager.commit("merged")
    wait_for(lambda: len(recorder.find(".exit")) == 2)
    assert recorder.output(p1, "a") == b"out\n" and recorder.output(p1, "b") == b"err\n"
    merged = manager.read_output(p2, "out")["lines"]
    assert sorted(l["data"] for l in merged) == ["err\n", "out\n"]
    assert [l["seq"] for l in merged] == [1, 2]


def test_env_substitution_and_os_env(manager, recorder):
    os.environ["ZSUP_TEST_OUTER"] = "outer"
    try:
        manager.load({"name": "envjob", "cmd": "echo", "args": ["$GREETING", "${ZSUP_TEST_OUTER}"],
                      "env": {"GREETING": "hello"}, "numprocesses": 0})
        manager.load({"name": "clean", "cmd": "/usr/bin/env", "os_env": False, "env": {"ONLY": "1"},
                      "numprocesses": 0})
        p1, p2 = manager.commit("envjob"), manager.commit("clean")
        wait_for(lambda: len(recorder.find(".exit")) == 2)
        assert recorder.output(p1) == b"hello outer\n"
        assert recorder.output(p2) == b"ONLY=1\n"
    finally:
        del os.environ["ZSUP_TEST_OUTER"]


def test_shell_and_cwd(manager, recorder, tmp_path):
    manager.load({"name": "sh", "cmd": "pwd && echo $((1+2))", "shell": True, "cwd": str(tmp_path),
                  "numprocesses": 0})
    pid = manager.commit("sh")
    wait_for(lambda: recorder.find(".sh.exit"))
    assert recorder.output(pid) == f"{tmp_path}\n3\n".encode()


def test_children_of_a_child_are_stopped(manager, recorder):
    manager.load({"name": "tree", "cmd": "sh", "args": ["-c", "sleep 300 & sleep 300 & wait"]})
    pid = manager.pids("tree")[0]
    os_pid = manager.get_process(pid)["os_pid"]
    kids = wait_for(lambda: len(psutil.Process(os_pid).children()) == 2 and psutil.Process(os_pid).children())
    kid_pids = [k.pid for k in kids]
    try:
        manager.stop_job("tree")
        wait_for(lambda: not any(alive(p) for p in kid_pids), message="grandchildren to die")
    finally:
        kill_tree(kid_pids)


def test_kill_and_killall(manager, recorder):
    script = "trap 'echo usr1' USR1; echo ready; while true; do sleep 0.05; done"
    manager.load({"name": "sig", "cmd": "sh", "args": ["-c", script], "numprocesses": 2})
    pids = manager.pids("sig")
    wait_for(lambda: all(recorder.output(p) == b"ready\n" for p in pids))
    manager.kill(pids[0], "SIGUSR1")
    wait_for(lambda: recorder.output(pids[0]) == b"ready\nusr1\n")
    manager.killall("sig", signal.SIGUSR1)
    wait_for(lambda: all(recorder.output(p).endswith(b"usr1\n") for p in pids) and recorder.output(pids[1]).count(b"usr1") == 1)
    with pytest.raises(BadRequest):
        manager.kill(pids[0], "NOPE")
    with pytest.raises(NotFound):
        manager.kill(12345, 9)


def test_stop_process_is_replaced(manager, recorder):
    manager.load(sleeper("rep"))
    pid = manager.pids("rep")[0]
    manager.stop_process(pid)
    wait_for(lambda: [p for p in manager.pids("rep") if p != pid])
    assert wait_for(lambda: recorder.find(".rep.stop_pid"))[0]["pid"] == pid


def test_start_stop_unload_update_reload(manager, recorder):
    manager.load(sleeper("life", 2), start=False)
    assert manager.pids("life") == []
    manager.start_job("life")
    assert len(manager.pids("life")) == 2
    manager.scale("life", "=3")
    manager.reload("life")  # back to the config's count, all new processes
    wait_for(lambda: len(manager.pids("life")) == 2)
    manager.update({"name": "life", "cmd": "sleep", "args": ["301"], "numprocesses": 1})
    wait_for(lambda: len(manager.pids("life")) == 1)
    pid = manager.pids("life")[0]
    cmdline = lambda: psutil.Process(manager.get_process(pid)["os_pid"]).cmdline()
    wait_for(lambda: cmdline() == ["sleep", "301"])
    manager.stop_job("life")
    wait_for(lambda: manager.pids("life") == [])
    manager.unload("life")
    with pytest.raises(NotFound):
        manager.info("life")
    events = [t.rsplit(".", 1)[1] for t in recorder.topics("job.default.life")]
    for e in ["create", "start", "restart", "update", "stop", "delete"]:
        assert e in events


def test_bad_input_changes_nothing(manager, tmp_path):
    with pytest.raises(NotFound, match="no job default.nope"):
        manager.info("nope")
    with pytest.raises(BadRequest, match="^numprocesses"):
        manager.load(sleeper("neg", -1))
    with pytest.raises(BadRequest, match="^flapping"):
        manager.load(sleeper("flap", flapping="1, x"))
    with pytest.raises(BadRequest, match="^cwd"):
        manager.load(sleeper("cwd", cwd=str(tmp_path / "missing")))
    with pytest.raises(BadRequest, match="^uid"):
        manager.load(sleeper("user", uid="no-such-user-zsup"))
    with pytest.raises(BadRequest, match="^gid"):
        manager.load(sleeper("group", gid="no-such-group-zsup"))
    with pytest.raises(BadRequest, match="^bogus"):
        manager.load(sleeper("opt", bogus=1))
    with pytest.raises(BadRequest):
        manager.load_many([sleeper("ok1"), sleeper("bad", -1)])
    assert manager.jobs() == []
    manager.load(sleeper("dup"))
    with pytest.raises(Conflict):
        manager.load(sleeper("dup"))
    with pytest.raises(BadRequest):
        manager.scale("dup", "x3")


def test_unrunnable_command_emits_spawn_error_and_manager_carries_on(manager, recorder):
    manager.load({"name": "ghost", "cmd": "/no/such/program", "flapping": "1, 1., 5., 0"})
    wait_for(lambda: manager.info("ghost")["state"] == "failed")
    errors = recorder.find(".ghost.spawn_error")
    assert errors and "cannot execute" in errors[0]["error"]
    manager.load(sleeper("fine"))
    assert len(manager.pids("fine")) == 1


def test_stats_only_while_monitored(manager, recorder):
    manager.load(sleeper("st", 2))
    st = manager.stats("st")
    assert len(st["processes"]) == 2 and st["rss"] > 0
    for key in ("cpu", "mem", "rss", "vms", "ctime", "username", "nice", "cmdline", "children"):
        assert key in st["processes"][0]
    time.sleep(0.3)  # nobody listens: the sampler must stay quiet for a few intervals
    assert not recorder.topics("stats.")
    manager.monitor("stats.default.st")
    wait_for(lambda: len({m["pid"] for m in recorder.find("") if m.get("event") == "stats"}) == 2)
    manager.unmonitor("stats.default.st")


def test_detach_outlives_the_manager():
    from zsup.core.manager import Manager

    m = Manager()
    m.start()
    m.load(sleeper("free", detach=True))
    os_pid = m.get_process(m.pids("free")[0])["os_pid"]
    try:
        m.stop(timeout=5)
        assert alive(os_pid)
    finally:
        kill_tree([os_pid])


def test_no_orphans_when_supervisor_is_sigkilled(tmp_path):
    """The supervising process dies without a word; its children must die with it."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        from zsup.core.manager import Manager
        m = Manager(); m.start()
        m.load({{"name": "s", "cmd": "sleep", "args": ["300"], "numprocesses": 3}})
        m.load({{"name": "py", "cmd": {PYTHON!r}, "args": ["-c", "import time; time.sleep(300)"]}})
        print(" ".join(str(m.get_process(p)["os_pid"]) for p in m.pids()), flush=True)
        time.sleep(300)
    """)
    sup = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        pids = [int(p) for p in readline_within(sup.stdout, message="the supervisor's child pids").split()]
        assert len(pids) == 4 and all(alive(p) for p in pids)
        # the death signal is armed once setpriv has exec'd the real program
        wait_for(lambda: all("setpriv" not in (psutil.Process(p).cmdline() or ["setpriv"])[0] for p in pids))
        sup.kill()
        sup.wait(10)
        wait_for(lambda: not any(alive(p) for p in pids), message="children to die with their supervisor")
    finally:
        sup.kill()
        kill_tree(pids)


def test_spawning_while_other_threads_are_busy(manager, recorder):
    """The death signal is set without preexec_fn: spawning under thread load must not hang."""
    import threading

    stop = threading.Event()

    def churn():
        while not stop.is_set():
            [object() for _ in range(1000)]
            os.stat("/")

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        manager.load({"name": "burst", "cmd": "true", "numprocesses": 0})
        for _ in range(100):
            manager.commit("burst")
        wait_for(lambda: len(recorder.find(".burst.reap")) == 100, timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_uid_and_gid(manager, recorder):
    import pwd

    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        with pytest.raises(BadRequest, match="^uid: only root"):
            manager.load({"name": "who", "cmd": "id", "uid": "nobody"})
        return
    manager.load({"name": "who", "cmd": "id", "args": ["-u"], "uid": "nobody", "gid": nobody.pw_gid,
                  "numprocesses": 0})
    pid = manager.commit("who")
    wait_for(lambda: recorder.find(".who.exit"))
    assert recorder.output(pid) == f"{nobody.pw_uid}\n".encode()
