"""Output kept on disk by a real zsupd: every line, whole, in order, through rotation and errors."""

import gzip
import os
import shutil
import signal

from conftest import PYTHON, wait_for

from zsup.core.logfiles import read_log


def log_lines(d, job, label="stdout"):
    paths = d.call("log_paths", name=job, label=label)["paths"][label]
    return list(read_log(paths))


def test_burst_from_four_processes_is_all_in_the_files(zsupd_factory):
    n = 50_000
    d = zsupd_factory(f"[process:burst]\ncmd = {PYTHON}\nargs = -c \"for i in range({n}): print(i)\"\n"
                      "numprocesses = 0\nring_size = 10\n")
    pids = [d.call("commit", name="burst")["pid"] for _ in range(4)]
    wait_for(lambda: len(log_lines(d, "burst")) == 4 * n, timeout=60, interval=0.2,
             message="200,000 lines in the log file")
    by_pid = {}
    for rec in log_lines(d, "burst"):
        by_pid.setdefault(rec.pid, []).append(rec)
    assert sorted(by_pid) == sorted(pids)
    for recs in by_pid.values():
        assert [r.seq for r in recs] == list(range(1, n + 1))
        assert [r.line for r in recs] == [str(i) for i in range(n)]
    # lines arrive in batches: most carry their seq implicitly (`TIME PID: line`)
    path = d.call("log_paths", name="burst", label="stdout")["paths"]["stdout"][0]
    with open(path, "rb") as f:
        idents = [line.split(b" ", 2)[1] for line in f]
    assert sum(ident.endswith(b":") for ident in idents) > len(idents) // 2


def test_rotation_by_size_with_compression(zsupd_factory):
    d = zsupd_factory(f"[process:rot]\ncmd = {PYTHON}\nargs = -c \"for i in range(20000): print('line', i)\"\n"
                      "numprocesses = 0\nlog_max_bytes = 100000\nlog_backups = 3\n")
    d.call("commit", name="rot")
    paths = lambda: d.call("log_paths", name="rot", label="stdout")["paths"]["stdout"]
    # one read per try: a rotation between two reads would see the new, empty file
    wait_for(lambda: [r.seq for r in log_lines(d, "rot")[-1:]] == [20000], timeout=30,
             message="the last line on disk")
    wait_for(lambda: len(paths()) == 4 and all(p.endswith(".gz") for p in paths()[1:]), timeout=30,
             message="3 compressed backups")
    for p in paths()[1:]:
        with gzip.open(p) as f:
            first = f.readline()
        assert not first.split(b" ", 2)[1].endswith(b":"), f"{p} starts without an explicit seq"
    assert [r.seq for r in log_lines(d, "rot")] == list(range(log_lines(d, "rot")[0].seq, 20001))
    assert all(os.path.getsize(p) <= 100_000 for p in paths()[:1])
    assert log_lines(d, "rot")[-1].line == "line 19999"


def test_reopen_after_external_move(zsupd_factory, tmp_path):
    d = zsupd_factory(f"[process:echo]\ncmd = {PYTHON}\nargs = {os.path.dirname(__file__)}/../etc/echo.py\n"
                      "redirect_input = true\n")
    pid = d.call("pids", name="echo")[0]
    path = d.call("log_paths", name="echo", label="stdout")["paths"]["stdout"][0]
    d.call("send", pid=pid, data="before\n")
    wait_for(lambda: os.path.exists(path) and b"before" in open(path, "rb").read())
    moved = str(tmp_path / "moved.log")
    shutil.move(path, moved)
    os.kill(d.proc.pid, signal.SIGUSR1)  # what logrotate's postrotate does
    d.call("reopen_logs")
    d.call("send", pid=pid, data="after\n")
    wait_for(lambda: os.path.exists(path) and b"after" in open(path, "rb").read())
    assert b"after" not in open(moved, "rb").read()


def test_unwritable_log_folder_never_stops_supervision(zsupd_factory, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the log folder should be")
    d = zsupd_factory(f"[zsup]\nlog_dir = {blocker}/logs\n"
                      "[process:talk]\ncmd = sh -c 'while true; do echo tick; sleep 0.02; done'\n")
    pid = d.call("pids", name="talk")[0]
    # supervision carries on: output still reaches the ring, a crash is still restarted
    wait_for(lambda: d.call("read_output", pid=pid)["last_seq"] > 5)
    d.call("stop_process", pid=pid)
    wait_for(lambda: [p for p in d.call("pids", name="talk") if p != pid])
    wait_for(lambda: "log files" in d.log(), message="the log-files error in zsupd's log")
    blocker.unlink()  # space comes back: writing resumes by itself
    path = d.call("log_paths", name="talk", label="stdout")["paths"]["stdout"][0]
    wait_for(lambda: os.path.exists(path) and b"tick" in open(path, "rb").read(), timeout=15)
