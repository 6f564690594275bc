"""The one place zsup reaches into ws4py's internals: the websocket manager and the helpers
the websocket hand-off uses. tests/test_http_adapter.py pins what it assumes.

ws4py (0.6.x), assumed: a ``WebSocket`` keeps bytes read but not yet parsed in ``buf``, has
``sock``, ``stream`` (None once terminated), ``once()``, ``terminate()`` and the
``unhandled_error(error)`` hook (its socket errors while reading; ``quiet_resets``); the
``WebSocketManager`` is a thread with ``lock``, ``websockets`` (fd -> websocket), ``poller``
(``register``/``unregister``/``poll``/``release``) and ``running``.

Thread rules: ``WebSocketManager.run`` is the manager's own thread; the helpers run where the
websocket is served.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Callable

from ws4py.manager import WebSocketManager as _WS4PyManager
from ws4py.websocket import WebSocket

logger = logging.getLogger("zsup.http")

__all__ = ["WebSocketManager", "connection_lost", "finish", "prepend_unread", "quiet_resets"]


# --------------------------------------------------------------------------------------------
# ws4py: the websocket manager


def prepend_unread(ws: WebSocket, data: bytes) -> None:
    """Give ``ws`` bytes that arrived before it existed (frames sent with the request head)."""
    if data:
        ws.buf = data + ws.buf


def quiet_resets(ws: WebSocket) -> None:
    """A client that resets or drops its connection: one debug line, not ws4py's traceback.

    ws4py's ``WebSocket.unhandled_error`` (called for a socket error while reading) logs the
    exception with its traceback; a websocket class that overrides it keeps its own.
    """
    if type(ws).unhandled_error is not WebSocket.unhandled_error:
        return
    ws.unhandled_error = lambda error: connection_lost(ws, error)


_lost_lock = threading.Lock()


def connection_lost(ws: WebSocket, error: BaseException) -> None:
    """Log a websocket's lost connection once (debug), whichever thread notices it first:
    the manager's read, or a thread that was sending to it."""
    with _lost_lock:
        if getattr(ws, "_zsup_lost", False):
            return
        ws._zsup_lost = True
    logger.debug("websocket %s: connection lost: %s", getattr(ws, "path", "?"), error)


def finish(ws: WebSocket) -> None:
    """Terminate a websocket once: closed() is called and the socket closed."""
    if ws.stream is None:  # terminate() already ran
        return
    try:
        ws.terminate()
    except Exception:
        logger.exception("error while closing websocket")


class WebSocketManager(_WS4PyManager):
    """ws4py's manager, with a run loop that does not lose bytes and stops cleanly.

    Four things differ from ws4py's loop: bytes already read off a socket (the part of the
    first packet after the HTTP head, or data decrypted by TLS beyond what ``once()`` took)
    are processed without waiting for the socket to become readable again, which it may never
    do; a websocket whose ``once()`` fails is always terminated (ws4py skips that when both
    sides have sent a close frame, leaking the socket); and ``stop()`` closes the remaining
    websockets from the manager's own thread, so no socket is shared with a running loop; and
    the loop also ends (closing what it holds) when the main thread has ended.
    """

    #: once() calls in a row for one websocket before serving the others.
    burst = 64

    def __init__(self, poller, poll_timeout: float = 0.1) -> None:
        """``poller`` has ws4py's poller interface and is released by this thread only."""
        super().__init__(poller=poller)
        self.name = "zsup-websockets"
        self._poll_timeout = poll_timeout
        self._stopping = threading.Event()
        self._backlog: set[int] = set()
        self._launched = False  # the thread starts with the first websocket it is given (lock)
        #: How many websockets are served elsewhere (the stream hub's), counted by len().
        self.elsewhere: Callable[[], int] = lambda: 0

    def __len__(self) -> int:
        return len(self.websockets) + self.elsewhere()

    @property
    def accepting(self) -> bool:
        return not self._stopping.is_set()

    def add(self, websocket: WebSocket) -> None:
        if self._stopping.is_set():
            finish(websocket)
            return
        try:
            websocket.opened()
        except Exception:
            logger.exception("websocket opened() failed")
            finish(websocket)
            return
        with self.lock:
            late = self._stopping.is_set()
            if not late:
                fd = websocket.sock.fileno()
                self.websockets[fd] = websocket
                self.poller.register(fd)
                if websocket.buf:
                    self._backlog.add(fd)
                if not self._launched:  # zsup's own websockets live in the stream hub: most
                    self._launched = True  # gateways never need this thread (nor its 0.1 s poll)
                    self.start()
        if late:
            finish(websocket)

    def stop(self) -> None:
        self._stopping.set()
        self.running = False

    def shutdown(self, timeout: float) -> bool:
        """Stop, and close what is held: in the manager's thread if it ever started (waited
        for up to `timeout`), else here. True if the thread is still running."""
        self.stop()
        with self.lock:
            started, self._launched = self._launched, True  # no add() starts it from now on
        if not started:
            self.run()  # closes what it holds, releases the poller
            return False
        self.join(timeout)
        return self.is_alive()

    def run(self) -> None:
        self.running = True
        try:
            # A non-daemon thread, so websockets are closed properly (1001) when the program
            # ends; it ends with the main thread, so a shutdown that failed or never ran
            # cannot keep the interpreter from exiting.
            main = threading.main_thread()
            while not self._stopping.is_set() and main.is_alive():
                with self.lock:
                    backlog, self._backlog = self._backlog, set()
                ready = self.poller.poll(0 if backlog else self._poll_timeout)
                for fd in backlog.union(ready):
                    if self._stopping.is_set():
                        break
                    ws = self.websockets.get(fd)
                    if ws is not None:
                        self._serve(fd, ws)
        finally:
            self.running = False
            self._close_remaining()

    def _serve(self, fd: int, ws: WebSocket) -> None:
        for _ in range(self.burst):
            try:
                alive = ws.once()
            except Exception:
                logger.exception("websocket once() failed")
                alive = False
            if not alive:
                with self.lock:
                    if self.websockets.get(fd) is ws:
                        del self.websockets[fd]
                    self.poller.unregister(fd)
                finish(ws)
                return
            sock = ws.sock
            buffered = ws.buf or (isinstance(sock, ssl.SSLSocket) and sock.pending())
            if not buffered:
                return
        with self.lock:
            self._backlog.add(fd)

    def _close_remaining(self) -> None:
        with self.lock:
            remaining = list(self.websockets.values())
            self.websockets.clear()
            self._backlog.clear()
        for ws in remaining:
            sock = ws.sock
            if sock is not None:
                try:
                    # Shutting down must not wait on a client that stopped reading.
                    sock.settimeout(0.0)
                except OSError:
                    pass
            try:
                ws.close(code=1001, reason="server shutting down")
            except Exception:
                pass
            finish(ws)
        self.poller.release()
