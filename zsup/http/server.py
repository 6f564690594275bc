"""The gateway's HTTP server: one WSGI app on several endpoints, websockets on the same ports.

waitress serves HTTP, ws4py speaks websockets; ``HTTPServer`` joins them and knows nothing
about what the application does. The work is split by job:

- zsup.http.listen: bind addresses, endpoints, TLS contexts, listening sockets;
- zsup.http.limits: what an endpoint allows a client (head deadline, connections per
  client address, websockets);
- zsup.http.channel and zsup.http.adapter: waitress's channel (non-blocking TLS handshake,
  the hand-off of a socket out of waitress's loop) and its servers and loop; with
  zsup.http.ws4py_adapter (ws4py's manager), the only modules that touch either library's
  internals;
- zsup.http.wshandoff: the websocket opening handshake, answered on a worker thread, and
  the poller the websocket manager waits on;
- this module: starting and stopping all of it.

Every endpoint (TCP, IPv6, unix socket, with or without TLS) is a listening socket bound by
zsup and served by waitress's own server classes, all in ONE socket map with ONE task
dispatcher and ONE loop thread, as ``waitress.create_server(sockets=[...])`` would build them.
We build them ourselves because waitress refuses to mix TCP and unix sockets in one
``create_server`` call (``Adjustments.check_sockets``) and listens with one backlog for every
socket, while each endpoint here has its own.

TLS handshakes are driven without blocking from waitress's loop, with a deadline: a client
that stalls its handshake holds one connection slot, never the loop that serves everybody.

Limits that come with ws4py's model, on purpose: the manager thread runs every websocket's
``received_message()``, so a handler that sends to a client that stopped reading stalls the
others for up to ``websocket_timeout`` (push from other threads instead); on TLS, a read
that finds half a TLS record waits for the rest as long.

Every thread this module starts is a daemon thread, and every step of ``stop()`` runs even
when an earlier one fails: a failed shutdown may leave a thread behind, never a process that
cannot exit.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence

from waitress.adjustments import Adjustments
from waitress.task import ThreadedTaskDispatcher

from zsup.http.adapter import Channel, call_in_loop, is_channel, make_loop, make_server
from zsup.http.hub import Hub
from zsup.http.limits import Limits
from zsup.http.listen import (
    DEFAULT_BIND,
    BindAddress,
    Endpoint,
    close_quietly,
    listen,
    parse_bind,
    tls_context,
)
from zsup.http.ws4py_adapter import WebSocketManager
from zsup.http.wshandoff import Authorize, SelectorPoller, WebSocketRoutes, WebSocketUpgrader

__all__ = [
    "DEFAULT_BIND",
    "BindAddress",
    "Endpoint",
    "HTTPServer",
    "parse_bind",
]

logger = logging.getLogger("zsup.http")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

#: The channel class, under the name tests knew it by.
_Channel = Channel


# --------------------------------------------------------------------------------------------
# The server


class HTTPServer:
    """Serves one WSGI app on every endpoint, with websockets on the same ports.

    ``start()`` binds every endpoint and returns once they listen; ``stop()`` stops accepting,
    lets running requests finish (up to its timeout), closes every connection and websocket,
    joins every thread it started and removes its unix socket files. Use it as a context
    manager to make sure of the latter.

    ``authorize(headers)`` guards websocket upgrades only (401 when it says no): the WSGI app
    checks its own requests. ``headers`` is webob's ``EnvironHeaders`` of the upgrade request:
    a case-insensitive mapping whose ``environ`` is that request's WSGI environ. The hook runs
    before the query string is read for ``websocket_routes``, so it may take credentials out of
    ``environ["QUERY_STRING"]`` (the gateway's ``?access_token=`` does) and no route sees them.
    ``adjustments`` go to waitress (``ident``, ``channel_timeout``, ``connection_limit``, ...).
    """

    def __init__(self, app: WSGIApp, endpoints: Sequence[Endpoint],
                 websocket_routes: WebSocketRoutes | None, threads: int = 8, *,
                 authorize: Authorize | None = None, tls_handshake_timeout: float = 10.0,
                 websocket_timeout: float = 30.0,
                 adjustments: Mapping[str, Any] | None = None) -> None:
        endpoints = list(endpoints)
        if not endpoints:
            raise ValueError("no endpoint to listen on")
        names = [endpoint.name for endpoint in endpoints]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"endpoint names must be unique: {', '.join(duplicates)}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        forbidden = {"listen", "host", "port", "sockets", "unix_socket", "threads", "backlog"}
        clash = sorted(forbidden.intersection(adjustments or {}))
        if clash:
            raise ValueError(f"set {', '.join(clash)} through endpoints and threads, "
                             f"not adjustments")
        self.app = app
        self.endpoints = endpoints
        self.websocket_routes = websocket_routes
        self.threads = threads
        self.authorize: Authorize = authorize or (lambda headers: True)
        self.tls_handshake_timeout = tls_handshake_timeout
        self.websocket_timeout = websocket_timeout
        self.adjustments = dict(adjustments or {})
        self._addresses: list[BindAddress] = []
        self._unix_files: list[tuple[str, tuple[int, int]]] = []
        self._servers: list[Any] = []
        self._map: dict = {}
        self._dispatcher: ThreadedTaskDispatcher | None = None
        self._waitress: Any = None
        self._manager: WebSocketManager | None = None
        self._hub: Hub | None = None
        self._loop_thread: threading.Thread | None = None
        self._state = "new"
        self._state_lock = threading.Lock()

    # -- public

    @property
    def addresses(self) -> list[BindAddress]:
        """Actual addresses, in endpoint order (a port 0 shows the port the kernel chose)."""
        return list(self._addresses)

    @property
    def websocket_manager(self) -> WebSocketManager | None:
        """The ws4py manager holding the open websockets (for broadcast, counting)."""
        return self._manager

    @property
    def stream_hub(self) -> Hub | None:
        """The hub serving the open live feeds (zsup.http.hub), once started."""
        return self._hub

    def start(self) -> None:
        with self._state_lock:
            if self._state != "new":
                raise RuntimeError(f"HTTPServer cannot start: it is {self._state}")
            self._state = "starting"
        try:
            self._start()
        except BaseException:
            try:
                self._teardown(timeout=5.0)
            except BaseException:  # noqa: BLE001 - logged there; the start's error matters
                pass
            finally:
                with self._state_lock:
                    self._state = "stopped"
            raise
        with self._state_lock:
            self._state = "running"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop everything; safe to call twice, or after a failed start."""
        with self._state_lock:
            if self._state in ("stopped", "stopping"):
                return
            was_new = self._state == "new"
            self._state = "stopping"
        try:
            if not was_new:
                self._teardown(timeout)
        finally:
            with self._state_lock:
                self._state = "stopped"

    def __enter__(self) -> "HTTPServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- internals

    def _start(self) -> None:
        bound: list[tuple[Endpoint, socket.socket]] = []
        try:
            for endpoint in self.endpoints:
                sock, actual, identity = listen(endpoint)
                bound.append((endpoint, sock))
                self._addresses.append(actual)
                if identity is not None:
                    self._unix_files.append((actual.path, identity))
            for index, (endpoint, sock) in enumerate(bound):
                if endpoint.tls:
                    context = tls_context(endpoint)
                    bound[index] = (endpoint, context.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False))
        except BaseException:
            for _, sock in bound:
                close_quietly(sock)
            raise

        options = {"ident": "zsup", "asyncore_use_poll": True, **self.adjustments}
        adj = Adjustments(threads=self.threads, **options)
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(self.threads)
        self._manager = WebSocketManager(SelectorPoller())
        self._hub = Hub()
        upgrader = WebSocketUpgrader(self.websocket_routes, self.authorize, self._manager,
                                      self.websocket_timeout, hub=self._hub)
        for index, (endpoint, sock) in enumerate(bound):
            try:
                limits = Limits(endpoint.name, endpoint.header_timeout,
                                endpoint.max_client_connections, endpoint.max_websockets)
                server = make_server(self.app, sock, map=self._map, dispatcher=self._dispatcher,
                                     adj=adj, upgrader=upgrader,
                                     tls_handshake_timeout=self.tls_handshake_timeout,
                                     limits=limits)
            except BaseException:
                for _, later in bound[index:]:
                    close_quietly(later)
                raise
            server.hub = self._hub
            self._servers.append(server)
        self._waitress = make_loop(self._map, adj, self._servers, self._dispatcher)
        self._hub.start()
        self._loop_thread = threading.Thread(target=self._waitress.run, name="zsup-http-loop",
                                             daemon=True)
        self._loop_thread.start()
        for endpoint, address in zip(self.endpoints, self._addresses):
            # at DEBUG: zsup-http and zsup-lookupd log their own "listening" line at INFO
            logger.debug("endpoint %s listening on %s%s", endpoint.name, address,
                         " (TLS)" if endpoint.tls else "")

    def _in_loop(self, fn: Callable[[], None], timeout: float) -> None:
        """Run fn in waitress's loop thread (the only thread that may touch its map).

        When the loop cannot take it (its triggers are closed: it is ending), fn runs here once
        the loop thread has ended, or after ``timeout`` at the latest: a shutdown step is never
        skipped and never raises for a closed trigger.
        """
        thread = self._loop_thread
        if thread is None or not thread.is_alive() or not self._servers:
            fn()
            return
        done = threading.Event()
        ran = threading.Lock()

        def thunk() -> None:
            if not ran.acquire(blocking=False):
                return  # already run by the fallback below
            try:
                fn()
            finally:
                done.set()

        if call_in_loop(self._servers, thunk):
            if not done.wait(timeout):
                logger.warning("HTTP loop did not run a shutdown step within %ss", timeout)
            return
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("HTTP loop is not taking shutdown steps: running one from %s",
                           threading.current_thread().name)
        if ran.acquire(blocking=False):
            fn()

    def _teardown(self, timeout: float) -> None:
        """Every step runs, whatever an earlier one raised; the first error is raised last."""
        errors: list[BaseException] = []
        for step in (self._stop_http, self._stop_websockets, self._stop_hub):
            try:
                step(timeout)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
                logger.exception("HTTP server shutdown step %s failed", step.__name__)
                errors.append(exc)
        self._remove_unix_files()
        if errors:
            raise errors[0]

    def _stop_http(self, timeout: float) -> None:
        servers = list(self._servers)

        def stop_accepting() -> None:
            for server in servers:
                server.accepting = False

        def close_everything() -> None:
            for obj in list(self._map.values()):
                try:
                    if is_channel(obj):
                        obj.handle_close()
                    else:
                        obj.close()
                except Exception:
                    logger.exception("error while closing %r", obj)
            self._map.clear()  # the loop ends when its map is empty

        if servers:
            self._in_loop(stop_accepting, timeout)
        try:
            if self._dispatcher is not None:
                # Running requests (and upgrades) finish while the loop still flushes their
                # answers; queued ones are cancelled.
                self._dispatcher.shutdown(cancel_pending=True, timeout=timeout)
        finally:
            if servers:
                self._in_loop(close_everything, timeout)
            else:
                close_everything()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)
            if self._loop_thread.is_alive():
                logger.warning("HTTP loop thread still running after %ss", timeout)
        if self._dispatcher is not None:
            # Tasks the loop queued after the first shutdown (an upgrade spotted at the last
            # moment) hold sockets that nothing else would close.
            self._dispatcher.shutdown(cancel_pending=True, timeout=0)

    def _stop_hub(self, timeout: float) -> None:
        if self._hub is not None:
            self._hub.stop(timeout)

    def _stop_websockets(self, timeout: float) -> None:
        if self._manager is not None and self._manager.shutdown(timeout):
            logger.warning("websocket manager still running after %ss", timeout)

    def _remove_unix_files(self) -> None:
        for path, identity in self._unix_files:
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == identity:  # still ours, not a newer server's
                    os.unlink(path)
            except OSError:
                pass
        self._unix_files = []
