"""The stream hub: every open live feed of the gateway, served by a few threads, not one each.

A live feed (``/streams/...?feed=continuous|eventsource``, ``/watch``) is answered by a
waitress worker only up to its response head: then the channel hands its socket over
(``zsup.http.adapter.Channel.hand_over``) and the hub serves it until it ends. Three parts:

- a ``Source`` makes the bytes. ``LineSource`` is ONE ``LineFeed`` per ``(pid, label)`` shared
  by every client of that stream: each batch of lines is taken once and formatted once per
  feed type (continuous, eventsource), and the same bytes go to every client that is at the
  same place. ``EventSource`` is one gate subscription for one ``/watch`` client.
- the hub's worker threads (``workers``, default 2) pump sources: a subscription's wake-up
  hook (``Subscription.on_ready``) schedules its source, at most once per ``batch_delay()``
  seconds (a line after a quiet spell goes at once). The pump may make bus calls
  (``read_output`` to fill a seq gap): never in the hub thread.
- the hub thread owns every socket: one selector, non-blocking writes (``sendmsg`` of the
  queued pieces; TLS sockets: ``send``, ``SSLWantWriteError`` waits for writability), a read
  interest only to see the client go away, heartbeats, and the end of each stream.

Each client has a bounded queue of bytes (``max_buffer``). A client that lets more pile up
(it stopped reading, or reads slower than the stream goes) is dropped: what it has not been
sent is discarded, it gets a final event (SSE ``event: dropped``, or a JSON line) and its
connection is closed once that is written (or after ``drop_grace`` seconds). The others never
wait for it. An SSE client that reconnects with ``Last-Event-ID`` resumes from zsupd's ring.

Thread rules: ``attach`` and ``Source.join`` may be called from any thread; a client's socket
is touched by the hub thread only; a source's feed only by the worker pumping it (its lock).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from typing import Callable

from zsup.bus.protocol import Event
from zsup.http.feeds import LineFeed, event_lines

__all__ = ["Client", "EventSource", "Hub", "LineSource"]

log = logging.getLogger("zsup.http.hub")

#: Bytes a client may have queued and unsent before it is dropped.
DEFAULT_MAX_BUFFER = 1 << 20
_IOV = 512  # pieces per sendmsg (IOV_MAX is 1024 on Linux)
_TLS_WRITE = 1 << 16


class Client:
    """One open live feed: its socket, its queue of bytes, and how its lines are formatted.

    ``fmt_event(event)`` formats a whole output event (memoized, shared by every client of the
    kind ``kind``), ``fmt_line(seq, line)`` one line. ``final`` is written when the client is
    dropped, ``beat`` after ``heartbeat`` idle seconds. ``release`` runs once when it is gone.
    """

    def __init__(self, sock, *, kind: str, chunked: bool, fmt_event: Callable[[Event], bytes],
                 fmt_line: Callable[[int, bytes], bytes], final: bytes, beat: bytes,
                 heartbeat: float | None, release: Callable[[], None], after: int = 0,
                 reads: bool = True, on_end: Callable[[], None] | None = None,
                 on_close: Callable[[], None] | None = None):
        self.sock = sock
        #: False for a websocket: ws4py's manager reads it (the hub holds a dup to write).
        self.reads = reads
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
            if not self.clients:
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
        self.feed.sub.on_ready = self.wake
        self.wake()

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
                blob = b"".join(client.fmt_line(seq, line) for seq, line in _lines(items)
                                if seq >= client.next)
            client.next = self.feed.next
            if blob and not client.push(client.frame(blob), limit):
                self.hub.mark(client)
                continue
            self.hub.mark(client)

    def close(self) -> None:
        self.feed.close()
        self.hub.forget(self)


def _lines(items: list):
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


class Hub:
    """One thread writing to every handed-over stream socket, and a few pumping their sources."""

    def __init__(self, workers: int = 2, max_buffer: int = DEFAULT_MAX_BUFFER,
                 drop_grace: float = 5.0, scan_every: float = 0.25):
        self.workers = workers
        self.max_buffer = max_buffer
        self.drop_grace = drop_grace
        self.scan_every = scan_every
        self.clients: set[Client] = set()  # the hub thread's; others read len() only
        self.sources: dict = {}  # key -> LineSource
        self.all_sources: set[Source] = set()
        self.dropped = 0
        self._sources_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._attach: collections.deque = collections.deque()
        self._detach: collections.deque = collections.deque()
        self._marked: collections.deque = collections.deque()
        self._timers: list = []  # (due, n, source), the hub thread's
        self._timer_requests: collections.deque = collections.deque()
        self._count = itertools.count()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._sleeping = False

    # -- any thread

    def start(self) -> None:
        self._running = True
        self._threads = [threading.Thread(target=self._run, name="zsup-http-hub", daemon=True)]
        self._threads += [threading.Thread(target=self._pump_loop, name=f"zsup-http-hub-pump-{i}",
                                           daemon=True) for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every stream (their releases run) and join the threads."""
        self._running = False
        self._wake()
        for _ in range(self.workers):
            self._work.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def line_source(self, gate, proc: dict, label: str, delay: Callable[[], float]) -> LineSource:
        """The shared source of ``(pid, label)`` (made here when there is none, or it ended)."""
        key = (id(gate), proc["pid"], label)
        with self._sources_lock:
            source = self.sources.get(key)
            if source is not None and not source.ended:
                return source
        source = LineSource(self, gate, proc, label, delay)
        with self._sources_lock:
            self.sources[key] = source
            self.all_sources.add(source)
        return source

    def event_source(self, sub, client: Client, delay: Callable[[], float]) -> EventSource:
        source = EventSource(self, sub, client, delay)
        with self._sources_lock:
            self.all_sources.add(source)
        return source

    def forget(self, source: Source) -> None:
        with self._sources_lock:
            self.all_sources.discard(source)
            for key, known in list(self.sources.items()):
                if known is source:
                    del self.sources[key]

    def attach(self, client: Client) -> None:
        """Serve `client` (its socket now belongs to the hub); its queue is written at once."""
        client.hub = self
        self._attach.append(client)
        self._wake()

    def mark(self, client: Client) -> None:
        """`client` has new bytes, or is over its bound (a pumping worker)."""
        self._marked.append(client)

    def send(self, client: Client, data: bytes) -> None:
        """Queue bytes for `client` now (any thread), without waiting for a pump."""
        if client.push([data], self.max_buffer) or client.overflow:
            self._marked.append(client)
            self._wake()

    def write_now(self, client: Client, data: bytes) -> None:
        """Send `data` from this thread when nothing is queued before it, else queue it (a
        websocket's own frames: pong, close), so a close frame is out before its socket
        is shut. Never blocks."""
        with client.lock:
            if client.gone:
                return
            sent = 0
            if not client.out:
                try:
                    sent = client.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    return  # gone: its owner tells us
            if sent < len(data):
                client.out.append(data[sent:])
                client.size += len(data) - sent
        if sent < len(data):
            self._marked.append(client)
            self._wake()

    def detach(self, client: Client) -> None:
        """Its owner closed the connection (any thread): forget it, close the hub's socket."""
        client.on_close = None
        client.gone = True
        self._detach.append(client)
        self._wake()

    def end(self, client: Client) -> None:
        """The stream is over: close once what is queued is written (chunked: the last chunk).

        A client with ``on_end`` (a websocket) is told instead, and closes in its own time."""
        if client.on_end is not None:
            try:
                client.on_end()
            except Exception:
                log.debug("ending a stream client failed", exc_info=True)
            return
        with client.lock:
            if client.chunked and not client.gone:
                client.out.append(b"0\r\n\r\n")
                client.size += 5
            client.ending = True
        self._marked.append(client)

    def schedule(self, source: Source, due: float) -> None:
        if due <= time.monotonic():
            self._work.put(source)
        else:
            self._timer_requests.append((due, source))
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- workers

    def _pump_loop(self) -> None:
        while True:
            source = self._work.get()
            if source is None:
                return
            try:
                source.pump()
            except Exception:
                log.exception("stream source failed")
            if self._marked:
                self._wake()

    # -- the hub thread

    def _run(self) -> None:
        next_scan = time.monotonic() + self.scan_every
        try:
            while self._running:
                now = time.monotonic()
                timeout = next_scan - now
                if self._timers:
                    timeout = min(timeout, self._timers[0][0] - now)
                if self._attach or self._marked or self._timer_requests or self._detach:
                    timeout = 0
                for key, mask in self._selector.select(max(0.0, timeout)):
                    client = key.data
                    if client is None:
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                        continue
                    if mask & selectors.EVENT_READ:
                        self._readable(client)
                    if mask & selectors.EVENT_WRITE and client in self.clients:
                        self._flush(client)
                while self._attach:
                    self._add(self._attach.popleft())
                while self._detach:
                    self._close(self._detach.popleft())
                while self._timer_requests:
                    due, source = self._timer_requests.popleft()
                    heapq.heappush(self._timers, (due, next(self._count), source))
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    self._work.put(heapq.heappop(self._timers)[2])
                marked = len(self._marked)
                for _ in range(marked):
                    client = self._marked.popleft()
                    if client in self.clients:
                        self._flush(client)
                if now >= next_scan:
                    next_scan = now + self.scan_every
                    self._scan(now)
        except Exception:
            log.exception("stream hub failed")
        finally:
            for client in list(self.clients):
                self._close(client)
            for source in list(self.all_sources):
                try:
                    source.close()
                except Exception:
                    pass
            self._selector.close()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _add(self, client: Client) -> None:
        if client.gone:
            return
        try:
            client.sock.setblocking(False)
            if client.reads:
                self._selector.register(client.sock, selectors.EVENT_READ, client)
                client.registered = True
        except (OSError, ValueError):
            self._close(client)
            return
        self.clients.add(client)
        self._flush(client)

    def _scan(self, now: float) -> None:
        for source in list(self.all_sources):
            if source.due(now):
                source.wake()
        for client in list(self.clients):
            if client.closing_deadline is not None and now >= client.closing_deadline:
                self._close(client)
            elif (client.heartbeat is not None and not client.ending and not client.overflow
                  and now - client.last_push >= client.heartbeat):
                client.push(client.frame(client.beat), self.max_buffer)
                self._flush(client)

    def _readable(self, client: Client) -> None:
        # A stream's client sends nothing more: readable means it went away (or sent junk).
        try:
            data = client.sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(client)

    def _flush(self, client: Client) -> None:
        if client.overflow and client.closing_deadline is None:
            self._drop(client)
        sock = client.sock
        tls = isinstance(sock, ssl.SSLSocket)
        while True:
            with client.lock:
                if not client.out:
                    break
                if tls:
                    pieces, total = [], 0
                    for piece in itertools.islice(client.out, 0, _IOV):
                        pieces.append(piece)
                        total += len(piece)
                        if total >= _TLS_WRITE:
                            break
                else:
                    pieces = list(itertools.islice(client.out, 0, _IOV))
                offset = client.offset
            if offset:
                pieces[0] = memoryview(pieces[0])[offset:]
            try:
                sent = sock.send(b"".join(pieces)) if tls else sock.sendmsg(pieces)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError:
                self._close(client)
                return
            if sent:
                self._consume(client, sent)
            if not sent or client.out:
                if not sent:
                    break
                continue
        with client.lock:
            empty = not client.out
        if empty and (client.ending or client.closing_deadline is not None):
            self._close(client)
            return
        want = not empty
        if want != client.want_write:
            client.want_write = want
            events = ((selectors.EVENT_READ if client.reads else 0)
                      | (selectors.EVENT_WRITE if want else 0))
            try:
                if not events:
                    self._selector.unregister(sock)
                    client.registered = False
                elif client.registered:
                    self._selector.modify(sock, events, client)
                else:
                    self._selector.register(sock, events, client)
                    client.registered = True
            except (KeyError, ValueError, OSError):
                self._close(client)

    @staticmethod
    def _consume(client: Client, sent: int) -> None:
        with client.lock:
            client.size -= sent
            out = client.out
            while sent:
                left = len(out[0]) - client.offset
                if sent >= left:
                    out.popleft()
                    client.offset = 0
                    sent -= left
                else:
                    client.offset += sent
                    sent = 0

    def _drop(self, client: Client) -> None:
        """Over its bound: keep only a partly written piece, then the final event, then close."""
        self.dropped += 1
        log.info("dropping a stream client that fell %d bytes behind (max_buffer)", client.size)
        with client.lock:
            keep = [client.out[0]] if client.offset and client.out else []
            client.out.clear()
            client.out.extend(keep)
            client.out.extend(client.frame(client.final))
            if client.chunked:
                client.out.append(b"0\r\n\r\n")
            client.size = sum(len(p) for p in client.out) - client.offset
            client.closing_deadline = time.monotonic() + self.drop_grace
        client.gone = True  # its source forgets it
        if client.source is not None:
            client.source.wake()

    def _close(self, client: Client) -> None:
        """Close the socket and free the slot (the hub thread)."""
        self.clients.discard(client)
        if client.registered:
            client.registered = False
            try:
                self._selector.unregister(client.sock)
            except (KeyError, ValueError, OSError):
                pass
        was_gone, client.gone = client.gone, True
        on_close, client.on_close = client.on_close, None
        if on_close is not None:
            try:
                on_close()
            except Exception:
                pass
        try:
            if client.sock is not None:
                client.sock.close()
        except OSError:
            pass
        if not was_gone and client.source is not None:
            client.source.wake()
        client.release()
