"""The stream hub: every open live feed of the gateway, served by a few threads, not one each.
(Clients and sources are in zsup.http.sources.)

A live feed (``/streams/...?feed=continuous|eventsource``, ``/watch``) is answered by a
waitress worker only up to its response head: then the channel hands its socket over
(``zsup.http.channel.Channel.hand_over``) and the hub serves it until it ends. Three parts:

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
  interest to see a stream's client go away, or to read a websocket's frames (zsup.http.hubws:
  so a TLS websocket's one SSL object is used by this thread only), heartbeats, and the end of
  each stream. What websocket clients send runs on ``tasks`` (a few threads, in order per client).

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
import ssl
import threading
import time
from typing import Callable

from zsup.http.sources import Client, EventSource, LineSource, Source, TaskPool, TaskSource

__all__ = ["Client", "EventSource", "Hub", "LineSource", "TaskSource", "shared_hub"]

log = logging.getLogger("zsup.http.hub")

#: Bytes a client may have queued and unsent before it is dropped.
DEFAULT_MAX_BUFFER = 1 << 20
_IOV = 512  # pieces per sendmsg (IOV_MAX is 1024 on Linux)
_TLS_WRITE = 1 << 16


class Hub:
    """One thread writing to every handed-over stream socket, and a few pumping their sources."""

    def __init__(self, workers: int = 2, max_buffer: int = DEFAULT_MAX_BUFFER,
                 drop_grace: float = 5.0, scan_every: float = 0.25, task_workers: int = 4):
        self.workers = workers
        #: Runs what clients send (websocket messages that may call the bus), never the hub thread.
        self.tasks = TaskPool(task_workers)
        self._ident: int | None = None
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
        self.tasks.start()

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
        self.tasks.stop(max(0.0, deadline - time.monotonic()))

    def in_hub_thread(self) -> bool:
        return threading.get_ident() == self._ident

    def task_source(self, step: Callable[[], bool], delay: Callable[[], float],
                    next_due: Callable[[], float] | None = None,
                    on_close: Callable[[], None] | None = None) -> TaskSource:
        """A source whose pump runs ``step()`` (see TaskSource)."""
        source = TaskSource(self, step, delay, next_due, on_close)
        with self._sources_lock:
            self.all_sources.add(source)
        return source

    def line_source(self, gate, proc: dict, label: str, delay: Callable[[], float]) -> LineSource:
        """The shared source of ``(pid, label)`` (made here when there is none, or it ended)."""
        key = (id(gate), proc["pid"], label)
        with self._sources_lock:
            source = self.sources.get(key)
            if source is not None and not source.ended:
                return source
        made = LineSource(self, gate, proc, label, delay)  # outside: it calls the bus
        with self._sources_lock:  # another worker may have made one meanwhile: first one wins
            source = self.sources.get(key)
            if source is None or source.ended:
                self.sources[key] = source = made
                self.all_sources.add(made)
                return made
        made.discard()
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
        """`client` has new bytes, or is over its bound (any thread). Once in the list until
        flushed: a hub behind makes bigger writes, not a longer list."""
        if not client.marked:
            client.marked = True
            self._marked.append(client)

    def send(self, client: Client, data: bytes) -> None:
        """Queue bytes for `client` now (any thread), without waiting for a pump (chunked
        when the client is)."""
        if client.push(client.frame(data), self.max_buffer) or client.overflow:
            self.mark(client)
            self._wake()

    def write_now(self, client: Client, data: bytes) -> None:
        """Send `data` from this thread when nothing is queued before it, else queue it (a
        websocket's own frames: pong, close), so a close frame is out before its socket
        is shut. Never blocks. A TLS socket is written by the hub thread only (one SSL object
        must not be used by two threads): from another thread the bytes are queued. More than
        ``max_buffer`` queued bytes drop the client, as a slow stream client is."""
        with client.lock:
            if client.gone or client.overflow:
                return
            if client.size + len(data) > self.max_buffer:
                client.overflow = True
                data = b""
            sent = 0
            if data and not client.out and (not client.tls or self.in_hub_thread()):
                try:
                    sent = client.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    return  # gone: its owner tells us
            if sent < len(data):
                client.out.append(data[sent:])
                client.size += len(data) - sent
        if sent < len(data) or client.overflow:
            self.mark(client)
            self._wake()

    def finish(self, client: Client, grace: float | None = None) -> None:
        """Close `client` once what is queued is written (at most `grace` seconds from now,
        ``drop_grace`` by default); any thread."""
        with client.lock:
            client.ending = True
            self.close_by(client, grace)
        self.mark(client)
        self._wake()

    def close_by(self, client: Client, grace: float | None = None) -> None:
        """Close `client` at the latest `grace` seconds from now (a websocket closing)."""
        due = time.monotonic() + (self.drop_grace if grace is None else grace)
        if client.deadline is None or due < client.deadline:
            client.deadline = due

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
        self.mark(client)

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
        self._ident = threading.get_ident()
        next_scan = time.monotonic() + self.scan_every
        try:
            while self._running:
                now = time.monotonic()
                timeout = next_scan - now
                if self._timers:
                    timeout = min(timeout, self._timers[0][0] - now)
                if self._attach or self._marked or self._timer_requests:
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
                while self._timer_requests:
                    due, source = self._timer_requests.popleft()
                    heapq.heappush(self._timers, (due, next(self._count), source))
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    self._work.put(heapq.heappop(self._timers)[2])
                marked = len(self._marked)
                for _ in range(marked):
                    client = self._marked.popleft()
                    client.marked = False
                    if client in self.clients:
                        self._flush(client)
                if now >= next_scan:
                    next_scan = now + self.scan_every
                    self._scan(now)
        except Exception:
            log.exception("stream hub failed")
        finally:
            for client in list(self.clients):
                if client.bye:  # a websocket: 1001, going away (best effort)
                    try:
                        client.sock.send(client.bye)
                    except (OSError, ValueError):
                        pass
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
            self._selector.register(client.sock, selectors.EVENT_READ, client)
            client.registered = True
        except (OSError, ValueError):
            self._close(client)
            return
        self.clients.add(client)
        client.tls = isinstance(client.sock, ssl.SSLSocket)
        if client.on_read is not None:  # bytes that came before (after the request head, or
            self._readable(client)    # decrypted and waiting in the SSL object)
            if client not in self.clients:
                return
        self._flush(client)

    def _scan(self, now: float) -> None:
        for source in list(self.all_sources):
            if source.due(now):
                source.wake()
        for client in list(self.clients):
            if ((client.closing_deadline is not None and now >= client.closing_deadline)
                    or (client.deadline is not None and now >= client.deadline)):
                self._close(client)
            elif (client.heartbeat is not None and not client.ending and not client.overflow
                  and now - client.last_push >= client.heartbeat):
                client.push(client.frame(client.beat), self.max_buffer)
                self._flush(client)

    def _readable(self, client: Client) -> None:
        if client.on_read is not None:  # a websocket: its frames
            try:
                alive = client.on_read()
            except Exception:
                log.exception("reading a websocket failed")
                alive = False
            if not alive:
                self._close(client)
            return
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
        tls = client.tls
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
            except OSError as exc:
                client.error = exc
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
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            try:
                if client.registered:
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


_shared: Hub | None = None
_shared_lock = threading.Lock()


def shared_hub() -> Hub:
    """A hub for feeds outside zsup's HTTP server (SockJS over another WSGI server)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Hub()
            _shared.start()
        return _shared
