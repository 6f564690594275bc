"""Gaffer semantics at the edges: unload takes one-off processes along, `$$` reaches the
shell, a detached process is found again after a restart of zsupd (real processes)."""

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
