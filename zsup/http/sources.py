"""What the stream hub (zsup.http.hub) serves: clients, and the sources that make their bytes.

``Client`` is one open live feed or websocket (its socket, bounded queue of bytes and
formatting). ``LineSource`` is ONE ``LineFeed`` per ``(pid, label)`` shared by every client of
that stream: each batch of lines is taken once and formatted once per kind of client, and the
same bytes are queued for every client at the same place. ``EventSource`` is one gate
subscription for one ``/watch`` or ``/channel`` client. ``TaskSource`` pumps a callable (a
gaffer channel's subscriptions, a SockJS session): no thread of its own either. ``TaskPool``
runs what websocket clients send (it may call the bus) off the hub thread, in order per client.

Thread rules: a source is pumped by one hub worker at a time (its ``lock``); ``join`` and
``wake`` may be called from any thread; a client's queue is shared with the hub thread under
``Client.lock``.
"""

from __future__ import annotations

import collections
import logging
import queue
import ssl
import threading
import time
from typing import TYPE_CHECKING, Callable

from zsup.bus.protocol import Event
from zsup.http.feeds import LineFeed, event_lines

if TYPE_CHECKING:
    from zsup.http.hub import Hub

__all__ = ["Client", "EventSource", "LineSource", "Source", "Inbox", "TaskPool", "TaskSource"]

log = logging.getLogger("zsup.http.hub")


class Client:
    """One open live feed: its socket, its queue of bytes, and how its lines are formatted.

    ``fmt_event(event)`` formats a whole output event (memoized, shared by every client of the
    kind ``kind``), ``fmt_line(seq, line)`` one line. ``final`` is written when the client is
    dropped, ``beat`` after ``heartbeat`` idle seconds. ``release`` runs once when it is gone.
    """

    def __init__(self, sock, *, kind: str, chunked: bool, fmt_event: Callable[[Event], bytes],
                 fmt_line: Callable[[int, bytes], bytes], final: bytes, beat: bytes,
                 heartbeat: float | None, release: Callable[[], None], after: int = 0,
                 on_end: Callable[[], None] | None = None,
                 on_close: Callable[[], None] | None = None,
                 on_read: Callable[[], bool] | None = None):
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        #: A websocket's reader (the hub thread, when the socket is readable): False to close.
        self.on_read = on_read
        self.deadline: float | None = None  # closed then at the latest (a closing websocket)
        self.error: OSError | None = None  # why a write failed (the client went away)
        self.bye = b""  # sent when the hub stops (a websocket's close frame)
        self.on_end, self.on_close = on_end, on_close
        self.registered = False
        self.kind, self.chunked = kind, chunked
        self.fmt_event, self.fmt_line = fmt_event, fmt_line
        self.final, self.beat, self.heartbeat = final, beat, heartbeat
        self._release = release
        self.next = after + 1  # the seq of the next line this client wants
        self.out: collections.deque = collections.deque()
        self.offset = 0  # bytes of out[0] already sent
        self.size = 0  # bytes queued, unsent
        self.lock = threading.Lock()
        self.overflow = False  # over max_buffer: the hub drops it
        self.ending = False  # the stream ended: close once flushed
        self.closing_deadline: float | None = None
        self.gone = False
        self.last_push = time.monotonic()
        self.want_write = False
        self.marked = False  # in the hub's list of clients to flush
        self.source: Source | None = None
        self.hub: Hub | None = None

    def frame(self, data: bytes) -> list[bytes]:
        if not self.chunked or not data:
            return [data] if data else []
        return [b"%x\r\n" % len(data), data, b"\r\n"]

    def push(self, pieces: list[bytes], limit: int) -> bool:
        """Queue bytes (any thread); False when that would pass `limit` (then nothing is queued)."""
        n = sum(len(p) for p in pieces)
        with self.lock:
            if self.gone or self.overflow or self.ending:
                return False
            if self.size + n > limit:
                self.overflow = True
                return False
            self.out.extend(pieces)
            self.size += n
            self.last_push = time.monotonic()
        return True

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            try:
                release()
            except Exception:
                log.exception("releasing a stream failed")


