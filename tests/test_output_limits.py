"""Limits that keep a real zsupd's memory bounded whatever its children write."""

import psutil
from conftest import PYTHON, wait_for

LINE = 512 * 1024  # bytes per line, newline included
LINES = 400  # 200 MiB in all

WRITER = (f"import sys, time; out = sys.stdout.buffer; body = b'x' * ({LINE} - 10) + b'\\n'\n"
          f"for i in range({LINES}): out.write(b'%08d ' % i + body)\n"
          "out.write(b'done\\n'); out.flush(); time.sleep(120)\n")


def test_ring_bounded_in_bytes_under_huge_lines(zsupd_factory, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    d = zsupd_factory(f"[process:big]\ncmd = {PYTHON}\nargs = {script}\nnumprocesses = 0\nlog = false\n"
                      "max_line = 1048576\nring_max_bytes = 2M\n")
    zsupd = psutil.Process(d.proc.pid)
    before = zsupd.memory_info().rss
    pid = d.call("commit", name="big")["pid"]
    peak = before

    def finished():
        nonlocal peak
        peak = max(peak, zsupd.memory_info().rss)
        return d.call("read_output", pid=pid, limit=1)["last_seq"] == LINES + 1

    wait_for(finished, timeout=60, interval=0.02, message="all 200 MiB read")
    growth = (peak - before) / 2**20
    # Without the byte bound the ring keeps 1000 lines: all 200 MiB of them.
    assert growth < 80, f"zsupd grew by {growth:.0f} MiB"
    newest = d.call("read_output", pid=pid, limit=3)["lines"]
    assert [line["seq"] for line in newest] == [LINES - 1, LINES, LINES + 1]
    assert newest[-1]["data"] == "done\n"
    assert newest[-2]["data"].startswith(f"{LINES - 1:08d} xxx")
    assert len(newest[-2]["data"]) == LINE


def test_ring_drops_whole_batches_by_bytes_and_keeps_the_newest():
    from zsup.core.output import OutputStream

    stream = OutputStream("stdout", ring_size=1000, ring_max_bytes=1000)
    for i in range(50):
        stream.feed(b"".join(b"%04d %s\n" % (i * 10 + k, b"y" * 44) for k in range(10)))  # 500 bytes
    lines = stream.read()
    assert [seq for seq, _ in lines] == list(range(481, 501))  # the two newest batches: 1000 bytes
    assert lines[-1][1].startswith(b"0499 ")
    big = b"z" * 5000 + b"\n"  # a batch larger than the bound is kept whole, alone
    stream.feed(big)
    assert stream.read() == [(501, big)]
    assert stream.read(limit=1) == [(501, big)]
