"""`info` from cached JSON (Job.info_json): the same answer as the dicts, and never stale
when a process changes (output, exit, restart) or the job's config does."""

import json
import os
import signal

from conftest import wait_for


def same_as_dicts(manager, name):
    """info_json decoded equals info(), the uptimes aside (they move between the two calls)."""
    # both in one supervised call: nothing changes between them (a process replaced, say)
    raw, fresh = manager.run_supervised(lambda: (manager.info_json(name), manager.info(name)))
    cached = json.loads(raw)
    for info in (cached, fresh):
        for proc in info["processes"]:
            assert isinstance(proc.pop("uptime"), (int, float))
    assert cached == fresh
    return cached


def test_cached_info_follows_every_change(manager):
    manager.load({"name": "talk", "cmd": "sh", "args": ["-c", "echo one; read x; echo two; sleep 300"],
                  "numprocesses": 2, "redirect_input": True})
    wait_for(lambda: all(p["last_seq"]["stdout"] == 1 for p in manager.info("talk")["processes"]) and
             len(manager.info("talk")["processes"]) == 2)
    first = same_as_dicts(manager, "talk")
    assert len(first["processes"]) == 2
    pid = first["processes"][0]["pid"]
    # new output: the seq in the cached answer moves
    manager.send(pid, "go\n")
    wait_for(lambda: json.loads(manager.info_json("talk"))["processes"][0]["last_seq"]["stdout"] == 2)
    same_as_dicts(manager, "talk")
    # an exit: the process is replaced, the answer lists the new one
    os.kill(first["processes"][1]["os_pid"], signal.SIGKILL)
    def replaced():
        pids = json.loads(manager.info_json("talk"))["pids"]
        return first["processes"][1]["pid"] not in pids and len(pids) == 2

    wait_for(replaced)
    after = same_as_dicts(manager, "talk")
    assert len(after["pids"]) == 2
    # a new config is in the next answer
    manager.update({"name": "talk", "cmd": "sleep", "args": ["300"], "numprocesses": 1})
    wait_for(lambda: json.loads(manager.info_json("talk"))["config"]["cmd"] == "sleep")
    same_as_dicts(manager, "talk")
    # uptime goes on without a change
    up = json.loads(manager.info_json("talk"))["processes"][-1]["uptime"]
    wait_for(lambda: json.loads(manager.info_json("talk"))["processes"][-1]["uptime"] > up)


def test_info_over_the_bus_is_the_cached_answer(zsupd_factory):
    d = zsupd_factory("[process:web]\ncmd = sleep 300\nnumprocesses = 3\n")
    info = wait_for(lambda: (i := d.call("info", name="web"))["running"] == 3 and i)
    assert [p["state"] for p in info["processes"]] == ["running"] * 3
    assert info["config"]["cmd"] == "sleep 300" and info["job"] == "default.web"
    d.call("stop_job", name="web")
    wait_for(lambda: d.call("info", name="web")["running"] == 0)


def test_cached_info_follows_readiness_and_health(manager, tmp_path):
    """The readiness fields come from the process's life (ProcLife.version keys the cache):
    starting, then ready once the check passes, then unhealthy with its reason."""
    flag = tmp_path / "ok"
    manager.load({"name": "svc", "cmd": "sleep", "args": ["300"], "numprocesses": 1,
                  "ready": f"cmd:test -e {flag}", "health": f"cmd:test -e {flag}", "health_interval": 0.1})
    wait_for(lambda: json.loads(manager.info_json("svc"))["processes"][0]["state"] == "running")
    assert json.loads(manager.info_json("svc"))["processes"][0]["readiness"] == "starting"
    flag.write_text("")
    wait_for(lambda: json.loads(manager.info_json("svc"))["processes"][0]["readiness"] == "ready")
    same_as_dicts(manager, "svc")
    flag.unlink()
    wait_for(lambda: json.loads(manager.info_json("svc"))["processes"][0]["health_failures"] > 0)
    same_as_dicts(manager, "svc")


def test_cached_info_with_percent_signs(manager):
    """An argument with `%` in it survives the per-call formatting of the cache."""
    manager.load({"name": "pct", "cmd": "sh", "args": ["-c", "echo 100%d; sleep 300"], "numprocesses": 1})
    wait_for(lambda: json.loads(manager.info_json("pct"))["processes"][0]["last_seq"]["stdout"] == 1)
    info = same_as_dicts(manager, "pct")
    assert info["processes"][0]["args"] == ["-c", "echo 100%d; sleep 300"]


def test_cached_info_of_a_stop_says_stopping(manager):
    """A stop keeps each process's cached fragment (only the state moves, and it is formatted
    per call): the stop's own answer and the next ones say `stopping`, then the exits show."""
    manager.load({"name": "slow", "cmd": "sh", "args": ["-c", "trap '' TERM; echo up; sleep 300"],
                  "numprocesses": 2, "graceful_timeout": 30})
    wait_for(lambda: all(p["last_seq"]["stdout"] == 1 for p in manager.info("slow")["processes"]) and
             len(manager.info("slow")["processes"]) == 2)
    same_as_dicts(manager, "slow")
    answer = json.loads(manager.stop_job("slow"))
    assert [p["state"] for p in answer["processes"]] == ["stopping"] * 2
    assert [p["state"] for p in same_as_dicts(manager, "slow")["processes"]] == ["stopping"] * 2
    for proc in answer["processes"]:
        os.killpg(proc["os_pid"], signal.SIGKILL)
    wait_for(lambda: json.loads(manager.info_json("slow"))["processes"] == [])


def test_a_spawn_burst_leaves_every_fragment_made(manager):
    """Once a burst of spawns is over, zsupd makes the new processes' fragments while nothing
    waits (Job.warm_info): the next answer (a stop's, say) joins cached bytes."""
    manager.load({"name": "many", "cmd": "sleep", "args": ["300"], "numprocesses": 150})
    wait_for(lambda: manager.info("many")["running"] == 150)

    def stale():
        job = manager._job("many")
        return [p.pid for p in job.all_processes() if p._json_life != getattr(p, "life", None).version]

    wait_for(lambda: manager.run_supervised(stale) == [], message="every fragment made after the burst")
    answer = json.loads(manager.stop_job("many"))
    assert [p["state"] for p in answer["processes"]] == ["stopping"] * 150
    wait_for(lambda: manager.info("many")["processes"] == [])
