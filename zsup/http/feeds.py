"""What a subscriber of output receives: events formatted once for all (JSON, SSE) and the
feed of one process's lines that HTTP streams and websockets read.

Formatting is memoized on the shared Event (``busgate.memo``), so a thousand clients of one
stream cost one decode and one format per event. A ``LineFeed`` is read by one client thread;
``Cursors`` is shared by every request thread (it has its own lock).
"""

from __future__ import annotations

import collections
import json
import threading
import time

from zsup.bus.protocol import Event
from zsup.bus.topics import PROC, io_topic, proc_topic
from zsup.errors import NotFound, Unavailable
from zsup.http.busgate import memo

__all__ = [
    "Cursors",
    "LineFeed",
    "event_json",
    "event_json_text",
    "event_line_count",
    "event_lines",
    "sse_event",
    "sse_line",
]


def event_json(event: Event) -> dict:
    """An event as JSON: topic, msg, and for output the lines' text in `data`."""
    out = {"topic": event.topic, "msg": event.msg}
    if event.data is not None:
        out["data"] = event.data.decode("utf-8", "replace")
    return out


def event_json_text(event: Event) -> str:
    """``json.dumps(event_json(event))``, computed once per event for all its consumers."""
    m = memo(event)
    text = m.get("json")
    if text is None:
        text = m["json"] = json.dumps(event_json(event), ensure_ascii=False)
    return text


def event_lines(event: Event) -> list[bytes]:
    """``event.lines()``, split once per event for all its consumers."""
    m = memo(event)
    lines = m.get("lines")
    if lines is None:
        lines = m["lines"] = event.lines()
    return lines


def event_line_count(event: Event) -> int:
    """How many lines (seqs) an output event holds, as split_lines counts them."""
    m = memo(event)
    n = m.get("n")
    if n is None:
        data = event.data or b""
        n = m["n"] = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return n


def sse_line(seq: int, line: bytes, label: str) -> bytes:
    """One output line as an SSE message (id = seq, event = label)."""
    text = line.decode("utf-8", "replace")
    text = text[:-1] if text.endswith("\n") else text
    return f"id: {seq}\nevent: {label}\n{_sse_data(text)}\n".encode("utf-8")


def sse_event(event: Event, label: str) -> bytes:
    """Every line of an output event as SSE messages, formatted once per event and label.

    The same bytes as ``sse_line`` for each line in turn: only ``\\n`` separates lines, and a
    ``\\n`` always ends an invalid UTF-8 sequence, so decoding the whole batch at once gives
    the lines' texts unchanged.
    """
    m = memo(event)
    key = ("sse", label)
    out = m.get(key)
    if out is None:
        seq = event.msg["seq"]
        text = (event.data or b"").decode("utf-8", "replace")
        parts = text.split("\n")
        if parts[-1] == "":
            parts.pop()
        if "\r" in text:
            out = "".join(f"id: {seq + i}\nevent: {label}\n{_sse_data(part)}\n"
                          for i, part in enumerate(parts))
        else:
            out = "".join(f"id: {seq + i}\nevent: {label}\ndata: {part}\n\n"
                          for i, part in enumerate(parts))
        out = m[key] = out.encode("utf-8")
    return out


