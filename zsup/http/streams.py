"""Output streams over HTTP (gaffer's /streams feeds), stdin writes, and live bus events (/watch).

Feeds of ``GET /streams/<pid>/<label>``:

- none: the lines still in zsupd's ring buffer (``since`` to start later), as text;
- ``continuous``: chunked lines as they come (from now, or after ``since``);
- ``longpoll``: waits for the next lines and returns them. Without ``since`` it answers what
  came after the previous longpoll answer on that stream, or after the last write to its
  stdin through this gateway (so ``POST stdin`` then ``longpoll`` gets the echo, as in
  gaffer's example); a first longpoll waits for the next line;
- ``eventsource``: Server-Sent Events, ``id:`` = the line's ``seq``, ``event:`` = the
  label; ``Last-Event-ID`` (or ``since``) resumes from the ring.

``heartbeat=true|SECONDS`` sends an empty line (an SSE comment for eventsource) after that
many idle seconds (60 for ``true``). A stream ends when its process exits, after its last
lines. Lines lost by a slow subscriber (a ``seq`` gap) are fetched again with ``read_output``.

Fan-out is cheap per client: an output event is decoded once (the gate's fan-out thread) and
formatted once (``sse_event``, memoized on the shared Event); each client's thread drains its
queue and writes all of it as one chunk, batched by ``BATCH_DELAY`` while the stream is busy.

Every live feed holds one waitress worker thread while open: app.py sizes the pool to
``max_streams`` plus threads kept for REST, and refuses a stream beyond ``max_streams`` with
503, so streams can never starve the REST routes.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Callable, Iterator

from zsup.bus.protocol import Event
from zsup.errors import NotFound, Unavailable
from zsup.http.adapter import waitress_channel
from zsup.http.busgate import memo
from zsup.http.routes_api import api
from zsup.http.web import HTTPError, StreamResponse, read_body

route = api.route

FEEDS = ("continuous", "longpoll", "eventsource")

#: Batching of busy live feeds (continuous, eventsource), in seconds. After a write, a feed
#: whose lines keep coming sleeps this long and then writes everything that came meanwhile
#: as ONE chunk; when nothing came, it waits for the next line and writes it at once (unless
#: it is within this delay of the previous write). So a line after a quiet spell is not held
#: back, and a busy stream costs each client at most 1/BATCH_DELAY writes and thread wake-ups
#: per second, however many events zsupd publishes. 0 writes every wake-up at once.
BATCH_DELAY = 0.05


# -- helpers ----------------------------------------------------------------------------------

def parse_heartbeat(value: str | None) -> float | None:
    if value is None or value.lower() in ("", "false", "0", "no", "off"):
        return None
    if value.lower() in ("true", "yes", "on"):
        return 60.0
    try:
        seconds = float(value)
    except ValueError:
        raise HTTPError(400, f"heartbeat: expected true or a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 86400:
        raise HTTPError(400, f"heartbeat: expected 0 < seconds <= 86400, got {value!r}")
    return seconds


def parse_seq(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        seq = int(value)
    except ValueError:
        raise HTTPError(400, f"{what}: expected a line number, got {value!r}") from None
    if seq < 0:
        raise HTTPError(400, f"{what}: expected a line number >= 0, got {value!r}")
    return seq


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


def _waitress_channel(req):
    """The channel serving `req` when it is zsup's waitress channel (None elsewhere), so a
    long-lived stream can give back its drained output buffer (`Channel.reset_drained_outbuf`)."""
    return waitress_channel(req.environ)


class StreamBody:
    """An app_iter over a generator that frees its stream slot exactly once, however it ends."""

    def __init__(self, gen: Iterator[bytes], release: Callable[[], None], channel=None):
        self._gen = gen
        self._release = release
        self._channel = channel
        self._done = False
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self._channel is not None:
            self._channel.reset_drained_outbuf()
        try:
            return next(self._gen)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        try:
            self._gen.close()
        finally:
            self._release()


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
        self.sub = gate.subscribe([f"io.{s}.{n}.{self.pid}.{label}", f"proc.{s}.{n}.exit"],
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
            result = self.gate.call("read_output", pid=self.pid, label=self.label,
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
                if self.sub.closed:
                    out += self.catch_up()
                    self.ended = True
                elif now >= self._next_check:
                    if now - self._last_output < self._check_every and self.state != "exited":
                        # Not idle: output is flowing (a gap would show in its seq).
                        self._next_check = self._last_output + self._check_every
                    else:
                        out += self._idle_check(now)
                continue
            self._take(event, out)
            out += self.take_queued()
        return out

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
        if event.topic.startswith("proc."):
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


def _process(ctx, pid: int, label: str) -> dict:
    proc = ctx.gate.call("get_process", pid=pid)
    labels = proc.get("labels") or []
    if not labels:
        raise HTTPError(404, f"process {pid} has no captured output")
    if label not in labels:
        raise HTTPError(404, f"process {pid} has no stream {label!r} (has {', '.join(labels)})")
    return proc


def _feed_loop(feed: LineFeed, heartbeat: float | None, disconnected: Callable[[], bool],
               fmt: Callable[[int, bytes], bytes], fmt_event: Callable[[Event], bytes],
               beat: bytes, first: bytes = b"") -> Iterator[bytes]:
    """One chunk per wake-up: every line that came, formatted (whole events once for all)."""
    try:
        if first:
            yield first
        pending: list = feed.initial
        last_sent = time.monotonic()
        while True:
            if pending:
                yield b"".join(fmt(*item) if isinstance(item, tuple) else fmt_event(item)
                               for item in pending)
                last_sent = time.monotonic()
            if feed.ended or disconnected():
                return
            if pending and BATCH_DELAY > 0:
                # Busy: sleep, then take all that came meanwhile (one wake-up per write); if
                # nothing did, the stream has gone quiet: wait for its next line below.
                time.sleep(BATCH_DELAY)
                pending = feed.take_queued()
                if pending:
                    continue
            wait = 1.0 if heartbeat is None else max(0.01, min(1.0, last_sent + heartbeat - time.monotonic()))
            pending = feed.wait_batch(wait)
            if pending and BATCH_DELAY > 0 and not feed.ended:
                # Lines right after a write: gather until BATCH_DELAY after it.
                delay = last_sent + BATCH_DELAY - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                    pending += feed.take_queued()
            if not pending and heartbeat is not None and time.monotonic() - last_sent >= heartbeat:
                yield beat
                last_sent = time.monotonic()
    finally:
        feed.close()


def _disconnected(req) -> Callable[[], bool]:
    return req.environ.get("waitress.client_disconnected") or (lambda: False)


# -- routes -----------------------------------------------------------------------------------

@route("GET", "/streams/{pid:int}/{label}", "A process's output stream (see feeds)", tag="streams",
       query={"feed": "continuous, longpoll or eventsource (none: the lines in the ring)",
              "heartbeat": "true (60 s) or seconds: an empty line / SSE comment when idle",
              "since": "start after this line number"},
       produces="text/plain", stream=True)
def stream(ctx, req, pid, label):
    feed_name = req.GET.get("feed")
    if feed_name is not None and feed_name not in FEEDS:
        raise HTTPError(400, f"feed: expected one of {', '.join(FEEDS)}, got {feed_name!r}")
    heartbeat = parse_heartbeat(req.GET.get("heartbeat"))
    since = parse_seq(req.GET.get("since"), "since")
    proc = _process(ctx, pid, label)
    if feed_name is None:
        result = ctx.gate.call("read_output", pid=pid, label=label, since=since or 0)
        body = "".join(line["data"] for line in result["lines"]).encode("utf-8")
        from webob import Response
        return Response(body=body, content_type="text/plain", charset="utf-8")
    last_seq = (proc.get("last_seq") or {}).get(label, 0)
    key = (pid, label)
    if feed_name == "eventsource":
        resume = parse_seq(req.headers.get("Last-Event-ID"), "Last-Event-ID")
        after = resume if resume is not None else (since if since is not None else last_seq)
    elif feed_name == "longpoll":
        after = since if since is not None else ctx.cursors.get(key)
        if after is None:
            after = last_seq
    else:
        after = since if since is not None else last_seq
    if feed_name == "eventsource" and proc.get("state") == "exited" and after >= last_seq:
        # Nothing will ever come: 204 tells a browser's EventSource not to reconnect.
        from webob import Response
        return Response(status=204)
    release = ctx.acquire_stream()
    try:
        feed = LineFeed(ctx.gate, proc, label, after)
    except BaseException:
        release()
        raise
    disconnected = _disconnected(req)
    if feed_name == "continuous":
        gen = _feed_loop(feed, heartbeat, disconnected, lambda seq, line: line,
                         lambda event: event.data, b"\n")
        return StreamResponse(StreamBody(gen, release, _waitress_channel(req)))
    if feed_name == "eventsource":
        gen = _feed_loop(feed, heartbeat, disconnected, lambda seq, line: sse_line(seq, line, label),
                         lambda event: sse_event(event, label), b": heartbeat\n\n",
                         first=b"retry: 3000\n\n")
        return StreamResponse(StreamBody(gen, release, _waitress_channel(req)), "text/event-stream; charset=utf-8")
    return StreamResponse(StreamBody(_longpoll(ctx, feed, key, heartbeat, disconnected), release,
                                     _waitress_channel(req)))


def _longpoll(ctx, feed: LineFeed, key, heartbeat, disconnected) -> Iterator[bytes]:
    try:
        lines = feed.initial
        last_sent = time.monotonic()
        while not lines and not feed.ended and not disconnected():
            wait = 1.0 if heartbeat is None else max(0.01, min(1.0, last_sent + heartbeat - time.monotonic()))
            lines = feed.wait(wait)
            if not lines and heartbeat is not None and time.monotonic() - last_sent >= heartbeat:
                yield b"\n"
                last_sent = time.monotonic()
        if lines:
            ctx.cursors.set(key, lines[-1][0])
            yield b"".join(line for _, line in lines)
    finally:
        feed.close()


def _write_stdin(ctx, req, pid):
    data = read_body(req)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "stdin data must be UTF-8 text") from None
    proc = ctx.gate.call("get_process", pid=pid)
    for label, seq in (proc.get("last_seq") or {}).items():
        ctx.cursors.set((pid, label), seq)
    ctx.gate.call("send", pid=pid, data=text)
    return {"ok": True}


@route("POST", "/streams/{pid:int}/stdin", "Write the body to the process's stdin", tag="streams",
       body="raw bytes (UTF-8 text), written as given")
def write_stdin(ctx, req, pid):
    return _write_stdin(ctx, req, pid)


@route("POST", "/streams/{pid:int}/ttin", "Same as /streams/{pid}/stdin (gaffer's spelling)",
       tag="streams", body="raw bytes (UTF-8 text), written as given")
def write_ttin(ctx, req, pid):
    return _write_stdin(ctx, req, pid)


# -- bus events -------------------------------------------------------------------------------

def _watch(ctx, req, pattern: str):
    feed_name = req.GET.get("feed", "continuous")
    if feed_name not in ("continuous", "eventsource"):
        raise HTTPError(400, f"feed: expected continuous or eventsource, got {feed_name!r}")
    heartbeat = parse_heartbeat(req.GET.get("heartbeat"))
    ctx.gate.call("ping")  # a clear 503 now rather than a silent stream
    release = ctx.acquire_stream()
    try:
        sub = ctx.gate.subscribe([pattern])
    except BaseException:
        release()
        raise
    disconnected = _disconnected(req)
    sse = feed_name == "eventsource"

    def gen() -> Iterator[bytes]:
        try:
            yield b"retry: 3000\n\n" if sse else b""
            last_sent = time.monotonic()
            while not disconnected() and not sub.closed:
                wait = 1.0 if heartbeat is None else max(0.01, min(1.0, last_sent + heartbeat - time.monotonic()))
                event = sub.get(timeout=wait)
                if event is None:
                    if heartbeat is not None and time.monotonic() - last_sent >= heartbeat:
                        yield b": heartbeat\n\n" if sse else b"\n"
                        last_sent = time.monotonic()
                    continue
                batch = [event] + sub.drain(1000)
                chunks = []
                for ev in batch:
                    text = event_json_text(ev)
                    chunks.append(f"event: {ev.topic}\ndata: {text}\n\n" if sse else text + "\n")
                yield "".join(chunks).encode("utf-8")
                last_sent = time.monotonic()
        finally:
            sub.close()

    content_type = "text/event-stream; charset=utf-8" if sse else "application/x-ndjson"
    return StreamResponse(StreamBody(gen(), release, _waitress_channel(req)), content_type)


@route("GET", "/watch", "Every bus event, live (JSON lines or SSE)", tag="events",
       query={"feed": "continuous (default) or eventsource", "heartbeat": "true or seconds"},
       produces="application/x-ndjson", stream=True)
def watch_all(ctx, req):
    return _watch(ctx, req, "")


@route("GET", "/watch/{pattern}", "Bus events whose topic matches a pattern, live", tag="events",
       query={"feed": "continuous (default) or eventsource", "heartbeat": "true or seconds"},
       produces="application/x-ndjson", stream=True)
def watch(ctx, req, pattern):
    return _watch(ctx, req, "" if pattern == "." else pattern)

