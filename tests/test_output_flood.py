"""A flood of short lines through a real zsupd: every line reaches the log file (with its time
and pid) and the bus (seq without a gap), whole and in order. Nothing here asserts a speed."""

import random
import re
import shutil

from conftest import wait_for

from zsup.bus.client import Subscriber

LINES = 1_000_000
# `TIME PID:SEQ line` or `TIME PID: line` (docs/logs.md); the time's value is not checked.
TEXT_LINE = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\d+):(\d*) ([^\n]*)\n")


def test_a_million_short_lines_reach_the_log_and_the_bus_complete_and_in_order(zsupd_factory, tmp_path):
    data_path = tmp_path / "lines.txt"
    expected = b"".join(b"%d\n" % i for i in range(1, LINES + 1))
    data_path.write_bytes(expected)
    cat = shutil.which("cat")
    d = zsupd_factory("[zsup]\nlog_max_bytes = 0\n\n"
                      "[process:warm]\ncmd = /bin/sh\nargs = -c \"while :; do echo w; sleep 0.02; done\"\n\n"
                      f"[process:flood]\ncmd = {cat}\nargs = {data_path}\nnumprocesses = 0\n")
    sub = Subscriber(d.pub, patterns=["io."])
    try:
        # The subscription must reach zsupd before the flood starts (zmq's slow joiner).
        wait_for(lambda: sub.recv(timeout=0.1) is not None, timeout=10, message="the subscription")
        d.call("unload", name="warm")
        pid = d.call("commit", name="flood")["pid"]

        chunks, next_seq = [], 1

        def bus_complete():
            nonlocal next_seq
            while True:
                ev = sub.recv(timeout=0.05)
                if ev is None:
                    return False
                if ev.msg.get("pid") != pid or ev.msg.get("label") != "stdout":
                    continue
                assert ev.msg["seq"] == next_seq, "a gap or a repeat in the bus's seq"
                assert ev.data.count(b"\n") == ev.msg["lines"]
                next_seq += ev.msg["lines"]
                chunks.append(ev.data)
                if next_seq > LINES:
                    return True

        wait_for(bus_complete, timeout=120, interval=0, message="1,000,000 lines on the bus")
        assert b"".join(chunks) == expected

        path = d.call("log_paths", name="flood", label="stdout")["paths"]["stdout"][0]

        def log_complete():
            with open(path, "rb") as f:
                return f.read().count(b"\n") >= LINES

        wait_for(log_complete, timeout=120, interval=0.1, message="1,000,000 lines in the log file")
        with open(path, "rb") as f:
            content = f.read()
    finally:
        sub.close()
    records = TEXT_LINE.findall(content)
    assert len(records) == LINES == content.count(b"\n"), "a line without its time and pid"
    assert {r[1] for r in records} == {str(pid).encode()}
    assert b"".join(r[3] + b"\n" for r in records) == expected
    # Most lines carry their seq implicitly (the previous one's plus one); every explicit one
    # (the first of each batch) must agree with that count.
    explicit = [(i + 1, int(r[2])) for i, r in enumerate(records) if r[2]]
    assert explicit[0] == (1, 1)
    assert all(implied == seq for implied, seq in explicit)
    assert len(explicit) < LINES // 100, "the batches were not batched"


def test_text_pieces_are_the_whole_batch_with_a_prefix_on_every_line(monkeypatch):
    """The piecewise formatting equals formatting each line alone, for any cut of the pieces."""
    from zsup.core.logfiles import batch

    rnd = random.Random(14)
    for _ in range(400):
        data = b"".join(rnd.choice([b"a", b"bc", b"\n", b"x" * 50, b"\n\n"]) for _ in range(rnd.randint(1, 300)))
        monkeypatch.setattr(batch, "PIECE", rnd.choice([1, 3, 16, 200]))
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        expected = b"".join((b"T 7:5 " if i == 0 else b"T 7: ") + line + b"\n" for i, line in enumerate(lines))
        pieces = list(batch.text_pieces(data, b"T 7:5 ", b"T 7: "))
        assert b"".join(buf for buf, _ in pieces) == expected
        assert sum(k for _, k in pieces) == len(lines) == batch.count_lines(data)
        assert batch.text_size(data, b"T 7:5 ", b"T 7: ", len(lines)) == len(expected)
        end = 0
        for buf, k in pieces:  # a piece that ends lines ends at a line end: a write may stop there
            end += len(buf)
            assert not k or expected[end - 1:end] == b"\n"
