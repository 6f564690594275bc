"""zsupctl tail, logs -f and watch while zsupd goes away and comes back (real processes)."""

import os
import queue
import signal
import threading

import pytest
from conftest import kill_tree, wait_for
from test_zsupctl import Streamer, wait_running

TALK = "[process:talk]\ncmd = sh -c 'i=0; while :; do i=$((i+1)); echo line $i; sleep 0.02; done'\n"


class Follower(Streamer):
    """A Streamer whose stderr is read too (`errors`)."""

    def __init__(self, d, *args):
        super().__init__(d, *args)
        self.errors = []
        self._errq = queue.Queue()
        threading.Thread(target=self._read_errors, daemon=True).start()

    def _read_errors(self):
        for line in self.proc.stderr:
            self._errq.put(line.rstrip("\n"))

    def wait_error(self, text, timeout=15):
        def check():
            while not self._errq.empty():
                self.errors.append(self._errq.get())
            return any(text in line for line in self.errors)
        try:
            wait_for(check, timeout=timeout, interval=0.02, message=f"{text!r} on stderr")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stderr had {self.errors}") from None

    def texts(self, start=0):
        self._drain()
        return [line.split(" | ")[-1] for line in self.lines[start:]]


def test_followers_say_when_zsupd_goes_away_and_resume_when_it_is_back(zsupd_factory):
    d = zsupd_factory(TALK)
    wait_running(d, "talk", 1)
    tail = Follower(d, "tail", "talk", "-n", "3")
    logs = Follower(d, "logs", "talk", "-f")
    watch = Follower(d, "watch")
    outputs = (tail, logs)
    everyone = (tail, logs, watch)
    try:
        for f in outputs:
            f.wait_for(lambda lines: len(lines) >= 10, message="lines before")
        kids = d.children()
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(10)
        kill_tree(kids)
        for f in everyone:
            f.wait_error("zsupd is not answering")
        cut = {f: len(f.texts()) for f in outputs}  # the old process is gone: no more old lines
        d._log.close()
        d.start()  # a new zsupd on the same endpoints: a new `talk`, numbered from 1 again
        for f in everyone:
            f.wait_error("zsupd is back; resuming")
        for f in outputs:
            # The new process's lines from its first one: what it wrote before the follower
            # was back comes from the ring, the rest live; none lost, none twice.
            f.wait_for(lambda lines: len(f.texts(cut[f])) >= 30, message="lines after")
            after = f.texts(cut[f])
            assert after == [f"line {i}" for i in range(1, len(after) + 1)], after
        assert tail.stop(signal.SIGINT) == 0 and logs.stop(signal.SIGINT) == 0
        # watch goes on showing events (the subscription may take a moment to be back)
        pid = d.call("pids", name="talk")[0]
        d.call("kill", pid=pid, sig="KILL")
        watch.wait_for(lambda lines: any("proc." in line and "talk" in line for line in lines),
                       message="a process event after the restart")
        assert watch.stop(signal.SIGINT) == 0
    finally:
        for f in everyone:
            f.close()


@pytest.mark.parametrize("before", [1, 10], ids=["while-reading-rings", "while-following"])
def test_tail_through_a_stalled_zsupd_loses_and_repeats_nothing(zsupd_factory, before):
    """Stopped at the first line shown, zsupd is most often stalled while tail still reads
    its rings (stdout's printed, stderr's asked for); at the tenth, while it follows."""
    d = zsupd_factory(TALK)
    wait_running(d, "talk", 1)
    wait_for(lambda: d.call("info", name="talk")["processes"][0]["last_seq"].get("stdout", 0) >= 10,
             message="lines in the ring")
    tail = Follower(d, "tail", "talk", "-n", "1000")
    try:
        tail.wait_for(lambda lines: len(lines) >= before, interval=0.001, message="lines before")
        os.kill(d.proc.pid, signal.SIGSTOP)  # alive but not answering: the same processes after
        try:
            tail.wait_error("zsupd is not answering")
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        tail.wait_error("zsupd is back; resuming")
        count = len(tail.texts())
        tail.wait_for(lambda lines: len(lines) >= count + 20, message="lines after")
        lines = tail.texts()
        first = int(lines[0].split()[1])
        assert lines == [f"line {i}" for i in range(first, first + len(lines))]
        assert tail.stop(signal.SIGINT) == 0
    finally:
        tail.close()
