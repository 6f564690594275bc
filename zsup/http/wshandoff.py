"""The websocket hand-off: an upgrade request on a socket waitress let go becomes a ws4py websocket.

The channel (zsup.http.channel) spots a complete ``Upgrade: websocket`` request head before
waitress queues it, takes the socket out of waitress's loop (in the loop's own thread) and
queues ``WebSocketUpgrader.task(...)`` on waitress's worker pool. The worker checks the
handshake (RFC 6455 section 4.2.1), asks the ``authorize`` hook and the ``websocket_routes``
callable, answers ``101`` (or 400, 401, 404, 503 in the gateway's JSON error shape) itself,
and gives the websocket to the stream hub (a ``zsup.http.hubws.HubSocket``: the hub thread
reads and writes it, TLS or not) or, for any other ws4py websocket, to ws4py's manager
(which reads it on its one thread). Both count against the endpoint's ``max_websockets``,
checked before the ``101``. Plain requests on the same connection before the
upgrade are answered first, in order.

The websocket is made with ``factory(sock, protocols=None, extensions=None, environ=environ)``
(the request's WSGI environ, as waitress would build it), and gets ``path``, ``query_string``
and ``headers`` attributes before the manager calls its ``opened()``. No subprotocol or
extension is negotiated, and a 401 carries no ``WWW-Authenticate``: the scheme is the app's
business.
"""

from __future__ import annotations

import base64
import hashlib
import http
import json
import logging
import selectors
import socket
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from webob.headers import EnvironHeaders
from ws4py import WS_KEY
from ws4py.websocket import WebSocket

from zsup.http.hubws import HubSocket
from zsup.http.limits import Limits
from zsup.http.listen import close_quietly
from zsup.http.ws4py_adapter import WebSocketManager, prepend_unread, quiet_resets

__all__ = [
    "Authorize",
    "SelectorPoller",
    "WebSocketFactory",
    "WebSocketRoutes",
    "WebSocketUpgrader",
    "check_handshake",
    "error_response",
]

logger = logging.getLogger("zsup.http")

Authorize = Callable[[Mapping[str, str]], bool]
#: ``websocket_routes(path, query_string, headers)`` returns a factory called as
#: ``factory(sock, protocols=None, extensions=None, environ=environ)`` that returns a ws4py
#: ``WebSocket`` (a ``WebSocket`` subclass is such a factory), or None when nothing lives there.
WebSocketFactory = Callable[..., WebSocket]
WebSocketRoutes = Callable[[str, str, Mapping[str, str]], "WebSocketFactory | None"]


