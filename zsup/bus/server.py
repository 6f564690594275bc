"""The daemon's side of the bus: a ROUTER for commands and an XPUB for events.

ZeroMQ sockets are not thread-safe, so each socket has exactly one owner thread:

- the control thread owns the ROUTER socket(s): it reads requests, calls the handler one
  request at a time (commands are serialized, so a client's replies come back in order) and
  sends the replies;
- the publisher thread owns the XPUB socket(s): it sends what `publish()` queued and reads the
  subscription messages that XPUB hands up.

Any thread may call `publish()`. It encodes the event in the caller's thread (so a caller that
mutates its dict afterwards cannot race the publisher, and a bad message fails where it was
made), puts the frames on a SimpleQueue and, only when the publisher is not already awake,
writes an eventfd the publisher polls next to its sockets. A burst of events thus costs one
system call, not one per event. Sends are non-blocking: a subscriber that does not read loses
messages at its high-water mark and never holds up the daemon.

CURVE settings apply to a whole socket, all its endpoints included, so when tcp endpoints use
CURVE they get their own ROUTER and XPUB next to the plain ipc ones; the owner threads simply
poll both.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any, Callable

import zmq

from zsup.bus import curve as curvekeys
from zsup.bus.endpoints import Endpoint, check_tcp_security, parse_endpoint, prepare_ipc_path
from zsup.bus.protocol import (
    FRAME_LIMIT_FACTOR,
    MAX_REQUEST_BYTES,
    InvalidRequest,
    Request,
    decode_request,
    encode_event,
    encode_reply,
    error_reply,
    ok_reply,
    split_envelope,
)
from zsup.errors import ZsupError

# Plain ints: pyzmq's flags are enums, and combining them costs enum arithmetic per frame.
_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)

log = logging.getLogger("zsup.bus")

Handler = Callable[[str, dict], Any]
SubscribeCallback = Callable[[str, bool], None]

# How long closing sockets may take to flush what is queued (the reply to a last command,
# a final sys.stop event). Bounded, so a peer that stopped reading cannot hang a shutdown.
_LINGER_MS = 200
# Requests / events handled per turn before looking at the other sockets again.
_BATCH = 256


class BusServer:
    """Serve bus commands with `handler` and publish events, on the given endpoints.

    `handler(cmd, args)` returns the result (any JSON value) or raises a ZsupError whose
    code goes into the error reply; any other exception becomes `internal`, logged once.
    `endpoints` is `{"router": [url, ...], "pub": [url, ...]}` with ipc:// and tcp:// urls.
    `on_subscribe(prefix, subscribed)` is called from the publisher thread when the first
    subscriber to a prefix arrives (True) and when the last one leaves (False); keep it short.
    `curve` configures tcp endpoints (see zsup.bus.curve); without keys, tcp is refused
    unless `{"insecure": True}` and the address is loopback.
    """

    def __init__(
        self,
        handler: Handler,
        endpoints: dict,
        on_subscribe: SubscribeCallback | None = None,
        hwm: int = 100_000,
        curve: dict | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ):
        self._handler = handler
        self._on_subscribe = on_subscribe
        self._hwm = hwm
        self._curve = curve
        self._max_request_bytes = max_request_bytes
        self._router_eps = _parse_list(endpoints, "router")
        self._pub_eps = _parse_list(endpoints, "pub")
        if not self._router_eps:
            raise ZsupError("the bus needs at least one router endpoint")
        # Checked here, before anything is bound: a refused config must change nothing.
        self._use_curve = check_tcp_security(self._router_eps + self._pub_eps, curve)

        self._context: zmq.Context | None = None
        self._auth = None
        self._routers: list[zmq.Socket] = []
        self._pubs: list[zmq.Socket] = []
        self._bound: dict[str, list[str]] = {"router": [], "pub": []}
        self._ipc_files: list[tuple[str, int, int]] = []  # path, st_dev, st_ino

        self._queue: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._publisher_wake: int | None = None  # eventfds, closed (and None) after stop
        self._control_wake: int | None = None

        self._subs_lock = threading.Lock()
        self._subs: dict[str, int] = {}

        self._control_thread: threading.Thread | None = None
        self._publisher_thread: threading.Thread | None = None
        self._running = False
        self._stopping = False
        self.events_sent = self.events_dropped = 0  # publisher thread only (zsup metrics)
        self._stop_lock = threading.Lock()

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind every endpoint and start both threads; raise ZsupError if anything fails.

        On failure nothing is left behind: sockets closed, ipc files removed.
        """
        if self._running or self._stopping:
            raise RuntimeError("a BusServer starts once")
        self._routers, self._pubs, self._ipc_files = [], [], []
        self._bound = {"router": [], "pub": []}
        self._context = zmq.Context()
        try:
            if self._use_curve:
                self._auth = curvekeys.start_authenticator(
                    self._context, self._curve.get("authorized_keys_dir"))
            self._make_sockets(zmq.ROUTER, self._router_eps, "router", self._routers)
            self._make_sockets(zmq.XPUB, self._pub_eps, "pub", self._pubs)
            self._control_wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._publisher_wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except BaseException:
            self._release()
            raise
        self._running = True
        ready = threading.Barrier(3)
        self._control_thread = threading.Thread(
            target=self._control_main, args=(ready,), name="zsup-bus-control", daemon=True)
        self._publisher_thread = threading.Thread(
            target=self._publisher_main, args=(ready,), name="zsup-bus-publisher", daemon=True)
        self._control_thread.start()
        self._publisher_thread.start()
        ready.wait()

    def stop(self) -> None:
        """Stop both threads, close the sockets, remove ipc files, end the zmq context.

        Events queued before the call are still sent (best effort, bounded by a short linger).
        Must not be called from the handler or on_subscribe: they run in the threads it joins.
        """
        if threading.current_thread() in (self._control_thread, self._publisher_thread):
            raise RuntimeError("BusServer.stop() called from the bus's own thread; "
                               "ask another thread to stop the server")
        with self._stop_lock:  # two threads stopping at once: the second one just waits
            if not self._running:
                return
            self._stopping = True
            self._running = False
            self._wake("_control_wake")
            self._wake("_publisher_wake")
            for thread in (self._control_thread, self._publisher_thread):
                thread.join()
            self._release()

    def __enter__(self) -> "BusServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoints(self) -> dict[str, list[str]]:
        """The bound addresses (`{"router": [...], "pub": [...]}`), tcp ports resolved."""
        return {role: list(urls) for role, urls in self._bound.items()}

    # ------------------------------------------------------------------------ publishing

    def publish(self, topic: str, msg: dict, data: bytes | None = None) -> None:
        """Queue an event for subscribers; thread-safe, never blocks on subscribers.

        Raises ValueError/TypeError at once if the event cannot be encoded. A no-op before
        start(), after stop(), and when the server has no pub endpoint.
        """
        frames = encode_event(topic, msg, data)
        if not self._running or not self._pubs:
            return
        self._queue.put(frames)
        # Lock-free fast path: the publisher clears the flag before it drains the queue, so
        # an event put before we read True is always picked up by that drain.
        if not self._wake_pending:
            with self._wake_lock:
                self._wake_pending = True
                if self._publisher_wake is not None:
                    os.eventfd_write(self._publisher_wake, 1)

    def has_subscribers(self, prefix: str) -> bool:
        """True if some subscriber would receive a topic starting with `prefix`.

        Lets a producer skip work nobody reads: `has_subscribers("stats.")` is True for a
        subscription to `stats.`, to `stats.default.web` or to everything (`""`).
        """
        with self._subs_lock:
            return any(sub.startswith(prefix) or prefix.startswith(sub) for sub in self._subs)

    # ------------------------------------------------------------------------ setup helpers

    def _make_sockets(self, kind: int, endpoints: list[Endpoint], role: str,
                      into: list[zmq.Socket]) -> None:
        """One socket for plain endpoints, one for CURVE endpoints (only those needed).

        Each socket is added to `into` as soon as it exists, so that _release() closes it
        even when a later bind fails.
        """
        plain = [ep for ep in endpoints if not (self._use_curve and ep.transport == "tcp")]
        secure = [ep for ep in endpoints if self._use_curve and ep.transport == "tcp"]
        for group, with_curve in ((plain, False), (secure, True)):
            if not group:
                continue
            sock = self._context.socket(kind)
            into.append(sock)
            sock.linger = _LINGER_MS
            if kind == zmq.XPUB:
                sock.sndhwm = self._hwm
            else:
                # libzmq checks a frame's announced size before it allocates it, so an
                # over-long request never reaches Python's memory; it drops the connection.
                sock.setsockopt(zmq.MAXMSGSIZE, self._max_request_bytes * FRAME_LIMIT_FACTOR)
            if any(":" in (ep.host or "") for ep in group):
                sock.ipv6 = True
            if with_curve:
                curvekeys.configure_server_socket(sock, self._curve)
            for ep in group:
                self._bound[role].append(self._bind(sock, ep))

    def _bind(self, sock: zmq.Socket, ep: Endpoint) -> str:
        url = ep.url
        if ep.path is not None:
            prepare_ipc_path(ep.path)
            url = "ipc://" + ep.path
        try:
            sock.bind(url)
        except zmq.ZMQError as exc:
            raise ZsupError(f"cannot bind {ep.url}: {exc}") from None
        if ep.path is not None:
            # The parent directory is 0700 when we made it, which covers the moment between
            # bind and chmod; the chmod keeps the socket owner-only even in a shared directory.
            os.chmod(ep.path, 0o600)
            st = os.stat(ep.path)
            self._ipc_files.append((ep.path, st.st_dev, st.st_ino))
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _release(self) -> None:
        """Close what start() made; safe after a partial start."""
        for sock in self._routers + self._pubs:
            if not sock.closed:  # the owner threads close theirs; this covers a failed start
                sock.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._context is not None:
            self._context.term()
        with self._wake_lock:
            for name in ("_control_wake", "_publisher_wake"):
                fd = getattr(self, name)
                if fd is not None:
                    os.close(fd)
                    setattr(self, name, None)
        for path, dev, ino in self._ipc_files:
            # Only our own file: never remove a socket some other server bound since.
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    os.unlink(path)
            except FileNotFoundError:
                pass  # libzmq removes it itself when the listener closes
        self._ipc_files = []

    def _wake(self, name: str) -> None:
        with self._wake_lock:
            fd = getattr(self, name)
            if fd is not None:
                os.eventfd_write(fd, 1)

    # ------------------------------------------------------------------------ control thread

    def _control_main(self, ready: threading.Barrier) -> None:
        poller = zmq.Poller()
        for sock in self._routers:
            poller.register(sock, zmq.POLLIN)
        poller.register(self._control_wake, zmq.POLLIN)
        ready.wait()
        try:
            while not self._stopping:
                try:
                    events = dict(poller.poll())
                    for sock in self._routers:
                        if sock in events:
                            self._serve_batch(sock)
                except zmq.ContextTerminated:
                    break
                except Exception:
                    # A bug here must not take the command socket down with it.
                    log.exception("bus control loop error (continuing)")
        finally:
            for sock in self._routers:
                sock.close()

    def _serve_batch(self, sock: zmq.Socket) -> None:
        for _ in range(_BATCH):
            try:
                frames = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            reply = self._answer(frames)
            try:
                for frame in reply[:-1]:
                    sock.send(frame, _MORE)
                sock.send(reply[-1], _NOBLOCK)
            except zmq.Again:
                log.warning("bus reply dropped: client %r is not reading", frames[0])
            # Asking is cheaper than the exception of an empty read (pyzmq builds a ZMQError).
            if not sock.getsockopt(_EVENTS) & _POLLIN:
                return

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        """The reply to one request: every request gets one, whatever its frames hold."""
        try:
            request = decode_request(frames, self._max_request_bytes)
        except InvalidRequest as exc:
            return encode_reply(exc.envelope, error_reply(exc.request_id, exc))
        except Exception as exc:  # noqa: BLE001 - a parser surprise is still the client's bad request
            envelope = split_envelope(frames)[0]
            return encode_reply(envelope, error_reply(None, InvalidRequest(
                f"request cannot be read: {_describe(exc)}", envelope)))
        return self._call_handler(request)

    def _call_handler(self, request: Request) -> list[bytes]:
        try:
            result = self._handler(request.cmd, request.args)
            return encode_reply(request.envelope, ok_reply(request.id, result))
        except ZsupError as exc:
            return encode_reply(request.envelope, error_reply(request.id, exc))
        except BaseException as exc:  # noqa: BLE001 - the server thread must survive anything
            log.exception("bus command %r failed", request.cmd)
            error = ZsupError(f"internal error in {request.cmd!r}: {_describe(exc)}")
            return encode_reply(request.envelope, error_reply(request.id, error))

    # ------------------------------------------------------------------------ publisher thread

    def _publisher_main(self, ready: threading.Barrier) -> None:
        poller = zmq.Poller()
        for sock in self._pubs:
            poller.register(sock, zmq.POLLIN)
        poller.register(self._publisher_wake, zmq.POLLIN)
        ready.wait()
        timeout = None
        try:
            while True:
                try:
                    events = dict(poller.poll(timeout))
                    for sock in self._pubs:
                        if sock in events:
                            self._read_subscriptions(sock)
                    if self._publisher_wake in events:
                        os.eventfd_read(self._publisher_wake)
                        self._wake_pending = False  # before draining: see publish()
                    if self._stopping:
                        self._send_queued(None)
                        break
                    more = self._send_queued(_BATCH * 16)
                    timeout = 0 if more else None
                except zmq.ContextTerminated:
                    break
                except Exception:
                    log.exception("bus publisher loop error (continuing)")
        finally:
            for sock in self._pubs:
                sock.close()

    def _send_queued(self, limit: int | None) -> bool:
        """Send up to `limit` queued events; True if some are left for the next turn."""
        sent = 0
        while limit is None or sent < limit:
            try:
                frames = self._queue.get_nowait()
            except queue.Empty:
                return False
            for sock in self._pubs:
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:
                    self.events_dropped += 1  # a peer at its high-water mark loses this one (seq shows the gap)
            sent += 1
            self.events_sent += 1
        return not self._queue.empty()

    def _read_subscriptions(self, sock: zmq.Socket) -> None:
        """Note (un)subscriptions and report the first subscribe and last unsubscribe.

        XPUB is left non-verbose on purpose: libzmq then reports a prefix once when its first
        subscriber on that socket arrives and once when its last one leaves, deduplicating per
        connection exactly. Verbose modes report every subscribe but unsubscribes only
        partially (a SUB that subscribes twice unsubscribes upstream once), so counts built
        on them never get back to zero. Here a count per prefix only merges the ipc and the
        CURVE socket.
        """
        for _ in range(_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 1 or not frames[0] or frames[0][0] not in (0, 1):
                continue  # not a subscription message (an XSUB may send anything)
            subscribed = frames[0][0] == 1
            prefix = frames[0][1:].decode("utf-8", "replace")
            with self._subs_lock:
                count = self._subs.get(prefix, 0)
                if subscribed:
                    self._subs[prefix] = count + 1
                    changed = count == 0
                elif count:
                    if count == 1:
                        del self._subs[prefix]
                    else:
                        self._subs[prefix] = count - 1
                    changed = count == 1
                else:
                    changed = False
            if changed and self._on_subscribe is not None:
                try:
                    self._on_subscribe(prefix, subscribed)
                except Exception:
                    log.exception("on_subscribe(%r, %r) failed", prefix, subscribed)


def _parse_list(endpoints: dict, role: str) -> list[Endpoint]:
    if not isinstance(endpoints, dict):
        raise ZsupError("bus endpoints must be a dict {'router': [...], 'pub': [...]}")
    urls = endpoints.get(role) or []
    if isinstance(urls, str):
        urls = [urls]
    return [parse_endpoint(url) for url in urls]


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
