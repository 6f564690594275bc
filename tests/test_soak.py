"""A short chaos soak (tests/soak.py) inside the suite: one seeded run of ~35 s, then one test
per check, so a failing check names itself. `make soak` runs the same driver for minutes.

A check that fails because of a known bug is marked xfail(strict=True) with the bug in one
line: when the fix lands it passes, the strict xfail fails, and the mark goes.
"""

import os
import shutil
import tempfile

import pytest
from soak import Params, run

SECONDS = float(os.environ.get("ZSUP_SOAK_TEST_SECONDS", "35"))
pytestmark = pytest.mark.timeout(SECONDS + 150)


@pytest.fixture(scope="module")
def report():
    # a folder of its own, not pytest's tmp_path: that one may be pruned by another pytest run
    # of the same user while this one is still going
    workdir = tempfile.mkdtemp(prefix="zsup-soak-")
    try:
        r = run(Params(seed=12, seconds=SECONDS, actions=4, workdir=workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(r.summary())
    return r


def of(problems, program):
    return [p for p in problems if p.startswith(program + ":")]


def test_the_schedule_ran(report):
    # every kind of trouble happened at least once, with checks after the quiet spells
    assert report.spells >= 3
    assert {"kill_child", "scale", "reload", "stop_start", "stream_client", "ws_client",
            "restart_zsupd"} <= set(report.actions), report.actions


def test_wanted_counts_after_each_quiet_spell(report):
    assert report.counts == []


def test_no_unlisted_process(report):
    assert report.unlisted == []


def test_nothing_of_the_soak_left_after_stopping(report):
    assert report.leftovers == []


def test_no_lost_or_repeated_counter_line(report):
    assert report.lines == []
    assert min(report.checked.get(kind, 0) for kind in ("log", "bus", "seq")) > 500, report.checked


def test_zsupd_memory_and_threads_bounded(report):
    assert of(report.resources, "zsupd") == []


def test_gateway_memory_and_threads_bounded(report):
    assert of(report.resources, "zsup-http") == []


def test_no_traceback_in_zsupd_log(report):
    assert of(report.tracebacks, "zsupd") == []


def test_no_traceback_in_gateway_log(report):
    assert of(report.tracebacks, "zsup-http") == []
