"""Gaffer semantics at the edges: unload takes one-off processes along, `$$` reaches the
shell, a detached process is found again after a restart of zsupd (real processes)."""

import sys

from conftest import alive, kill_tree, wait_for


def test_unloading_a_job_stops_its_committed_processes(manager, recorder):
    manager.load({"name": "oneoff", "cmd": "sleep", "args": ["300"], "numprocesses": 0})
    pid = manager.commit("oneoff")
    os_pid = manager.get_process(pid)["os_pid"]
    try:
        manager.unload("oneoff")
        wait_for(lambda: not alive(os_pid), message="the committed process to stop")
        exit_ = wait_for(lambda: [m for m in recorder.find(".oneoff.exit") if m["pid"] == pid])[0]
        assert exit_["reason"] == "unload"
    finally:
        kill_tree([os_pid])


def test_unloading_a_session_stops_its_committed_processes(zsupd_factory):
    d = zsupd_factory()
    d.call("load_session", session="app", configs=[{"name": "oneoff", "cmd": "sleep 300", "numprocesses": 0}])
    pid = d.call("commit", name="oneoff", session="app")["pid"]
    os_pid = d.call("get_process", pid=pid)["os_pid"]
    try:
        d.call("unload_session", session="app")
        wait_for(lambda: not alive(os_pid), message="the committed process to stop with its session")
    finally:
        kill_tree([os_pid])


def test_dollar_dollar_reaches_the_shell(manager, recorder):
    manager.load({"name": "me", "cmd": "echo $$ ${HOME:+home} $GREETING", "shell": True, "numprocesses": 0,
                  "env": {"GREETING": "a b;c"}})
    pid = manager.commit("me")
    wait_for(lambda: recorder.find(".me.exit"))
    os_pid = manager.get_process(pid)["os_pid"]
    # the shell's own pid, the shell's own expansion, and a value that stays a value
    assert recorder.output(pid) == f"{os_pid} home a b;c\n".encode()


def sigterm(d):
    """Stop zsupd the normal way, without the fixture's clean-up of everything it started."""
    d.proc.terminate()
    assert d.proc.wait(20) == 0
    d._log.close()


def test_a_detached_process_is_found_again_after_a_restart(zsupd_factory, tmp_path):
    config = "[process:loner]\ncmd = sleep 300\ndetach = true\n"
    d = zsupd_factory(config, path=tmp_path / "one")
    pid = wait_for(lambda: d.call("pids", name="loner"))[0]
    os_pid = d.call("get_process", pid=pid)["os_pid"]
    started = d.call("get_process", pid=pid)["started"]
    try:
        sigterm(d)
        assert alive(os_pid)  # detached: it outlives zsupd
        d.start()  # same state dir, same config
        info = wait_for(lambda: (i := d.call("info", name="loner"))["processes"] and i)
        assert [p["os_pid"] for p in info["processes"]] == [os_pid]  # listed, not started twice
        proc = info["processes"][0]
        assert proc["adopted"] and proc["state"] == "running" and abs(proc["started"] - started) < 0.01
        assert d.call("status")[0]["running"] == 1

        # zsupd still supervises it: a stop reaches it, and it is then forgotten
        d.call("stop_job", name="loner")
        wait_for(lambda: not alive(os_pid), message="the adopted process to stop")
        wait_for(lambda: d.call("get_process", pid=proc["pid"])["state"] == "exited")
        sigterm(d)
        d.start()
        assert d.call("info", name="loner")["processes"] == []  # stopped at run time, and none to find
    finally:
        kill_tree([os_pid])


def test_a_detached_process_found_again_is_held_to_its_limits(zsupd_factory, tmp_path):
    """max_memory watches a process found again after a restart as it did the one it spawned."""
    go = tmp_path / "go"
    grow = ("import os, time\nwhile not os.path.exists(%r): time.sleep(0.05)\n"
            "ballast = bytearray(200 * 2**20)\ntime.sleep(300)\n" % str(go))
    script = tmp_path / "grow.py"
    script.write_text(grow)
    config = (f"[process:loner]\ncmd = {sys.executable}\nargs = {script}\ndetach = true\n"
              "max_memory = 64M\nlimit_window = 1\n")
    d = zsupd_factory(config, path=tmp_path / "one")
    pid = wait_for(lambda: d.call("pids", name="loner"))[0]
    os_pid = d.call("get_process", pid=pid)["os_pid"]
    try:
        sigterm(d)
        d.start()
        wait_for(lambda: [p["os_pid"] for p in d.call("info", name="loner")["processes"]] == [os_pid])
        go.write_text("")  # now it grows past max_memory
        wait_for(lambda: not alive(os_pid), timeout=15, message="the adopted process stopped for its memory")
        # gone from /proc a moment before zsupd has handled its exit: wait for its replacement
        info = wait_for(lambda: (i := d.call("info", name="loner"))["processes"]
                        and i["processes"][0]["os_pid"] != os_pid and i, timeout=10)
        assert info["last_limit"]["limit"] == "max_memory" and info["processes"][0]["os_pid"] != os_pid
    finally:
        go.write_text("")
        kill_tree([os_pid])


def test_a_reused_pid_is_not_taken_for_a_detached_process(zsupd_factory, tmp_path):
    d = zsupd_factory("[process:loner]\ncmd = sleep 300\ndetach = true\n", path=tmp_path / "one")
    pid = wait_for(lambda: d.call("pids", name="loner"))[0]
    os_pid = d.call("get_process", pid=pid)["os_pid"]
    try:
        sigterm(d)
        assert alive(os_pid)
        import sqlite3

        db = sqlite3.connect(f"{d.state_dir}/zsupd.db")
        with db:
            db.execute("UPDATE detached SET create_time = create_time - 1000")  # as if another process
        db.close()
        d.start()
        pids = wait_for(lambda: d.call("pids", name="loner"))
        assert d.call("get_process", pid=pids[0])["os_pid"] != os_pid  # a new one was started
    finally:
        kill_tree([os_pid])