class SelectorPoller:
    """ws4py's poller interface over ``selectors``.

    ws4py's EPollPoller yields lazily (so its poll runs outside the manager's lock) and breaks
    when it is released under a running loop; this one returns lists, tolerates closed and
    reused descriptors, and is released only by the manager thread itself (the manager in
    zsup.http.channel sees to that).
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def register(self, fd: int) -> None:
        try:
            self._selector.register(fd, selectors.EVENT_READ)
        except KeyError:
            # The number belonged to a socket that was closed without being unregistered.
            self._selector.unregister(fd)
            self._selector.register(fd, selectors.EVENT_READ)

    def unregister(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def poll(self, timeout: float) -> list[int]:
        try:
            return [key.fd for key, _ in self._selector.select(timeout)]
        except (OSError, ValueError):
            return []

    def release(self) -> None:
        self._selector.close()


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def check_handshake(environ: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """RFC 6455 section 4.2.1: return (key, None) for a good opening handshake, else (None, why)."""
    if environ.get("REQUEST_METHOD") != "GET":
        return None, "a websocket upgrade must be a GET request"
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return None, "a websocket upgrade needs HTTP/1.1"
    if "upgrade" not in _tokens(environ.get("HTTP_CONNECTION", "")):
        return None, "a websocket upgrade needs 'Connection: Upgrade'"
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if version != "13":
        return None, f"unsupported Sec-WebSocket-Version {version!r} (this server speaks 13)"
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except ValueError:
        return None, "Sec-WebSocket-Key must be 16 bytes in base64"
    return key, None


def _accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_KEY).digest()).decode("ascii")


_ERROR_CODES = {400: "bad_request", 401: "forbidden", 404: "not_found", 503: "unavailable"}


def error_response(status: int, message: str, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """A refusal in the gateway's JSON error shape, closing the connection."""
    body = json.dumps({"error": {"code": _ERROR_CODES.get(status, "internal"),
                                 "message": message}}).encode() + b"\n"
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
             "Content-Type: application/json",
             f"Content-Length: {len(body)}",
             "Connection: close",
             *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class WebSocketUpgrader:
    """Turns an upgrade request on a detached socket into a managed ws4py websocket."""

    def __init__(self, routes: WebSocketRoutes | None, authorize: Authorize,
                 manager: WebSocketManager, io_timeout: float, hub=None) -> None:
        self.routes = routes
        self.hub = hub  # zsup.http.hub.Hub: given to websockets as environ["zsup.hub"]
        self.authorize = authorize
        self.manager = manager
        self.io_timeout = io_timeout
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # endpoint -> upgrades past the cap check
        self._hubbed: dict[str, int] = {}  # endpoint -> open websockets the hub serves
        manager.elsewhere = lambda: sum(self._hubbed.values())

    def task(self, sock: socket.socket, environ: dict, leftover: bytes,
             limits: Limits | None = None) -> "UpgradeTask":
        """The upgrade as a task for waitress's worker pool (queued by the loop thread)."""
        return UpgradeTask(self, sock, environ, leftover, limits or Limits())

    def _reserve(self, limits: Limits) -> bool:
        """Take one of the endpoint's websocket places (False: all taken)."""
        name = limits.name
        with self._lock:
            open_here = sum(1 for ws in list(self.manager.websockets.values())
                            if getattr(ws, "zsup_endpoint", None) == name)
            open_here += self._hubbed.get(name, 0)
            if open_here + self._pending.get(name, 0) >= limits.max_websockets:
                return False
            self._pending[name] = self._pending.get(name, 0) + 1
            return True

    def _unreserve(self, limits: Limits) -> None:
        with self._lock:
            self._pending[limits.name] -= 1

    def _served(self, ws: HubSocket, name: str) -> None:
        """`ws` goes to the hub: its reserved place counts as open until it is released."""
        with self._lock:
            self._pending[name] -= 1
            self._hubbed[name] = self._hubbed.get(name, 0) + 1

        def gone() -> None:
            with self._lock:
                self._hubbed[name] -= 1
        ws.on_gone = gone

    def upgrade(self, sock: socket.socket, environ: dict, leftover: bytes,
                limits: Limits | None = None) -> None:
        """Runs on a waitress worker thread: user hooks never stall the loop thread."""
        limits = limits or Limits()
        answered = reserved = False
        try:
            # ws4py expects blocking sockets; a timeout bounds a send to a client that
            # stopped reading.
            sock.settimeout(self.io_timeout)
            headers = EnvironHeaders(environ)
            key, problem = check_handshake(environ)
            if problem:
                self._refuse(sock, 400, problem, [("Sec-WebSocket-Version", "13")])
                return
            if not self.authorize(headers):
                self._refuse(sock, 401, "not authorized")
                return
            path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
            factory = self.routes(path, query, headers) if self.routes else None
            if factory is None:
                self._refuse(sock, 404, f"no websocket at {path}")
                return
            if not self.manager.accepting:
                self._refuse(sock, 503, "server shutting down")
                return
            reserved = self._reserve(limits)
            if not reserved:
                logger.info("websocket %s refused: %d websockets open on endpoint %s "
                            "(max_websockets)", path, limits.max_websockets, limits.name)
                self._refuse(sock, 503, f"too many open websockets ({limits.max_websockets}); "
                                        f"try again later")
                return
            if self.hub is not None:
                environ["zsup.hub"] = self.hub
            ws = factory(sock, protocols=None, extensions=None, environ=environ)
            # Visible to opened(), which manager.add() calls.
            ws.path, ws.query_string, ws.headers = path, query, headers
            ws.zsup_endpoint = limits.name
            quiet_resets(ws)
            answered = True
            sock.sendall(("HTTP/1.1 101 Switching Protocols\r\n"
                          "Upgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {_accept_value(key)}\r\n"
                          "\r\n").encode("ascii"))
            prepend_unread(ws, leftover)  # frames that came in the packet of the request head
            if isinstance(ws, HubSocket) and ws.client is not None:
                self._served(ws, limits.name)
                reserved = False
                ws.serve()
            else:
                self.manager.add(ws)
        except Exception:
            logger.exception("websocket upgrade of %s failed", environ.get("PATH_INFO"))
            if not answered:
                try:
                    self._refuse(sock, 500, "websocket upgrade failed")
                except Exception:
                    pass
            close_quietly(sock)
        finally:
            if reserved:
                self._unreserve(limits)

    @staticmethod
    def _refuse(sock: socket.socket, status: int, message: str,
                extra: Sequence[tuple[str, str]] = ()) -> None:
        try:
            sock.sendall(error_response(status, message, extra))
            # Read what the client still sends until it closes (briefly): closing with
            # unread data would reset the connection and could destroy the answer in flight.
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(0.5)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            close_quietly(sock)


class UpgradeTask:
    """A task for waitress's dispatcher (it needs ``service()`` and ``cancel()``)."""

    def __init__(self, upgrader: WebSocketUpgrader, sock: socket.socket, environ: dict,
                 leftover: bytes, limits: Limits) -> None:
        self.upgrader, self.sock, self.environ, self.leftover = upgrader, sock, environ, leftover
        self.limits = limits

    def service(self) -> None:
        self.upgrader.upgrade(self.sock, self.environ, self.leftover, self.limits)

    def cancel(self) -> None:
        close_quietly(self.sock)
