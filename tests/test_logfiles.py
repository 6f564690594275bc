"""Log files on real disks: ordering, rotation, compression, reopen, disk trouble, reading back."""

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from zsup.core.logfiles import LogSettings, LogWriter, log_paths, read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = "default.web"


def wait_for(condition, timeout=10.0, interval=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


class FakeClock:
    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now


@pytest.fixture
def errors():
    return []


@pytest.fixture
def make_writer(errors):
    writers = []

    def make(**kwargs):
        w = LogWriter(on_error=errors.append, **kwargs)
        w.start()
        writers.append(w)
        return w

    yield make
    for w in writers:
        w.stop()


def lines_of(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with a partial line"
    return data.split(b"\n")[:-1]


def parse_text(line, last=None):
    """(stamp, pid, seq, text) of a text line. A line without its seq (`TIME PID: text`) gets
    `last[pid] + 1` (None without `last`); `last` is updated."""
    stamp, ident, text = line.split(b" ", 2)
    pid, seq = ident.split(b":")
    pid = int(pid)
    if seq:
        seq = int(seq)
    else:
        seq = None if last is None or last.get(pid) is None else last[pid] + 1
    if last is not None:
        last[pid] = seq
    return stamp, pid, seq, text


def seqs_of(paths):
    """The seqs of the text files `paths` (oldest first), implicit ones inferred per pid."""
    last = {}
    return [parse_text(line, last)[2] for path in paths for line in lines_of(path)]


def test_settings_merge_and_checks():
    defaults = LogSettings(log_dir="/var/log/zsup", log_max_bytes=5)
    merged = LogSettings.merge(defaults, {"log": None, "log_format": "json", "log_backups": 0, "cmd": "x"})
    assert merged == LogSettings(log_dir="/var/log/zsup", log_max_bytes=5, log_format="json", log_backups=0)
    assert LogSettings.merge(defaults, {}) is defaults
    assert LogSettings.merge(defaults, {"log": False}).log is False
    for bad in ({"log_format": "xml"}, {"log_rotate": "weekly"}, {"log_max_bytes": -1},
                {"log_file": "%(nope)s.log"}):
        with pytest.raises(ValueError):
            LogSettings(**bad)


def test_default_path_and_template(tmp_path):
    s = LogSettings(log_dir=str(tmp_path))
    assert log_paths("app.web", "stderr", s) == [str(tmp_path / "app.web.stderr.log")]
    assert log_paths("web", "out", s) == [str(tmp_path / "default.web.out.log")]
    t = LogSettings(log_dir=str(tmp_path), log_file="%(session)s/%(name)s-%(label)s-%(pid)s.log")
    assert log_paths("app.web", "stdout", t, pid=7) == [str(tmp_path / "app" / "web-stdout-7.log")]


def test_log_false_writes_nothing(tmp_path, make_writer):
    w = make_writer()
    s = LogSettings(log=False, log_dir=str(tmp_path))
    w.write(JOB, "stdout", s, 1, 100, 1, b"hello\n")
    assert w.flush(5)
    assert os.listdir(tmp_path) == []


def test_many_writers_whole_lines_in_order(tmp_path, make_writer):
    w = make_writer()
    s = LogSettings(log_dir=str(tmp_path), log_max_bytes=0)
    per_pid = 50_000

    def produce(pid):
        seq = 1
        while seq <= per_pid:
            n = min(1 + (seq * 7 + pid) % 60, per_pid - seq + 1)
            data = b"".join(b"pid %d line %d\n" % (pid, i) for i in range(seq, seq + n))
            w.write(JOB, "stdout", s, pid, 1000 + pid, seq, data)
            seq += n

    threads = [threading.Thread(target=produce, args=(pid,)) for pid in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.flush(30)
    path = log_paths(JOB, "stdout", s)[0]
    last = {pid: 0 for pid in range(1, 5)}
    explicit = 0
    for line in lines_of(path):
        prev = dict(last)
        _, pid, seq, text = parse_text(line, last)
        explicit += b"%d:%d " % (pid, seq) in line
        assert seq == prev[pid] + 1, f"pid {pid}: {seq} after {prev[pid]}"
        assert text == b"pid %d line %d" % (pid, seq)
    assert last == {pid: per_pid for pid in range(1, 5)}
    assert explicit < 4 * per_pid // 10  # most lines carry their seq implicitly
    by_pid = {}
    for r in read_log([path]):
        by_pid.setdefault(r.pid, []).append(r)
    for pid, records in by_pid.items():
        assert [r.seq for r in records] == list(range(1, per_pid + 1))
        assert [r.line for r in records] == ["pid %d line %d" % (pid, i) for i in range(1, per_pid + 1)]
    stats = w.stats()
    assert stats["lines_written"] == 4 * per_pid and stats["lines_dropped"] == 0
    assert stats["files_open"] == 1


def test_throughput_print(tmp_path, make_writer):
    """Not an assertion on speed (benchmarks do that): shows the order of magnitude."""
    w = make_writer()
    s = LogSettings(log_dir=str(tmp_path), log_max_bytes=0)
    batch = b"".join(b"short line %d\n" % i for i in range(1000))
    n_batches = 1000
    start = time.perf_counter()
    for i in range(n_batches):
        w.write(JOB, "stdout", s, 1, 1, 1 + i * 1000, batch)
    queued = time.perf_counter()
    assert w.flush(60)
    done = time.perf_counter()
    total = n_batches * 1000
    assert w.stats()["lines_written"] == total
    print(f"\nlog writer: {total / (done - start):,.0f} lines/s written, "
          f"write() {(queued - start) / n_batches * 1e6:.2f} us per 1000-line batch")


def test_rotation_by_size_with_compression(tmp_path, make_writer):
    w = make_writer()
    s = LogSettings(log_dir=str(tmp_path), log_max_bytes=2000, log_backups=3)
    total = 600
    for seq in range(1, total + 1):
        w.write(JOB, "stdout", s, 1, 1, seq, b"line number %05d\n" % seq)
        if seq % 50 == 0:
            assert w.flush(5)  # several flushes: rotation must work across them too
    assert w.flush(5)
    base = log_paths(JOB, "stdout", s)[0]
    expected = [base] + [f"{base}.{i}.gz" for i in (1, 2, 3)]
    assert wait_for(lambda: w.stats()["compress_pending"] == 0 and sorted(os.listdir(tmp_path))
                    == sorted(os.path.basename(p) for p in expected)), os.listdir(tmp_path)
    assert log_paths(JOB, "stdout", s) == expected
    for path in expected:
        lines = lines_of(path)
        size = sum(len(line) + 1 for line in lines)
        assert 0 < size <= 2000
    seqs = seqs_of(reversed(expected))
    assert seqs == list(range(seqs[0], total + 1))  # contiguous, newest kept, oldest dropped
    assert seqs[0] > 1
    assert [r.seq for r in read_log(expected)] == seqs
    assert w.stats()["rotations"] >= 4


def test_line_larger_than_max_bytes_is_kept_whole(tmp_path, make_writer):
    w = make_writer()
    s = LogSettings(log_dir=str(tmp_path), log_max_bytes=100, log_backups=5)
    big = b"x" * 300
    w.write(JOB, "stdout", s, 1, 1, 1, b"a\n" + big + b"\nb\n")
    assert w.flush(5)
    assert wait_for(lambda: w.stats()["compress_pending"] == 0)
    records = list(read_log(log_paths(JOB, "stdout", s)))
    assert [(r.seq, r.line) for r in records] == [(1, "a"), (2, big.decode()), (3, "b")]


def test_rotation_by_time(tmp_path, make_writer):
    start = time.mktime((2026, 11, 25, 14, 10, 0, 0, 0, -1))
    clock = FakeClock(start)
    w = make_writer(clock=clock)
    s = LogSettings(log_dir=str(tmp_path), log_rotate="hourly", log_backups=5)
    w.write(JOB, "stdout", s, 1, 1, 1, b"first\n")
    clock.now = start + 600
    w.write(JOB, "stdout", s, 1, 1, 2, b"same hour\n")
    clock.now = start + 3600
    w.write(JOB, "stdout", s, 1, 1, 3, b"next hour\n")
    clock.now = start + 3600 + 86400
    w.write(JOB, "stdout", s, 1, 1, 4, b"next day\n")
    assert w.flush(5)
    base = log_paths(JOB, "stdout", s)[0]
    assert wait_for(lambda: os.path.exists(base + ".2.gz") and not os.path.exists(base + ".2")
                    and not os.path.exists(base + ".1"))
    assert [parse_text(x)[3] for x in lines_of(base + ".2.gz")] == [b"first", b"same hour"]
    assert [parse_text(x)[3] for x in lines_of(base + ".1.gz")] == [b"next hour"]
    assert [parse_text(x)[3] for x in lines_of(base)] == [b"next day"]
    stamp = parse_text(lines_of(base)[0])[0].decode()
    assert stamp == time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(start + 3600 + 86400))


def test_reopen_after_move(tmp_path, make_writer):
    w = make_writer()
    s = LogSettings(log_dir=str(tmp_path))
    base = log_paths(JOB, "stdout", s)[0]
    w.write(JOB, "stdout", s, 1, 1, 1, b"before\n")
    assert w.flush(5)
    os.rename(base, base + ".moved")
    w.reopen()
    w.write(JOB, "stdout", s, 1, 1, 2, b"after\n")
    assert w.flush(5)
    assert [parse_text(x)[3] for x in lines_of(base + ".moved")] == [b"before"]
    assert [parse_text(x)[3] for x in lines_of(base)] == [b"after"]


def test_unusable_folder_reports_once_and_resumes(tmp_path, make_writer, errors):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    w = make_writer()
    s = LogSettings(log_dir=str(blocker / "logs"))
    seq = 0

    def write_some():
        nonlocal seq
        for _ in range(10):
            seq += 1
            w.write(JOB, "stdout", s, 1, 1, seq, b"line %d\n" % seq)
        return w.flush(5)

    # Keep writing through several retry periods: still one notification.
    assert wait_for(lambda: write_some() and w.stats()["write_errors"] >= 3, timeout=15, interval=0.05)
    assert len(errors) == 1 and "Not a directory" in errors[0]
    assert w.stats()["lines_dropped"] > 0
    blocker.unlink()
    base = log_paths(JOB, "stdout", s)[0]
    assert wait_for(lambda: write_some() and os.path.exists(base) and lines_of(base), timeout=15, interval=0.05)
    seqs = seqs_of([base])
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert len(errors) == 1
    stats = w.stats()
    assert stats["lines_written"] + stats["lines_dropped"] == seq


def test_deleted_folder_is_recreated(tmp_path, make_writer, errors):
    w = make_writer()
    folder = tmp_path / "logs"
    s = LogSettings(log_dir=str(folder))
    base = log_paths(JOB, "stdout", s)[0]
    w.write(JOB, "stdout", s, 1, 1, 1, b"one\n")
    assert w.flush(5)
    shutil.rmtree(folder)
    seq = 1

    def write_one():
        nonlocal seq
        seq += 1
        w.write(JOB, "stdout", s, 1, 1, seq, b"line %d\n" % seq)
        return w.flush(5)

    assert wait_for(lambda: write_one() and os.path.exists(base) and lines_of(base), timeout=15, interval=0.05)
    assert len(errors) == 1 and "removed" in errors[0]
    last = seq
    write_one()
    assert seqs_of([base])[-1] == last + 1


RLIMIT_SCRIPT = textwrap.dedent("""
    import json, os, resource, signal, sys, time
    sys.path.insert(0, sys.argv[1])
    from zsup.core.logfiles import LogSettings, LogWriter, log_paths

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, hard))
    errors = []
    w = LogWriter(on_error=errors.append)
    w.start()
    s = LogSettings(log_dir=sys.argv[2], log_max_bytes=0)
    seq = 0
    def write_some():
        global seq
        for _ in range(100):
            seq += 1
            w.write("default.web", "stdout", s, 1, 1, seq, b"a line of output %d\\n" % seq)
        w.flush(5)
    deadline = time.monotonic() + 15
    while w.stats()["write_errors"] < 3 and time.monotonic() < deadline:
        write_some()
        time.sleep(0.05)
    path = log_paths("default.web", "stdout", s)[0]
    full = dict(w.stats(), size=os.path.getsize(path), errors=list(errors))
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    deadline = time.monotonic() + 15
    while os.path.getsize(path) <= 20000 and time.monotonic() < deadline:
        write_some()
        time.sleep(0.05)
    w.stop()
    print(json.dumps({"full": full, "after": dict(w.stats(), size=os.path.getsize(path), errors=errors,
                      sent=seq)}))
""")


def test_file_size_limit_reports_once_and_resumes(tmp_path):
    proc = subprocess.run([sys.executable, "-c", RLIMIT_SCRIPT, ROOT, str(tmp_path)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    full, after = result["full"], result["after"]
    assert full["write_errors"] >= 3 and full["lines_dropped"] > 0
    assert len(full["errors"]) == 1 and "File too large" in full["errors"][0]
    assert full["size"] <= 20000
    assert len(after["errors"]) == 1
    assert after["size"] > 20000
    assert after["lines_written"] + after["lines_dropped"] == after["sent"]
    path = log_paths(JOB, "stdout", LogSettings(log_dir=str(tmp_path)))[0]
    seqs = []
    last = {}
    for line in lines_of(path):  # whole lines only, even where a write was cut by the limit
        _, pid, seq, text = parse_text(line, last)
        assert text == b"a line of output %d" % seq
        seqs.append(seq)
    assert seqs == sorted(seqs) and seqs[-1] == after["sent"]


def test_json_format(tmp_path, make_writer):
    clock = FakeClock(1_795_000_000.25)
    w = make_writer(clock=clock)
    s = LogSettings(log_dir=str(tmp_path), log_format="json")
    w.write(JOB, "stderr", s, 3, 4242, 10, b'say "hi"\n\xff bad utf-8\n')
    w.write(JOB, "stderr", s, 3, 4242, 12, b"piece of a long line")
    assert w.flush(5)
    base = log_paths(JOB, "stderr", s)[0]
    objs = [json.loads(line) for line in lines_of(base)]
    assert objs == [
        {"time": "2026-11-18T11:06:40.250000Z", "pid": 3, "os_pid": 4242, "seq": 10, "label": "stderr",
         "line": 'say "hi"'},
        {"time": "2026-11-18T11:06:40.250000Z", "pid": 3, "os_pid": 4242, "seq": 11, "label": "stderr",
         "line": "\ufffd bad utf-8"},
        {"time": "2026-11-18T11:06:40.250000Z", "pid": 3, "os_pid": 4242, "seq": 12, "label": "stderr",
         "line": "piece of a long line"},
    ]
    records = list(read_log([base]))
    assert [(r.pid, r.seq, r.line, r.os_pid, r.label) for r in records] == [
        (3, 10, 'say "hi"', 4242, "stderr"), (3, 11, "\ufffd bad utf-8", 4242, "stderr"),
        (3, 12, "piece of a long line", 4242, "stderr")]
    assert records[0].time == 1_795_000_000.25


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_read_log_since_and_limit_across_gz(tmp_path, make_writer, log_format):
    start = 1_795_000_000.0
    clock = FakeClock(start)
    w = make_writer(clock=clock)
    s = LogSettings(log_dir=str(tmp_path), log_max_bytes=1500, log_backups=50, log_format=log_format)
    total = 300
    for seq in range(1, total + 1):
        clock.now = start + seq
        w.write(JOB, "stdout", s, 2, 99, seq, b"entry %d\n" % seq)
    assert w.flush(5)
    assert wait_for(lambda: w.stats()["compress_pending"] == 0)
    paths = log_paths(JOB, "stdout", s)
    assert len(paths) > 5 and all(p.endswith(".gz") for p in paths[1:])
    every = list(read_log(paths))
    assert [r.seq for r in every] == list(range(1, total + 1))
    assert every[9].time == start + 10 and every[9].line == "entry 10" and every[9].pid == 2
    assert [r.seq for r in read_log(paths, since=start + 101)] == list(range(101, total + 1))
    assert [r.seq for r in read_log(paths, limit=7)] == list(range(total - 6, total + 1))
    assert [r.seq for r in read_log(paths, since=start + 290, limit=50)] == list(range(290, total + 1))
    assert [r.seq for r in read_log(paths, since=start + 50, limit=1000)] == list(range(50, total + 1))
    assert list(read_log(paths, limit=0)) == []
    assert [r.seq for r in w.read(JOB, "stdout", s, since=start + 299)] == [299, 300]


def test_pid_template_read_merges_processes(tmp_path, make_writer):
    clock = FakeClock(1_795_000_000.0)
    w = make_writer(clock=clock)
    s = LogSettings(log_dir=str(tmp_path), log_file="%(name)s-%(pid)s.%(label)s.log")
    for i in range(1, 7):
        clock.now += 1
        pid = 1 + i % 2
        w.write(JOB, "stdout", s, pid, 1, i, b"from %d\n" % pid)
    assert w.flush(5)
    paths = w.paths(JOB, "stdout", s)
    assert paths == [str(tmp_path / "web-1.stdout.log"), str(tmp_path / "web-2.stdout.log")]
    assert [(r.pid, r.seq) for r in w.read(JOB, "stdout", s)] == [(2, 1), (1, 2), (2, 3), (1, 4), (2, 5), (1, 6)]
    assert [(r.pid, r.seq) for r in w.read(JOB, "stdout", s, limit=2)] == [(2, 5), (1, 6)]


def test_reading_while_rotating_sees_no_gap_or_duplicate(tmp_path, make_writer):
    w = make_writer()
    s = LogSettings(log_dir=str(tmp_path), log_max_bytes=1500, log_backups=100)
    total = 6000
    done = threading.Event()

    def produce():
        for seq in range(1, total + 1):
            w.write(JOB, "stdout", s, 1, 1, seq, b"line %d\n" % seq)
            if seq % 20 == 0:
                time.sleep(0)  # let reads interleave with rotations and compressions
        w.flush(10)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    reads = 0
    try:
        while not done.is_set() or reads < 3:
            seqs = [r.seq for r in w.read(JOB, "stdout", s)]
            if seqs:
                assert seqs == list(range(seqs[0], seqs[-1] + 1))
            reads += 1
    finally:
        producer.join()
    assert w.stats()["rotations"] > 20
    assert wait_for(lambda: w.stats()["compress_pending"] == 0)
    seqs = [r.seq for r in w.read(JOB, "stdout", s)]
    assert seqs == list(range(seqs[0], total + 1))


# --- the text format: one explicit seq per batch, implicit ones after it ----------------------


def test_text_batch_format(tmp_path, make_writer):
    clock = FakeClock(1_795_000_000.25)
    w = make_writer(clock=clock)
    s = LogSettings(log_dir=str(tmp_path))
    w.write(JOB, "stdout", s, 3, 4242, 17, b"first\nsecond  with  spaces\n\nfourth\n")
    w.write(JOB, "stdout", s, 3, 4242, 21, b"alone\n")
    w.write(JOB, "stdout", s, 3, 4242, 22, b"piece of a long line")
    w.write(JOB, "stdout", s, 3, 4242, 23, b"a\nlast without newline")
    assert w.flush(5)
    base = log_paths(JOB, "stdout", s)[0]
    t = b"2026-11-18T11:06:40.250000Z"
    assert open(base, "rb").read() == (
        t + b" 3:17 first\n" + t + b" 3: second  with  spaces\n" + t + b" 3: \n" + t + b" 3: fourth\n"
        + t + b" 3:21 alone\n" + t + b" 3:22 piece of a long line\n"
        + t + b" 3:23 a\n" + t + b" 3: last without newline\n")
    records = list(read_log([base]))
    assert [(r.pid, r.seq, r.line) for r in records] == [
        (3, 17, "first"), (3, 18, "second  with  spaces"), (3, 19, ""), (3, 20, "fourth"), (3, 21, "alone"),
        (3, 22, "piece of a long line"), (3, 23, "a"), (3, 24, "last without newline")]
    assert all(r.time == 1_795_000_000.25 for r in records)
    assert w.stats()["lines_written"] == 8


def test_implicit_seqs_across_batches_and_interleaved_pids(tmp_path, make_writer):
    w = make_writer()
    s = LogSettings(log_dir=str(tmp_path))
    expected = {1: [], 2: [], 3: []}
    next_seq = {1: 1, 2: 100, 3: 5}
    for round_ in range(30):
        for pid in (1, 2, 3):
            n = 1 + (round_ * pid) % 7
            if pid == 3 and round_ % 10 == 9:
                next_seq[pid] += 50  # lines lost upstream: the next batch's explicit seq jumps
            seq = next_seq[pid]
            w.write(JOB, "stdout", s, pid, 1, seq, b"".join(b"%d/%d\n" % (pid, seq + i) for i in range(n)))
            expected[pid] += range(seq, seq + n)
            next_seq[pid] = seq + n
    assert w.flush(5)
    base = log_paths(JOB, "stdout", s)[0]
    got = {1: [], 2: [], 3: []}
    for r in read_log([base]):
        assert r.line == "%d/%d" % (r.pid, r.seq)
        got[r.pid].append(r.seq)
    assert got == expected
    tail = list(read_log([base], limit=10))
    assert all(r.line == "%d/%d" % (r.pid, r.seq) for r in tail)


def write_file(path, lines):
    with open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def test_file_starting_mid_batch_has_unknown_then_known_seqs(tmp_path):
    t = b"2026-11-18T11:06:40.250000Z"
    base = str(tmp_path / "default.web.stdout.log")
    older = [t + b" 1:10 a10", t + b" 1: a11", t + b" 2:7 b7", t + b" 1: a12"]
    # the older file's batch of pid 1 goes on in the newer file (not something zsupd writes)
    newer = [t + b" 1: a13", t + b" 2: b8", t + b" 1: a14", t + b" 1:15 a15", t + b" 2: b9", t + b" 1: a16"]
    write_file(base + ".1", older)
    write_file(base, newer)
    alone = [(r.pid, r.seq, r.line) for r in read_log([base])]
    assert alone == [(1, None, "a13"), (2, None, "b8"), (1, None, "a14"), (1, 15, "a15"), (2, None, "b9"),
                     (1, 16, "a16")]
    # with the older file there, every seq is known: streaming, and reading the tail
    both = [(1, 10), (1, 11), (2, 7), (1, 12), (1, 13), (2, 8), (1, 14), (1, 15), (2, 9), (1, 16)]
    assert [(r.pid, r.seq) for r in read_log([base, base + ".1"])] == both
    assert [(r.pid, r.seq) for r in read_log([base, base + ".1"], limit=8)] == both[-8:]
    assert [(r.pid, r.seq) for r in read_log([base], limit=2)] == [(2, None), (1, 16)]
    # the older file deleted (the backups limit): the oldest file left starts mid-batch
    os.unlink(base + ".1")
    assert [r.seq for r in read_log([base], limit=100)] == [None, None, None, 15, None, 16]


def test_batch_larger_than_a_file_is_split_with_explicit_seqs(tmp_path, make_writer):
    w = make_writer()
    s = LogSettings(log_dir=str(tmp_path), log_max_bytes=2000, log_backups=100)
    w.write(JOB, "stdout", s, 1, 1, 1, b"first\n")
    w.write(JOB, "stdout", s, 1, 1, 2, b"".join(b"line %d\n" % i for i in range(2, 1002)))
    w.write(JOB, "stdout", s, 1, 1, 1002, b"last\n")
    assert w.flush(10)
    assert wait_for(lambda: w.stats()["compress_pending"] == 0)
    paths = log_paths(JOB, "stdout", s)
    assert len(paths) > 10
    for path in paths:
        lines = lines_of(path)
        assert parse_text(lines[0])[2] is not None, f"{path} starts without an explicit seq"
        assert sum(len(line) + 1 for line in lines) <= 2000
    for path in paths[1:-1]:  # pieces fill the files: no half-empty file in the middle
        assert sum(len(line) + 1 for line in lines_of(path)) > 2000 - 60
    records = list(read_log(paths))
    assert [r.seq for r in records] == list(range(1, 1003))
    assert [r.line for r in records] == ["first"] + ["line %d" % i for i in range(2, 1002)] + ["last"]
    assert [r.seq for r in read_log(paths, limit=500)] == list(range(503, 1003))
    assert w.stats()["lines_written"] == 1002
