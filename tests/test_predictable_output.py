"""Predictable output (issue 19): listings sorted (session, name, pid) whatever the order of
loading, and zsup pids never reused, even across restarts of zsupd on the same state dir."""

import os
import signal

from conftest import kill_tree, wait_for

SLEEP = "[process:{name}]\ncmd = sleep 300\nnumprocesses = {n}\n"


def live_pids(d):
    return [pid for row in d.call("status") for pid in row["pids"]]


def test_jobs_and_processes_are_listed_sorted(zsupd_factory):
    d = zsupd_factory(SLEEP.format(name="zeta", n=1) + SLEEP.format(name="alpha", n=2))
    # loaded out of order; `a-b` sorts after `a` as a session, though "-" < "." as characters
    for name, session in (("web", "b"), ("x", "a-b"), ("y", "a"), ("beta", "default")):
        d.call("load", config={"name": name, "cmd": "sleep 300"}, session=session)
    want = ["a.y", "a-b.x", "b.web", "default.alpha", "default.beta", "default.zeta"]
    assert d.call("jobs") == want
    assert d.call("sessions") == ["a", "a-b", "b", "default"]
    wait_for(lambda: len(live_pids(d)) == 7)
    assert [row["job"] for row in d.call("status")] == want
    # a one-shot process (committed) lists with the job's others, in pid order
    d.call("scale", name="alpha", n="=1")
    wait_for(lambda: len(d.call("info", name="alpha")["pids"]) == 1)
    one_off = d.call("commit", name="alpha")["pid"]
    d.call("scale", name="alpha", n="=2")
    wait_for(lambda: len(d.call("info", name="alpha")["pids"]) == 3)
    info = d.call("info", name="alpha")
    assert [p["pid"] for p in info["processes"] if p["state"] != "exited"] == sorted(info["pids"])
    assert one_off in info["pids"] and info["pids"] == sorted(info["pids"]) and info["pids"][-1] != one_off
    assert d.call("pids", name="alpha") == info["pids"]


def test_pids_go_on_across_restarts(zsupd_factory, tmp_path):
    config = SLEEP.format(name="web", n=2)
    d = zsupd_factory(config)
    wait_for(lambda: len(live_pids(d)) == 2)
    first = max(live_pids(d))
    assert d.stop() == 0
    d2 = zsupd_factory(config, path=tmp_path)  # a clean stop: numbering goes on without a gap
    wait_for(lambda: len(live_pids(d2)) == 2)
    assert min(live_pids(d2)) == first + 1
    second = max(live_pids(d2))
    kids = d2.children()
    d2.proc.send_signal(signal.SIGKILL)  # no clean stop: a gap, never a repeat
    d2.proc.wait(10)
    kill_tree(kids)
    d3 = zsupd_factory(config, path=tmp_path)
    wait_for(lambda: len(live_pids(d3)) == 2)
    assert min(live_pids(d3)) > second
    assert os.path.exists(os.path.join(d3.state_dir, "zsupd.db"))