def _sse_data(text: str) -> str:
    # Every CR or LF would end an SSE field: split into data lines (the client joins with \n).
    return "".join(f"data: {part}\n" for part in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


class LineFeed:
    """The lines of one stream of one process, after a given seq, until the process exits.

    Lines come from the gate's subscription; what it misses (the slow joiner at start, a gap
    when the queue overflowed, lines written just before the exit) comes from ``read_output``.
    """

    def __init__(self, gate, proc: dict, label: str, after: int):
        self.gate = gate
        self.pid = proc["pid"]
        self.label = label
        s, n = proc["session"], proc["name"]
        self.sub = gate.subscribe([io_topic(s, n, self.pid, label), proc_topic(s, n, "exit")],
                                  maxsize=2000)
        self.next = after + 1
        self.ended = False
        self.state = proc.get("state")
        self._exit_deadline: float | None = None
        self._check_every = 0.25
        self._next_check = time.monotonic() + self._check_every
        self._last_output = float("-inf")  # when output of this stream last came by the bus
        # Lines already there (after `after`), and an early exit, are found at once.
        self.initial = self.catch_up()
        if self.state == "exited":
            self._exit_deadline = time.monotonic() + 0.5

    def close(self) -> None:
        self.sub.close()

    def catch_up(self) -> list[tuple[int, bytes]]:
        try:
            result = self.gate.read_output(pid=self.pid, label=self.label,
                                    since=self.next - 1)
        except (Unavailable, NotFound):
            self.ended = True
            return []
        self.state = result.get("state")
        out = [(line["seq"], line["data"].encode("utf-8")) for line in result["lines"]
               if line["seq"] >= self.next]
        if out:
            self.next = out[-1][0] + 1
        return out

    def wait(self, timeout: float) -> list[tuple[int, bytes]]:
        """Lines that came, waiting up to `timeout` seconds for the first ones; [] if none."""
        out: list[tuple[int, bytes]] = []
        for item in self.wait_batch(timeout):
            if isinstance(item, tuple):
                out.append(item)
            else:
                seq = item.msg["seq"]
                out.extend((seq + i, line) for i, line in enumerate(event_lines(item)))
        return out

    def wait_batch(self, timeout: float) -> list:
        """Like ``wait``, but a whole event is given as the Event itself, not cut into lines.

        Items are ``(seq, line)`` tuples (from the ring, or part of an event) or output Events
        whose lines all come next, in order (``sse_event`` and ``event.data`` format those
        once for every client). Once one event came, everything queued behind it is taken too.
        """
        deadline = time.monotonic() + timeout
        out: list = []
        while not out and not self.ended:
            now = time.monotonic()
            if now >= deadline:
                break
            event = self.sub.get(timeout=max(0.005, min(deadline, self._next_check) - now))
            now = time.monotonic()
            if event is None:
                out += self._quiet(now)
                continue
            self._take(event, out)
            out += self.take_queued()
        return out

    @property
    def next_check(self) -> float:
        """When ``poll`` next asks the ring (an idle stream, or an exit seen only there)."""
        return self._next_check

    def poll(self) -> list:
        """What came (items as in ``wait_batch``), without waiting: for a hub that pumps
        many feeds from a few threads when their subscription wakes them or ``next_check``
        is due. May call the bus (``read_output``)."""
        out = self.take_queued()
        if out or self.ended:
            return out
        return self._quiet(time.monotonic())

    def _quiet(self, now: float) -> list:
        """Nothing came from the subscription: the catch-up of a closed one, or the ring's
        check once ``next_check`` is due (unless output is flowing: a gap would show in its
        seq)."""
        if self.sub.closed:
            out = self.catch_up()
            self.ended = True
            return out
        if now >= self._next_check:
            if now - self._last_output < self._check_every and self.state != "exited":
                self._next_check = self._last_output + self._check_every
            else:
                return self._idle_check(now)
        return []

    def take_queued(self) -> list:
        """What is already queued (items as in ``wait_batch``), without waiting."""
        out: list = []
        if not self.ended:
            for event in self.sub.drain():
                self._take(event, out)
                if self.ended:
                    break
        return out

    def _take(self, event: Event, out: list) -> None:
        if event.topic.startswith(PROC):
            if event.msg.get("pid") == self.pid:
                out += self.catch_up()  # the exit comes after the last output is read
                self.ended = True
            return
        seq = event.msg.get("seq")
        if not isinstance(seq, int):
            return
        self._last_output = time.monotonic()
        if seq > self.next:
            out += self.catch_up()
        n = event_line_count(event)
        if seq == self.next and n:
            out.append(event)
            self.next = seq + n
        elif seq + n > self.next:
            for i, line in enumerate(event_lines(event)):
                if seq + i >= self.next:
                    out.append((seq + i, line))
                    self.next = seq + i + 1

    def _idle_check(self, now: float) -> list[tuple[int, bytes]]:
        # Nothing came for a while: ask the ring. This also sees an exit that happened before
        # the subscription reached zsupd (then no exit event ever comes).
        out = self.catch_up()
        if self.state == "exited":
            if self._exit_deadline is None:
                self._exit_deadline = now + 0.5  # the exit event normally comes first
            elif now >= self._exit_deadline:
                out += self.catch_up()
                self.ended = True
            self._next_check = now + 0.1
        else:
            self._check_every = min(self._check_every * 2, 10.0)
            self._next_check = now + self._check_every
        return out


class Cursors:
    """Where the last longpoll answer (or stdin write) left each stream, for gaffer's longpoll."""

    def __init__(self, size: int = 10000):
        self._data: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, key) -> int | None:
        with self._lock:
            return self._data.get(key)

    def set(self, key, seq: int) -> None:
        with self._lock:
            self._data[key] = seq
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)
