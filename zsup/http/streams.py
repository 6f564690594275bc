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

Live feeds (continuous, eventsource, /watch) are served by the stream hub (zsup.http.hub):
the waitress worker answers the head, hands the socket over (``HandOver``) and is free; every
client of one stream shares one LineFeed, and each batch of lines is formatted once per feed
type (``sse_event``, memoized on the shared Event). Longpolls, and live feeds served by
another WSGI server (no hub), run on their worker thread as before (``_feed_loop``,
``BATCH_DELAY`` batching); app.py caps those at ``held_threads``. Every stream takes one of
``max_streams`` slots (503 beyond), freed when it ends or its client goes.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from zsup.bus.protocol import Event
from zsup.http.busgate import memo
from zsup.http.channel import stream_hub, waitress_channel

# Cursors and event_line_count are imported from here too (app.py, tests).
from zsup.http.feeds import Cursors, LineFeed, event_json_text, event_line_count, sse_event, sse_line  # noqa: F401
from zsup.http.hub import Client
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


def _process(ctx, pid: int, label: str) -> dict:
    proc = ctx.gate.get_process(pid=pid)
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


class HandOver:
    """An app_iter that gives the socket to the stream hub once the head is written.

    Its first ``next`` (in the waitress worker) waits for the channel to hand the socket over
    and attaches ``client``; then it ends: the worker is free, the hub writes the stream.
    ``join(client)`` runs first (it adds the client to its source, queueing the first bytes).
    """

    def __init__(self, hub, client: Client, channel, join: Callable[[Client], None]):
        self.hub, self.client, self.channel, self.join = hub, client, channel, join
        self._done = False

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        self._done = True
        client = self.client
        try:
            self.join(client)
        except BaseException:
            self.close()
            raise

        def take(sock) -> None:
            client.sock = sock
            self.hub.attach(client)

        if not self.channel.hand_over(take):
            self.close()
        raise StopIteration

    def close(self) -> None:
        client = self.client
        if client.hub is None:  # never attached: nothing else will free it
            client.gone = True
            if client.source is not None:
                client.source.wake()
            client.release()


def _chunked(req) -> bool:
    return req.environ.get("SERVER_PROTOCOL") == "HTTP/1.1"


def _hub_stream(ctx, req, hub, proc: dict, label: str, after: int, sse: bool,
                heartbeat: float | None, release: Callable[[], None]) -> StreamResponse:
    if sse:
        client = Client(None, kind="sse", chunked=_chunked(req),
                        fmt_event=lambda event: sse_event(event, label),
                        fmt_line=lambda seq, line: sse_line(seq, line, label),
                        final=DROPPED_SSE, beat=b": heartbeat\n\n", heartbeat=heartbeat,
                        release=release, after=after)
        first = b"retry: 3000\n\n"
    else:
        client = Client(None, kind="raw", chunked=_chunked(req), fmt_event=_event_data,
                        fmt_line=lambda seq, line: line, final=DROPPED_TEXT, beat=b"\n",
                        heartbeat=heartbeat, release=release, after=after)
        first = b""

    def join(client: Client) -> None:
        while not hub.line_source(ctx.gate, proc, label, _batch_delay).join(client, after, first):
            pass  # it ended just now: a new one

    body = HandOver(hub, client, waitress_channel(req.environ), join)
    if sse:
        return StreamResponse(body, "text/event-stream; charset=utf-8")
    return StreamResponse(body)


def _event_data(event: Event) -> bytes:
    return event.data or b""


def _batch_delay() -> float:
    return BATCH_DELAY


#: What a dropped client (it fell ``max_buffer`` bytes behind) gets last.
DROPPED_SSE = (b'event: dropped\ndata: {"reason": "the client fell too far behind; '
               b'reconnect with Last-Event-ID to resume"}\n\n')
DROPPED_TEXT = b'\n{"dropped": "the client fell too far behind"}\n'


def _watch_sse(event: Event) -> bytes:
    m = memo(event)
    out = m.get("watch-sse")
    if out is None:
        out = m["watch-sse"] = f"event: {event.topic}\ndata: {event_json_text(event)}\n\n".encode()
    return out


def _watch_json(event: Event) -> bytes:
    m = memo(event)
    out = m.get("watch-json")
    if out is None:
        out = m["watch-json"] = (event_json_text(event) + "\n").encode()
    return out


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
        result = ctx.gate.read_output(pid=pid, label=label, since=since or 0)
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
    hub = stream_hub(req.environ) if feed_name != "longpoll" else None
    release = ctx.acquire_stream(holds_thread=hub is None)
    if hub is not None:
        return _hub_stream(ctx, req, hub, proc, label, after, feed_name == "eventsource",
                           heartbeat, release)
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
    proc = ctx.gate.get_process(pid=pid)
    for label, seq in (proc.get("last_seq") or {}).items():
        ctx.cursors.set((pid, label), seq)
    ctx.gate.send(pid=pid, data=text)
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
    ctx.gate.ping()  # a clear 503 now rather than a silent stream
    hub = stream_hub(req.environ)
    release = ctx.acquire_stream(holds_thread=hub is None)
    try:
        sub = ctx.gate.subscribe([pattern])
    except BaseException:
        release()
        raise
    disconnected = _disconnected(req)
    sse = feed_name == "eventsource"
    if hub is not None:
        def release_all() -> None:
            sub.close()
            release()

        client = Client(None, kind="watch", chunked=_chunked(req),
                        fmt_event=_watch_sse if sse else _watch_json, fmt_line=None,
                        final=DROPPED_SSE if sse else DROPPED_TEXT,
                        beat=b": heartbeat\n\n" if sse else b"\n", heartbeat=heartbeat,
                        release=release_all)

        def join(client: Client) -> None:
            if sse:
                client.out.extend(client.frame(b"retry: 3000\n\n"))
            hub.event_source(sub, client, _batch_delay)

        body = HandOver(hub, client, waitress_channel(req.environ), join)
        return StreamResponse(body, "text/event-stream; charset=utf-8" if sse
                              else "application/x-ndjson")

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

