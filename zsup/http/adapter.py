"""The one place where zsup reaches into waitress's servers and loop (its channel: zsup/http/channel.py).

waitress serves HTTP but has no TLS, never hands a socket over for websockets, and its loop's
trigger breaks when pulled after it was closed. What zsup needs beyond its public interface
lives here and in zsup/http/channel.py (and ws4py's in zsup/http/ws4py_adapter.py), so an
upgrade of either is reviewed in three small files; tests/test_http_adapter.py pins every
assumption below and fails with a clear message when an installed version breaks one.

waitress (3.0.x), assumed:

- ``TcpWSGIServer``/``UnixWSGIServer`` take ``_sock``, ``bind_socket``, ``sockinfo``, ``map``,
  ``dispatcher``; ``accept_connections()`` is where they listen; each makes ``self.trigger``
  (a ``waitress.trigger.trigger``) in its ``__init__``; ``MultiSocketServer(map, adj,
  effective_listen, dispatcher, log_info)`` runs one loop over a shared map;
- ``ServerMixin.handle_accept`` replaces waitress's (``accept()``, ``set_socket_options``,
  ``fix_addr``, ``channel_class(server, conn, addr, adj, map=)``; waitress stops accepting
  when ``len(map) >= adj.connection_limit``).

Thread rules: the servers run in waitress's loop thread (``call_in_loop`` gets code there);
``SafeTrigger`` may be pulled from any thread, before or after it is closed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Sequence

from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer, UnixWSGIServer
from waitress.trigger import trigger as _WaitressTrigger

from zsup.http.channel import Channel, close_socket
from zsup.http.limits import ClientCap, Limits

__all__ = ["Channel", "SafeTrigger", "call_in_loop", "is_channel", "make_loop", "make_server"]

logger = logging.getLogger("zsup.http")


# --------------------------------------------------------------------------------------------
# waitress: the loop's trigger, servers and loop


class SafeTrigger(_WaitressTrigger):
    """waitress's trigger, safe to pull from any thread at any time.

    waitress's own trigger writes to its pipe even after ``close()``: ``EBADF`` in the thread
    that pulls (a worker finishing a request during shutdown, a shutdown step), or worse a
    byte written into whatever file reused the number. Here a pull after close does nothing
    and says so (``False``), the pipe never blocks a puller (a full pipe already means a
    wake-up is pending), and closing twice is harmless.
    """

    def __init__(self, map: dict) -> None:
        # Held only around the write and the close of the pipe, never while thunks run
        # (waitress's ``lock`` is held then): a thunk may close the trigger.
        self._fd_lock = threading.Lock()
        super().__init__(map)
        os.set_blocking(self.trigger, False)

    def pull_trigger(self, thunk: Callable[[], None] | None = None) -> bool:
        """Queue ``thunk`` for the loop thread and wake it; False when the trigger is closed."""
        if thunk is not None:
            with self.lock:
                self.thunks.append(thunk)
        with self._fd_lock:
            if self._closed:
                return False
            try:
                os.write(self.trigger, b"x")
            except BlockingIOError:
                pass
            return True

    def _close(self) -> None:
        with self._fd_lock:
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


def call_in_loop(servers: Sequence[Any], thunk: Callable[[], None]) -> bool:
    """Have waitress's loop thread run ``thunk``: False when no trigger of ``servers`` is open."""
    return any(server.trigger.pull_trigger(thunk) for server in servers)


def make_server(app, sock, *, map: dict, dispatcher, adj, upgrader,
                tls_handshake_timeout: float, limits: Limits | None = None):
    """A waitress server on ``sock``, already bound and listening, in the shared ``map``."""
    cls = UnixServer if sock.family == socket.AF_UNIX else TcpServer
    return cls(app, map=map, _sock=sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
               sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
               upgrader=upgrader, tls_handshake_timeout=tls_handshake_timeout,
               limits=limits or Limits())


def make_loop(map: dict, adj, servers: Sequence[Any], dispatcher) -> MultiSocketServer:
    """waitress's loop over every server of ``map``, as ``create_server(sockets=...)`` builds it."""
    effective = [(server.effective_host, server.effective_port) for server in servers]
    return MultiSocketServer(map, adj, effective, dispatcher, servers[0].log_info)


def is_channel(obj: Any) -> bool:
    return isinstance(obj, HTTPChannel)


class ServerMixin:
    """Settings shared by the TCP and unix servers; the socket comes bound and listening."""

    channel_class = Channel

    #: Connections accepted at most per readiness of the listening socket: a flood of
    #: connects is drained quickly, without starving the other channels of the loop.
    accept_burst = 64
    #: Seconds without accepting after accept() failed (out of file descriptors, mostly).
    accept_pause = 0.5
    _accept_failing = False
    _accept_paused_until = 0.0

    def __init__(self, *args, map: dict, upgrader, tls_handshake_timeout: float,
                 limits: Limits, **kw):
        self.upgrader = upgrader
        self.tls_handshake_timeout = tls_handshake_timeout
        self.limits = limits
        self.client_cap = ClientCap(limits.name, limits.max_client_connections)
        super().__init__(*args, map=map, **kw)
        waitress_trigger, self.trigger = self.trigger, SafeTrigger(map)
        waitress_trigger.close()

    def accept_connections(self):
        # waitress would listen() again with one backlog for every socket.
        self.accepting = True

    def readable(self):
        wanted = super().readable()  # waitress's maintenance and connection_limit
        return wanted and time.monotonic() >= self._accept_paused_until

    def handle_accept(self):
        """waitress's accept, plus the per-client cap, several connections at a time."""
        for _ in range(self.accept_burst):
            try:
                accepted = self.accept()
                if accepted is None:
                    return
                conn, addr = accepted
            except OSError as exc:  # EMFILE and the like: pause, so the loop does not spin
                if not self._accept_failing:
                    logger.warning("endpoint %s: cannot accept connections: %s (retrying "
                                   "every %gs; logged once)", self.limits.name, exc,
                                   self.accept_pause)
                self._accept_failing = True
                self._accept_paused_until = time.monotonic() + self.accept_pause
                return
            if self._accept_failing:
                self._accept_failing = False
                logger.warning("endpoint %s: accepting connections again", self.limits.name)
            client = addr[0] if isinstance(addr, tuple) and addr else None
            if client is not None and not self.client_cap.admit(client):
                close_socket(conn)
                continue
            try:
                self.set_socket_options(conn)
            except OSError:  # the client is already gone
                if client is not None:
                    self.client_cap.release(client)
                close_socket(conn)
                continue
            try:
                self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map,
                                   client=client)
            except OSError as exc:  # gone before its channel was made
                logger.debug("endpoint %s: connection from %s lost at once: %s",
                             self.limits.name, addr, exc)
                close_socket(conn)  # the channel gave its count back
            if len(self._map) >= self.adj.connection_limit:  # waitress's own limit: it stops
                return                                       # listening in readable()


class TcpServer(ServerMixin, TcpWSGIServer):
    pass


class UnixServer(ServerMixin, UnixWSGIServer):
    pass
