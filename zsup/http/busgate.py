"""The gateway's only link to zsupd: commands from any thread, events fanned out from one socket.

Interface (stable; the task API and the agent API are built on it):

``BusGate(bus_endpoint, pub_endpoint, timeout=5.0, curve=None)``
    Nothing is connected until used; zsupd need not be running.

``gate.call(cmd, /, **args) -> Any``
    Run a bus command and return its result. Thread-safe: each thread gets its own ``Client``
    (a DEALER socket) on first use. Raises the ``ZsupError`` subclass zsupd answered with
    (``BadRequest``, ``NotFound``, ``Conflict``, ``Forbidden``, ...), and ``Unavailable`` when
    zsupd does not answer within ``timeout`` seconds (or its ipc socket file does not exist,
    which is answered at once). There is nothing to reconnect by hand: the next call after
    zsupd comes back simply works.

``gate.ping()``, ``gate.scale(name, n, session=...)``, ... one typed method per bus command
    (zsup/bus/typed.py, made from zsup/bus/schema.py): ``call`` with the arguments checked.

``gate.request(cmd, args: dict | None = None, timeout: float | None = None) -> Any``
    The same, with an args dict and a per-call timeout.

``gate.subscribe(patterns: list[str], maxsize: int = 10000) -> Subscription``
    Receive events whose topic matches one of ``patterns`` (``zsup.bus.protocol.topic_matches``
    rules: ``""``/``"."`` everything, ``"proc.default.web"`` that job exactly, a trailing ``.``
    a plain prefix). Every subscription shares the gate's ONE SUB socket, owned by ONE fan-out
    thread that copies each event into the bounded queue of every subscription that wants it.
    The slow-joiner rule of the bus applies: fill what came before from the command side
    (``read_output``, ``info``...).

``Subscription``
    ``.get(timeout: float | None = None) -> Event | None`` the next event (``Event(topic, msg,
    data)`` of ``zsup.bus.protocol``), or None after ``timeout`` seconds or once closed;
    ``.drain(limit=1000) -> list[Event]`` every event already queued (at most ``limit``), without
    waiting, so a consumer that wakes for one event writes all that came meanwhile at once;
    ``.dropped`` how many events did not fit in its queue (a consumer that falls behind loses
    events, never slows the others; ``seq`` gaps in output show it); ``.closed`` true once
    closed, by ``.close()`` or because its consumer stopped reading for ``stall_timeout``
    seconds with a full queue; ``.close()`` (idempotent; also a context manager).

Events are decoded once, in the fan-out thread, and the SAME ``Event`` object goes to every
subscription: treat it as read-only. ``memo(event)`` is a dict attached to it for work that is
the same for every consumer (the stream feeds keep a formatted batch there, so 200 clients of
one stream format each event once, not 200 times).

``gate.keep(patterns)`` subscribes the SUB socket to ``patterns`` for the gate's whole life (the
gateway keeps ``job`` and ``proc``), so that a later subscription to them is live at once.

``gate.close()`` stops the fan-out thread and closes every socket the gate made (call it once,
at shutdown).

Subscribe and unsubscribe requests are handed to the fan-out thread through a queue and a
wake-up pipe: no other thread ever touches the SUB socket. Over ipc, ZeroMQ reconnects the SUB
socket (and renews its subscriptions) by itself when zsupd restarts.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
import weakref
from typing import Any, Iterable

import zmq

from zsup.bus.client import Client
from zsup.bus.protocol import Event, decode_event, topic_matches, zmq_prefix
from zsup.bus.typed import BusCommands
from zsup.errors import Unavailable

__all__ = ["BusGate", "Subscription", "memo"]

log = logging.getLogger("zsup.http.busgate")


def memo(event: Event) -> dict:
    """A dict shared by every consumer of this event, for derived data computed once.

    Event is a frozen dataclass: the memo lives in its instance ``__dict__`` (not a field, so
    equality and repr are unchanged). ``setdefault`` is atomic, so concurrent consumers agree on
    one dict; two of them may compute the same entry at once, which is harmless.
    """
    d = event.__dict__
    m = d.get("_memo")
    if m is None:
        m = d.setdefault("_memo", {})
    return m


class Subscription:
    """A bounded queue of events for one consumer (see the module docstring)."""

    def __init__(self, gate: "BusGate", patterns: list[str], maxsize: int):
        self.patterns = list(patterns)
        self._gate = gate
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self.dropped = 0
        self.closed = False
        self.last_get = time.monotonic()
        self._close_lock = threading.Lock()
        #: Called (by the fan-out thread, or the closing thread) after each event is queued
        #: and once at close, when set: a consumer that serves many subscriptions from a few
        #: threads (zsup.http.hub) learns which one to read. It must not block.
        self.on_ready = None

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds or when the subscription is closed."""
        self.last_get = time.monotonic()
        if self.closed and self._queue.empty():
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            self.last_get = time.monotonic()
        if item is None:  # closed while we waited
            self.closed = True
            return None
        return item

    def drain(self, limit: int = 1000) -> list[Event]:
        """Every event already queued (at most `limit`), without waiting; [] if none."""
        self.last_get = time.monotonic()
        q = self._queue
        with q.mutex:
            n = min(limit, len(q.queue))
            if not n:
                return []
            popleft = q.queue.popleft
            items = [popleft() for _ in range(n)]
            q.not_full.notify(n)
        for i, item in enumerate(items):
            if item is None:  # closed: what came before the mark still counts
                self.closed = True
                return items[:i]
        return items

    def close(self) -> None:
        with self._close_lock:
            if self.closed:
                return
            self.closed = True
        self._gate._remove(self)
        self._wake_consumer()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- fan-out side (called only by the fan-out thread)

    def _offer(self, event: Event) -> bool:
        """Queue an event; False when the queue is full (the event is dropped)."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            return False
        if self.on_ready is not None:
            self.on_ready(self)
        return True

    def _wake_consumer(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the consumer has plenty to read; it finds `closed` afterwards
        if self.on_ready is not None:
            self.on_ready(self)


class BusGate(BusCommands):
    """Commands (thread-local clients) and events (one SUB socket, one fan-out thread) for zsupd."""

    def __init__(self, bus_endpoint: str, pub_endpoint: str, timeout: float = 5.0,
                 curve: dict | None = None, stall_timeout: float = 30.0,
                 context: zmq.Context | None = None):
        self.bus_endpoint = bus_endpoint
        self.pub_endpoint = pub_endpoint
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self._curve = curve
        self._context = context or zmq.Context.instance()
        self._local = threading.local()
        self._clients: weakref.WeakSet = weakref.WeakSet()  # dead threads' clients go
        self._busy: set = set()  # clients inside a request: only their own thread closes them
        self._clients_lock = threading.Lock()
        self._requests: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.subscriptions: set[Subscription] = set()  # read-only outside the fan-out thread

    # ------------------------------------------------------------------ commands

    def call(self, cmd: str, /, **args: Any) -> Any:
        return self.request(cmd, args)

    def request(self, cmd: str, args: dict | None = None, timeout: float | None = None) -> Any:
        if self._closed:
            raise Unavailable("the gateway is shutting down")
        self._check_ipc_socket()
        client = getattr(self._local, "client", None)
        if client is None:
            client = Client(self.bus_endpoint, timeout=self.timeout, curve=self._curve,
                            context=self._context)
            self._local.client = client
            with self._clients_lock:
                self._clients.add(client)
        with self._clients_lock:
            self._busy.add(client)
        try:
            return client.request(cmd, args or {}, timeout=timeout)
        except Unavailable:
            raise Unavailable("zsupd is not answering (is it running?); try again later") from None
        finally:
            with self._clients_lock:
                self._busy.discard(client)
                closing = self._closed
            if closing:  # close() left this socket to us: a zmq socket is one thread's
                client.close()

    def _check_ipc_socket(self) -> None:
        # A missing ipc socket file means no zsupd at all: answer at once, not after a timeout.
        if self.bus_endpoint.startswith("ipc://"):
            path = self.bus_endpoint[len("ipc://"):]
            if not path.startswith("@") and not os.path.exists(path):
                raise Unavailable("zsupd is not running (no bus socket); try again later")

    # ------------------------------------------------------------------ events

    def subscribe(self, patterns: Iterable[str], maxsize: int = 10000) -> Subscription:
        patterns = [str(p) for p in patterns]
        if self._closed:
            raise Unavailable("the gateway is shutting down")
        sub = Subscription(self, patterns, maxsize)
        self._ensure_thread()
        self._requests.append(("add", sub))
        self._wake()
        return sub

    def keep(self, patterns: Iterable[str]) -> None:
        """Subscribe the gate's SUB socket to `patterns` for as long as the gate lives, and
        start it now. A client's later subscription to one of them is then live at once,
        not after ZeroMQ's slow joiner: a gaffer client acts right after its
        `subscription_success` and expects the events of what it does."""
        if self._closed:
            raise Unavailable("the gateway is shutting down")
        self._ensure_thread()
        self._requests.append(("keep", [str(p) for p in patterns]))
        self._wake()

    def _remove(self, sub: Subscription) -> None:
        self._requests.append(("remove", sub))
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the thread is awake already (or closed)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="zsup-http-fanout",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        sock = self._context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 100_000
        if self._curve:
            from zsup.bus import curve as curvekeys
            curvekeys.configure_client_socket(sock, self._curve)
        sock.connect(self.pub_endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        prefixes: collections.Counter = collections.Counter()  # users of each SUB prefix
        by_pattern: dict[str, set[Subscription]] = {}

        def count_in(prefix: str) -> None:
            if prefixes[prefix] == 0:
                sock.subscribe(prefix)
            prefixes[prefix] += 1

        last_stall_check = time.monotonic()
        try:
            while not self._closed:
                ready = dict(poller.poll(1000))
                if self._wake_r in ready:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                while self._requests:
                    op, sub = self._requests.popleft()
                    if op == "keep":  # counted once more, never taken back: never unsubscribed
                        for pattern in sub:  # (a list of patterns, not a Subscription)
                            count_in(zmq_prefix(pattern))
                    elif op == "add" and not sub.closed:
                        self.subscriptions.add(sub)
                        for pattern in set(sub.patterns):
                            by_pattern.setdefault(pattern, set()).add(sub)
                            count_in(zmq_prefix(pattern))
                    elif op == "remove" and sub in self.subscriptions:
                        self.subscriptions.discard(sub)
                        for pattern in set(sub.patterns):
                            subs = by_pattern.get(pattern)
                            if subs is not None:
                                subs.discard(sub)
                                if not subs:
                                    del by_pattern[pattern]
                            prefix = zmq_prefix(pattern)
                            prefixes[prefix] -= 1
                            if prefixes[prefix] <= 0:
                                del prefixes[prefix]
                                sock.unsubscribe(prefix)
                if sock in ready:
                    # A bounded batch, so subscription requests are not starved by a flood.
                    for _ in range(1000):
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        try:
                            event = decode_event(frames)
                        except ValueError:
                            continue
                        self._dispatch(event, by_pattern)
                now = time.monotonic()
                if now - last_stall_check > 1.0:
                    last_stall_check = now
                    self._cut_stalled(now)
        except zmq.ContextTerminated:
            pass
        except Exception:
            log.exception("event fan-out thread failed")
        finally:
            sock.close()
            for sub in list(self.subscriptions):
                sub.closed = True
                sub._wake_consumer()

    def _dispatch(self, event: Event, by_pattern: dict[str, set[Subscription]]) -> None:
        delivered: set[Subscription] = set()
        for pattern, subs in by_pattern.items():
            if not topic_matches(pattern, event.topic):
                continue
            for sub in subs:
                if sub not in delivered:
                    delivered.add(sub)
                    sub._offer(event)

    def _cut_stalled(self, now: float) -> None:
        """A consumer that left a full queue unread for stall_timeout is gone: close it."""
        for sub in list(self.subscriptions):
            if sub._queue.full() and now - sub.last_get > self.stall_timeout:
                log.info("closing a subscription whose consumer stopped reading (%s)", sub.patterns)
                sub.closed = True
                self._requests.append(("remove", sub))
                sub._wake_consumer()

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
        with self._clients_lock:
            clients, self._clients = [c for c in self._clients if c not in self._busy], weakref.WeakSet()
        for client in clients:
            try:
                client.close()  # a socket may be closed from another thread once unused
            except Exception:
                pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
