"""No leftovers of a dead process: what is left of its process group is stopped, and the
orphan guard keeps a group until it is empty (real zsupd, real processes)."""

import os
import signal

import psutil
from conftest import alive, kill_tree, wait_for

from zsup.errors import NotFound


def first_line(d, pid):
    return int(wait_for(lambda: d.call("read_output", pid=pid)["lines"], message="the first line")[0]["data"])


def sleeps_under(d):
    """Live `sleep` processes anywhere below zsupd."""
    return [c.pid for c in psutil.Process(d.proc.pid).children(recursive=True)
            if alive(c.pid) and c.name() == "sleep"]


def spawned(d, pid):
    """The job's process `pid` exists or existed (get_process answers for recent exits too)."""
    try:
        return d.call("get_process", pid=pid)["job"] == "default.leaver"
    except NotFound:
        return False


def test_background_child_of_an_exited_process_is_stopped(zsupd_factory):
    # the shell leaves a sleep behind and exits on its own; it is restarted (and does it again)
    d = zsupd_factory("[process:leaver]\ncmd = sh -c 'sleep 300 & echo $!; exit 3'\n")
    pid = 1  # the job's first process: it lives for a moment only, get_process knows it after
    left = first_line(d, pid)
    try:
        wait_for(lambda: not alive(left), timeout=10, message="the left-behind sleep to be stopped")
        # they do not pile up with each crash: a few restarts later, at most the newest lives
        # (the 4th process of the job exists or existed: get_process answers for recent exits too)
        wait_for(lambda: spawned(d, 4), timeout=20, message="a few restarts")
        wait_for(lambda: len(sleeps_under(d)) <= 1, timeout=10, message="no pile of sleeps")
    finally:
        kill_tree([left, *sleeps_under(d)])


def test_background_child_of_a_killed_process_is_stopped(zsupd_factory):
    d = zsupd_factory("[process:family]\ncmd = sh -c 'sleep 300 & echo $!; wait'\n")
    pid = wait_for(lambda: d.call("pids", name="family"))[0]
    left = first_line(d, pid)
    leader = d.call("get_process", pid=pid)["os_pid"]
    try:
        os.kill(leader, signal.SIGKILL)  # an outside signal, not a stop by zsup
        wait_for(lambda: not alive(left), timeout=10, message="the grandchild to be stopped")
    finally:
        kill_tree([left])


def test_a_member_ignoring_the_stop_signal_gets_sigkill(zsupd_factory):
    d = zsupd_factory("[process:stubborn]\ncmd = sh -c \"trap '' TERM; sleep 300 & echo $!\"\n"
                      "numprocesses = 0\ngraceful_timeout = 0.5\n")
    pid = d.call("commit", name="stubborn")["pid"]
    left = first_line(d, pid)
    try:
        wait_for(lambda: d.call("get_process", pid=pid)["state"] == "exited")
        wait_for(lambda: not alive(left), timeout=10, message="SIGKILL after graceful_timeout")
    finally:
        kill_tree([left])


def test_guard_kills_a_lingering_group_when_zsupd_is_sigkilled(zsupd_factory):
    # the leader exits; its child ignores SIGTERM and lingers for graceful_timeout (60 s)
    d = zsupd_factory("[process:stubborn]\ncmd = sh -c \"trap '' TERM; sleep 300 & echo $!\"\n"
                      "numprocesses = 0\ngraceful_timeout = 60\n")
    pid = d.call("commit", name="stubborn")["pid"]
    left = first_line(d, pid)
    try:
        wait_for(lambda: d.call("get_process", pid=pid)["state"] == "exited")
        assert alive(left)
        d.proc.kill()
        d.proc.wait(10)
        wait_for(lambda: not alive(left), timeout=10, message="the guard to kill the lingering group")
    finally:
        kill_tree([left])