class Source:
    """Something that makes bytes for its clients; pumped by the hub's workers."""

    def __init__(self, hub: "Hub", delay: Callable[[], float]):
        self.hub = hub
        self.delay = delay
        self.clients: set[Client] = set()
        self.lock = threading.Lock()
        self.scheduled = False
        self.last_pump = float("-inf")  # when it last pushed bytes
        self.ended = False
        self.had_clients = False

    def wake(self, *_: object) -> None:
        """Pump soon (any thread; the subscription's hook)."""
        if self.scheduled:
            return
        self.scheduled = True
        self.hub.schedule(self, self.last_pump + self.delay())

    def pump(self) -> None:
        self.scheduled = False
        with self.lock:
            if self.ended:
                return
            for client in [c for c in self.clients if c.gone]:
                self.clients.discard(client)
            if not self.clients and self.had_clients:  # the last one left
                self.ended = True
                self.close()
                return
            self.take_and_push()
            if self.ended:
                for client in self.clients:
                    self.hub.end(client)
                self.clients.clear()
                self.close()

    def due(self, now: float) -> bool:
        """Whether a timer of the source is due (the hub's scan asks every quarter second)."""
        return False

    def take_and_push(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class LineSource(Source):
    """The lines of one stream of one process, shared by all of its clients."""

    def __init__(self, hub: "Hub", gate, proc: dict, label: str, delay: Callable[[], float]):
        super().__init__(hub, delay)
        self.gate, self.pid, self.label = gate, proc["pid"], label
        self.feed = LineFeed(gate, proc, label, (proc.get("last_seq") or {}).get(label, 0))
        self._pending = self.feed.initial
        self.feed.sub.on_ready = self.wake  # (its first pump comes with its first client)

    def join(self, client: Client, after: int, first: bytes) -> bool:
        """Add a client that wants the lines after `after` (any thread; may call the bus).

        False when the source has ended (make a new one). Lines between `after` and where the
        source is now come from the ring, queued after `first` and before everything else.
        """
        with self.lock:
            if self.ended:
                return False
            upto = self.feed.next
            client.next = max(after + 1, upto)
            client.source = self
            self.clients.add(client)
            self.had_clients = True
        head = [first] if first else []
        if after + 1 < upto:
            try:
                result = self.gate.read_output(pid=self.pid, label=self.label, since=after)
                head += [client.fmt_line(line["seq"], line["data"].encode("utf-8"))
                         for line in result["lines"] if after < line["seq"] < upto]
            except Exception as exc:  # zsupd went away: the stream goes on with what comes
                log.debug("stream %s/%s: no catch-up: %s", self.pid, self.label, exc)
        data = b"".join(head)
        if data:
            with client.lock:
                client.out.extendleft(reversed(client.frame(data)))
                client.size += len(data)
        self.wake()
        return True

    def due(self, now: float) -> bool:
        return not self.scheduled and now >= self.feed.next_check

    def take_and_push(self) -> None:
        items, self._pending = self._pending + self.feed.poll(), []
        self.ended = self.feed.ended
        if not items:
            return
        self.last_pump = time.monotonic()  # a write: the next one waits for batch_delay
        first_seq = items[0][0] if isinstance(items[0], tuple) else items[0].msg["seq"]
        blobs: dict[str, bytes] = {}
        limit = self.hub.max_buffer
        for client in self.clients:
            if client.gone:
                continue
            if client.next <= first_seq:
                blob = blobs.get(client.kind)
                if blob is None:
                    blob = blobs[client.kind] = b"".join(
                        client.fmt_line(*item) if isinstance(item, tuple) else client.fmt_event(item)
                        for item in items)
            else:  # ahead of the source (it read the ring later): only what it lacks
                blob = b"".join(client.fmt_line(seq, line) for seq, line in lines_of(items)
                                if seq >= client.next)
            client.next = self.feed.next
            if blob and not client.push(client.frame(blob), limit):
                self.hub.mark(client)
                continue
            self.hub.mark(client)

    def close(self) -> None:
        self.feed.close()
        self.hub.forget(self)

    def discard(self) -> None:
        """Free a source that was never installed (a pump its subscription woke does nothing)."""
        with self.lock:
            self.ended = True
        self.close()


def lines_of(items: list):
    """(seq, line) of every line of a pump's items (tuples, and whole output events)."""
    for item in items:
        if isinstance(item, tuple):
            yield item
        else:
            seq = item.msg["seq"]
            yield from ((seq + i, line) for i, line in enumerate(event_lines(item)))


class EventSource(Source):
    """One ``/watch`` client's subscription to bus events."""

    def __init__(self, hub: "Hub", sub, client: Client, delay: Callable[[], float]):
        super().__init__(hub, delay)
        self.sub = sub
        client.source = self
        self.clients.add(client)
        self.had_clients = True
        sub.on_ready = self.wake

    def take_and_push(self) -> None:
        events = self.sub.drain(100_000)
        if events:
            self.last_pump = time.monotonic()
        for client in self.clients:
            if events:
                blob = b"".join(client.fmt_event(event) for event in events)
                client.push(client.frame(blob), self.hub.max_buffer)
                self.hub.mark(client)
        if self.sub.closed:
            self.ended = True

    def close(self) -> None:
        self.sub.close()


class TaskSource(Source):
    """A source whose pump runs ``step()`` (a hub worker, under the source's lock), which
    returns True once it has ended; also once ``next_due()`` (when given) has passed. For feeds whose
    bytes the hub does not write itself as a Source's clients: gaffer's channel
    subscriptions and IO channels, SockJS sessions. ``on_close`` runs once when it ends."""

    def __init__(self, hub: "Hub", step: Callable[[], bool], delay: Callable[[], float],
                 next_due: Callable[[], float] | None = None,
                 on_close: Callable[[], None] | None = None):
        super().__init__(hub, delay)
        self.step, self.next_due, self.on_close = step, next_due, on_close
        self.cancelled = False

    def take_and_push(self) -> None:
        if self.cancelled:
            self.ended = True
            return
        self.last_pump = time.monotonic()
        self.ended = bool(self.step())

    def due(self, now: float) -> bool:
        return self.next_due is not None and not self.scheduled and now >= self.next_due()

    def end(self) -> None:
        """Stop pumping (any thread, never waits): ``on_close`` runs in its next pump."""
        self.cancelled = True
        self.wake()

    def close(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            try:
                on_close()
            except Exception:
                log.exception("closing a stream source failed")
        self.hub.forget(self)


class TaskPool:
    """Up to ``workers`` threads running what clients send, so a bus call never stalls the hub
    thread and no client holds a thread. A thread is made when a task finds none idle (none
    before the first message), and stays until ``stop``."""

    def __init__(self, workers: int):
        self.workers = workers
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._running = False

    def start(self) -> None:
        self._running = True

    def stop(self, timeout: float) -> None:
        with self._lock:
            self._running = False
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)
        with self._lock:
            if not self._running or self._idle or len(self._threads) >= self.workers:
                return
            thread = threading.Thread(target=self._run, daemon=True,
                                      name=f"zsup-http-hub-task-{len(self._threads)}")
            self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            fn = self._queue.get()
            with self._lock:
                self._idle -= 1
            if fn is None:
                return
            try:
                fn()
            except Exception:
                log.exception("a stream task failed")


class Inbox:
    """One client's tasks, run in order on a TaskPool; at most ``limit`` waiting."""

    def __init__(self, pool: TaskPool, limit: int = 256):
        self.pool, self.limit = pool, limit
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._busy = False

    def put(self, fn: Callable[[], None]) -> bool:
        """Queue `fn` (any thread); False when ``limit`` tasks already wait."""
        with self._lock:
            if len(self._items) >= self.limit:
                return False
            self._items.append(fn)
            if self._busy:
                return True
            self._busy = True
        self.pool.submit(self._drain)
        return True

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._items:
                    self._busy = False
                    return
                fn = self._items.popleft()
            try:
                fn()
            except Exception:
                log.exception("a websocket message failed")
