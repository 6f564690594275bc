"""The gateway's HTTP server: one WSGI app on several endpoints, websockets on the same ports.

waitress serves HTTP well but has no TLS and never hands a socket over for websockets; ws4py
speaks websockets but has no HTTP server worth using. This module joins them, and knows
nothing about what the application does:

- Every endpoint (TCP, IPv6, unix socket, with or without TLS) is a listening socket bound
  here and served by waitress's own server classes, all in ONE socket map with ONE task
  dispatcher and ONE loop thread, as ``waitress.create_server(sockets=[...])`` would build
  them. We build them ourselves with the same steps because waitress refuses to mix TCP and
  unix sockets in one ``create_server`` call (``Adjustments.check_sockets``) and listens with
  one backlog for every socket, while each endpoint here has its own.
- TLS: the listening socket is wrapped by an ``ssl.SSLContext`` without handshaking, so every
  accepted connection is an unhandshaken ``SSLSocket``. The channel drives the handshake
  without blocking, from waitress's loop (``do_handshake()`` on a non-blocking socket,
  retried whenever the socket is readable or writable), with a deadline: a client that
  stalls its handshake holds one connection slot, never the loop that serves everybody.
- Websockets: the channel class spots a complete ``Upgrade: websocket`` request head before
  waitress queues it, takes the socket out of waitress's loop (``del_channel()``, in the
  loop's own thread), and hands it to a worker thread that checks the handshake, asks the
  ``authorize`` hook and the ``websocket_routes`` callable, answers ``101`` (or 400, 401,
  404) itself, and gives the socket to a ws4py ``WebSocketManager``. Plain requests on the
  same connection before the upgrade are answered first, in order. The websocket is made
  with ``factory(sock, protocols=None, extensions=None, environ=environ)`` (the request's
  WSGI environ, as waitress would build it), and gets ``path``, ``query_string`` and
  ``headers`` attributes before the manager calls its ``opened()``.

Limits that come with ws4py's model, on purpose: the manager thread runs every websocket's
``received_message()``, so a handler that sends to a client that stopped reading stalls the
others for up to ``websocket_timeout`` (push from other threads instead); on TLS, a read
that finds half a TLS record waits for the rest as long. No subprotocol or extension is
negotiated, and a 401 carries no ``WWW-Authenticate``: the scheme is the app's business.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http
import ipaddress
import json
import logging
import os
import re
import selectors
import socket
import ssl
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer, UnixWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask
from webob.headers import EnvironHeaders
from ws4py import WS_KEY
from ws4py.manager import WebSocketManager
from ws4py.websocket import WebSocket

__all__ = [
    "DEFAULT_BIND",
    "BindAddress",
    "Endpoint",
    "HTTPServer",
    "parse_bind",
]

logger = logging.getLogger("zsup.http")

DEFAULT_BIND = "127.0.0.1:5000"
DEFAULT_BACKLOG = 128

#: sun_path holds 108 bytes on Linux, the last one a NUL.
_UNIX_PATH_MAX = 107
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]+")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
Authorize = Callable[[Mapping[str, str]], bool]
#: ``websocket_routes(path, query_string, headers)`` returns a factory called as
#: ``factory(sock, protocols=None, extensions=None, environ=environ)`` that returns a ws4py
#: ``WebSocket`` (a ``WebSocket`` subclass is such a factory), or None when nothing lives there.
WebSocketFactory = Callable[..., WebSocket]
WebSocketRoutes = Callable[[str, str, Mapping[str, str]], "WebSocketFactory | None"]


# --------------------------------------------------------------------------------------------
# Addresses and endpoints


@dataclass(frozen=True)
class BindAddress:
    """Where an endpoint listens: ``host`` and ``port``, or a unix socket ``path``."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        if self.host is not None and ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_bind(bind: str = DEFAULT_BIND) -> BindAddress:
    """Read a bind string: ``HOST:PORT``, ``[IPv6]:PORT``, ``PORT`` (on 127.0.0.1), ``unix:PATH``.

    Only the syntax is checked here (no name lookup): a config file is refused before anything
    is bound. A bad value raises ValueError with a one-line message.
    """
    if not isinstance(bind, str):
        raise ValueError(f"bind address must be a string, not {type(bind).__name__}")
    text = bind.strip()
    usage = "expected HOST:PORT, [IPv6]:PORT, PORT or unix:PATH"
    if not text:
        raise ValueError(f"empty bind address: {usage}")
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ValueError(f"bad bind address {bind!r}: no socket path after 'unix:'")
        if "\0" in path:
            raise ValueError(f"bad bind address {bind!r}: NUL in socket path")
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise ValueError(f"bad bind address {bind!r}: socket path longer than "
                             f"{_UNIX_PATH_MAX} bytes")
        return BindAddress(path=path)
    if _DIGITS.fullmatch(text):
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        match = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", text)
        if not match:
            raise ValueError(f"bad bind address {bind!r}: expected [IPv6]:PORT")
        host, port_text = match.group(1), match.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad bind address {bind!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad bind address {bind!r}: {usage}")
        if ":" in host:
            raise ValueError(f"bad bind address {bind!r}: put IPv6 addresses in brackets, "
                             f"as [::1]:PORT")
        if not host:
            raise ValueError(f"bad bind address {bind!r}: missing host before ':'")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"bad bind address {bind!r}: {host!r} is not a host name or address")
    if not _DIGITS.fullmatch(port_text):
        raise ValueError(f"bad bind address {bind!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"bad bind address {bind!r}: port {port} is out of range (0-65535)")
    return BindAddress(host=host, port=port)


@dataclass
class Endpoint:
    """One place to listen, as an ``[endpoint:NAME]`` section describes it.

    Values are checked when the endpoint is made, so a bad config fails before binding.
    """

    name: str
    bind: str = DEFAULT_BIND
    backlog: int = DEFAULT_BACKLOG
    certfile: str | None = None
    keyfile: str | None = None

    def __post_init__(self) -> None:
        try:
            parse_bind(self.bind)
        except ValueError as exc:
            raise ValueError(f"endpoint {self.name!r}: {exc}") from None
        if isinstance(self.backlog, bool) or not isinstance(self.backlog, int) or self.backlog < 1:
            raise ValueError(f"endpoint {self.name!r}: backlog must be a positive integer, "
                             f"not {self.backlog!r}")
        if self.keyfile and not self.certfile:
            raise ValueError(f"endpoint {self.name!r}: keyfile given without certfile")

    @property
    def address(self) -> BindAddress:
        return parse_bind(self.bind)

    @property
    def tls(self) -> bool:
        return bool(self.certfile)


# --------------------------------------------------------------------------------------------
# TLS


class _TLSSocket(ssl.SSLSocket):
    """An SSLSocket whose SSL operations never run in two threads at once.

    OpenSSL does not allow one SSL object to be used by two threads concurrently, and ws4py
    does exactly that with a websocket: the manager thread reads while application threads
    send. Plain sockets do not care; TLS ones get this lock. waitress's own use of a channel
    is already one thread at a time, so the lock is uncontended there.
    """

    _io_lock: threading.RLock | None = None
    _io_lock_guard = threading.Lock()

    def _lock(self) -> threading.RLock:
        lock = self._io_lock
        if lock is None:
            with _TLSSocket._io_lock_guard:
                if self._io_lock is None:
                    self._io_lock = threading.RLock()
                lock = self._io_lock
        return lock

    def read(self, len=1024, buffer=None):  # noqa: A002 - SSLSocket's own signature
        with self._lock():
            return super().read(len, buffer)

    def write(self, data):
        with self._lock():
            return super().write(data)

    def send(self, data, flags=0):
        with self._lock():
            return super().send(data, flags)

    def pending(self):
        with self._lock():
            return super().pending()

    def do_handshake(self, block=False):
        with self._lock():
            return super().do_handshake(block)


def _tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _TLSSocket
    try:
        context.load_cert_chain(endpoint.certfile, endpoint.keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ValueError(f"endpoint {endpoint.name!r}: cannot load TLS certificate "
                         f"{endpoint.certfile!r}: {reason}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


# --------------------------------------------------------------------------------------------
# Listening sockets


def _clear_stale_unix_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse a live one or a file that is no socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")


def _listen(endpoint: Endpoint) -> tuple[socket.socket, BindAddress, tuple[int, int] | None]:
    """Bind and listen for one endpoint: (socket, actual address, unix file identity)."""
    address = endpoint.address
    sock: socket.socket | None = None
    try:
        if address.is_unix:
            path = address.path
            _clear_stale_unix_socket(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # Linux creates the socket file with the socket's own mode (minus the umask): set
            # it first, so nobody else can connect in the moment between bind() and chmod().
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(path)
            os.chmod(path, 0o600)
            st = os.stat(path)
            identity = (st.st_dev, st.st_ino)
            actual = BindAddress(path=path)
        else:
            infos = socket.getaddrinfo(address.host, address.port, socket.AF_UNSPEC,
                                       socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
            family, socktype, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, socktype, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            bound = sock.getsockname()
            identity = None
            actual = BindAddress(host=bound[0], port=bound[1])
        sock.listen(endpoint.backlog)
    except OSError as exc:
        if sock is not None:
            sock.close()
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"endpoint {endpoint.name!r} cannot listen on "
                                 f"{address}: {reason}") from None
    return sock, actual, identity


# --------------------------------------------------------------------------------------------
# The websocket handshake and manager


def _wants_websocket(request) -> bool:
    upgrade = request.headers.get("UPGRADE", "")
    return any(token.strip().lower() == "websocket" for token in upgrade.split(","))


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def _check_handshake(environ: Mapping[str, Any]) -> tuple[str | None, str | None]:
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


def _error_response(status: int, message: str, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """A refusal in the gateway's JSON error shape, closing the connection."""
    body = json.dumps({"error": {"code": _ERROR_CODES.get(status, "internal"),
                                 "message": message}}).encode() + b"\n"
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
             "Content-Type: application/json",
             f"Content-Length: {len(body)}",
             "Connection: close",
             *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _finish(ws: WebSocket) -> None:
    """Terminate a websocket once: closed() is called and the socket closed."""
    if ws.stream is None:  # terminate() already ran
        return
    try:
        ws.terminate()
    except Exception:
        logger.exception("error while closing websocket")


class _SelectorPoller:
    """ws4py's poller interface over ``selectors``.

    ws4py's EPollPoller yields lazily (so its poll runs outside the manager's lock) and breaks
    when it is released under a running loop; this one returns lists, tolerates closed and
    reused descriptors, and is released only by the manager thread itself.
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


class _WebSocketManager(WebSocketManager):
    """ws4py's manager, with a run loop that does not lose bytes and stops cleanly.

    Three things differ from ws4py's loop: bytes already read off a socket (the part of the
    first packet after the HTTP head, or data decrypted by TLS beyond what ``once()`` took)
    are processed without waiting for the socket to become readable again, which it may never
    do; a websocket whose ``once()`` fails is always terminated (ws4py skips that when both
    sides have sent a close frame, leaking the socket); and ``stop()`` closes the remaining
    websockets from the manager's own thread, so no socket is shared with a running loop.
    """

    #: once() calls in a row for one websocket before serving the others.
    burst = 64

    def __init__(self, poll_timeout: float = 0.1) -> None:
        super().__init__(poller=_SelectorPoller())
        self.name = "zsup-websockets"
        self._poll_timeout = poll_timeout
        self._stopping = threading.Event()
        self._backlog: set[int] = set()

    @property
    def accepting(self) -> bool:
        return not self._stopping.is_set()

    def add(self, websocket: WebSocket) -> None:
        if self._stopping.is_set():
            _finish(websocket)
            return
        try:
            websocket.opened()
        except Exception:
            logger.exception("websocket opened() failed")
            _finish(websocket)
            return
        with self.lock:
            late = self._stopping.is_set()
            if not late:
                fd = websocket.sock.fileno()
                self.websockets[fd] = websocket
                self.poller.register(fd)
                if websocket.buf:
                    self._backlog.add(fd)
        if late:
            _finish(websocket)

    def stop(self) -> None:
        self._stopping.set()
        self.running = False

    def run(self) -> None:
        self.running = True
        try:
            while not self._stopping.is_set():
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
                _finish(ws)
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
            _finish(ws)
        self.poller.release()


class _WebSocketUpgrader:
    """Turns an upgrade request on a detached socket into a managed ws4py websocket."""

    def __init__(self, routes: WebSocketRoutes | None, authorize: Authorize,
                 manager: _WebSocketManager, io_timeout: float) -> None:
        self.routes = routes
        self.authorize = authorize
        self.manager = manager
        self.io_timeout = io_timeout

    def upgrade(self, sock: socket.socket, environ: dict, leftover: bytes) -> None:
        """Runs on a waitress worker thread: user hooks never stall the loop thread."""
        answered = False
        try:
            # ws4py expects blocking sockets; a timeout bounds a send to a client that
            # stopped reading.
            sock.settimeout(self.io_timeout)
            headers = EnvironHeaders(environ)
            key, problem = _check_handshake(environ)
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
            ws = factory(sock, protocols=None, extensions=None, environ=environ)
            # Visible to opened(), which manager.add() calls.
            ws.path, ws.query_string, ws.headers = path, query, headers
            answered = True
            sock.sendall(("HTTP/1.1 101 Switching Protocols\r\n"
                          "Upgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {_accept_value(key)}\r\n"
                          "\r\n").encode("ascii"))
            if leftover:
                # Frames that came in the same packet as the request head.
                ws.buf = leftover + ws.buf
            self.manager.add(ws)
        except Exception:
            logger.exception("websocket upgrade of %s failed", environ.get("PATH_INFO"))
            if not answered:
                try:
                    self._refuse(sock, 500, "websocket upgrade failed")
                except Exception:
                    pass
            _close_quietly(sock)

    @staticmethod
    def _refuse(sock: socket.socket, status: int, message: str,
                extra: Sequence[tuple[str, str]] = ()) -> None:
        try:
            sock.sendall(_error_response(status, message, extra))
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
            _close_quietly(sock)


class _UpgradeTask:
    """A task for waitress's dispatcher (it needs ``service()`` and ``cancel()``)."""

    def __init__(self, upgrader: _WebSocketUpgrader, sock: socket.socket, environ: dict,
                 leftover: bytes) -> None:
        self.upgrader, self.sock, self.environ, self.leftover = upgrader, sock, environ, leftover

    def service(self) -> None:
        self.upgrader.upgrade(self.sock, self.environ, self.leftover)

    def cancel(self) -> None:
        _close_quietly(self.sock)


# --------------------------------------------------------------------------------------------
# waitress integration


class _Channel(HTTPChannel):
    """waitress's HTTP channel, plus a non-blocking TLS handshake and websocket hand-off."""

    def reset_drained_outbuf(self) -> None:
        """Give a long-lived stream a fresh output buffer once everything was sent.

        waitress (3.x) keeps a channel's output in an OverflowableBuffer that, once a write did
        not fit in 8 KiB (a big chunk, or a client a little behind), becomes a BytesIO that only
        grows: bytes sent are skipped, never pruned, until 16 MiB went through it
        (``outbuf_high_watermark``). Harmless for one response, but every open stream would keep
        up to 16 MiB of already-sent output. ``outbuf_lock`` is the lock waitress itself takes
        to write and to flush, so the swap races with neither.
        """
        try:
            outbufs = self.outbufs
            if len(outbufs) != 1 or outbufs[0].buf is None or len(outbufs[0]):
                return  # the cheap, usual case: nothing to give back (or data still unsent)
            with self.outbuf_lock:
                old = self.outbufs[0]
                if len(self.outbufs) != 1 or old.buf is None or len(old):
                    return
                self.outbufs[0] = type(old)(old.overflow)
                self.current_outbuf_count = 0
            old.close()
        except Exception:  # another waitress version: do without
            pass

    _tls = False
    _tls_handshaking = False
    _tls_want_write = False
    _tls_deadline = 0.0
    _upgrade: tuple[Any, bytes] | None = None  # (request, bytes after its head)
    _detached = False

    def __init__(self, server, sock, addr, adj, map=None):
        if isinstance(sock, ssl.SSLSocket):
            self._tls = self._tls_handshaking = True
            self._tls_deadline = time.monotonic() + server.tls_handshake_timeout
        super().__init__(server, sock, addr, adj, map)

    # -- readiness: waitress's rules, unless a handshake or an upgrade is under way

    def readable(self):
        if self._detached or self._upgrade is not None:
            return False
        if self._tls_handshaking:
            if time.monotonic() > self._tls_deadline:
                self.will_close = True  # writable() now says yes; handle_write() closes
                return False
            return not self._tls_want_write
        return super().readable()

    def writable(self):
        if self._detached:
            return False
        if self._tls_handshaking:
            return self._tls_want_write or self.will_close
        return super().writable() or self._upgrade_ready()

    def handle_read(self):
        if self._detached:
            return
        if self._tls_handshaking:
            self._continue_tls_handshake()
        elif self._tls:
            self._read_tls()
        else:
            super().handle_read()

    def handle_write(self):
        if self._detached:
            return
        if self._tls_handshaking:
            if self.will_close:
                self.handle_close()
            else:
                self._continue_tls_handshake()
        elif self._upgrade_ready():
            self._begin_upgrade()
        else:
            super().handle_write()

    def handle_close(self):
        if not self._detached:
            super().handle_close()

    # -- TLS

    def _continue_tls_handshake(self) -> None:
        try:
            self.socket.do_handshake()
        except ssl.SSLWantReadError:
            self._tls_want_write = False
            return
        except ssl.SSLWantWriteError:
            self._tls_want_write = True
            return
        except OSError as exc:  # SSLError included: not TLS, bad version, peer went away
            logger.debug("TLS handshake with %s failed: %s", self.addr, exc)
            self.handle_close()
            return
        self._tls_handshaking = self._tls_want_write = False
        self.last_activity = time.time()
        # The request may already sit decrypted in the SSL buffer, where poll cannot see it.
        self._read_tls()

    def _read_tls(self) -> None:
        sock = self.socket
        try:
            data = sock.recv(self.adj.recv_bytes)
            if not data:
                self.handle_close()
                return
            pending = sock.pending()
            while pending:  # decrypted already: poll would not report it
                data += sock.recv(pending)
                pending = sock.pending()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # part of a TLS record: wait for the rest
        except OSError as exc:
            logger.debug("TLS read from %s failed: %s", self.addr, exc)
            self.handle_close()
            return
        self.last_activity = time.time()
        self.received(data)

    def send(self, data, do_close=True):
        if not self._tls:
            return super().send(data, do_close)
        try:
            return self.socket.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0  # waitress retries with the same bytes first, as OpenSSL requires
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError, ConnectionResetError):
            if do_close:
                self.handle_close()
            return 0

    # -- requests

    def received(self, data):
        """waitress's ``HTTPChannel.received``, holding back a websocket upgrade request.

        This repeats waitress 3's loop, because the request must be caught after it is
        parsed and before it is queued for the WSGI app; everything after its head belongs to
        the websocket.
        """
        if not data:
            return False
        with self.requests_lock:
            if self.will_close or self.close_when_flushed or self._upgrade or self._detached:
                return False
            while data:
                if self.request is None:
                    self.request = self.parser_class(self.adj)
                n = self.request.received(data)
                if (self.request.expect_continue and self.request.headers_finished
                        and not self.requests and not self.sent_continue):
                    self.send_continue()
                if self.request.completed:
                    self.sent_continue = False
                    request, self.request = self.request, None
                    if self._tls:
                        request.url_scheme = "https"
                    if not request.empty:
                        if request.error is None and _wants_websocket(request):
                            self._upgrade = (request, bytes(data[n:]))
                            break
                        self.requests.append(request)
                        if len(self.requests) == 1:
                            self.server.add_task(self)
                if n >= len(data):
                    break
                data = data[n:]
        if self._upgrade_ready():
            self._begin_upgrade()
        return True

    def _upgrade_ready(self) -> bool:
        # Earlier requests on this connection are answered and flushed first.
        return (self._upgrade is not None and not self._detached and not self.requests
                and not self.total_outbufs_len and not self.will_close
                and not self.close_when_flushed)

    def _begin_upgrade(self) -> None:
        """In the loop thread: take the socket out of waitress and queue the handshake."""
        request, leftover = self._upgrade
        self._upgrade = None
        task = WSGITask(self, request)
        environ = dict(task.get_environment())
        environ.pop("waitress.client_disconnected", None)  # would describe the dead channel
        sock = self.socket
        self.del_channel()
        self._detached = True
        self.socket = None  # a late close() from the loop must not close the websocket
        self.connected = False
        with self.outbuf_lock:
            for outbuf in self.outbufs:
                try:
                    outbuf.close()
                except Exception:
                    pass
        request.close()
        self.server.add_task(_UpgradeTask(self.server.upgrader, sock, environ, leftover))


class _ServerMixin:
    """Settings shared by the TCP and unix servers; the socket comes bound and listening."""

    channel_class = _Channel

    def __init__(self, *args, upgrader: _WebSocketUpgrader, tls_handshake_timeout: float, **kw):
        self.upgrader = upgrader
        self.tls_handshake_timeout = tls_handshake_timeout
        super().__init__(*args, **kw)

    def accept_connections(self):
        # waitress would listen() again with one backlog for every socket.
        self.accepting = True


class _TcpServer(_ServerMixin, TcpWSGIServer):
    pass


class _UnixServer(_ServerMixin, UnixWSGIServer):
    pass


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
        self._servers: list[_ServerMixin] = []
        self._map: dict = {}
        self._dispatcher: ThreadedTaskDispatcher | None = None
        self._waitress: MultiSocketServer | None = None
        self._manager: _WebSocketManager | None = None
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

    def start(self) -> None:
        with self._state_lock:
            if self._state != "new":
                raise RuntimeError(f"HTTPServer cannot start: it is {self._state}")
            self._state = "starting"
        try:
            self._start()
        except BaseException:
            self._teardown(timeout=5.0)
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
        if not was_new:
            self._teardown(timeout)
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
                sock, actual, identity = _listen(endpoint)
                bound.append((endpoint, sock))
                self._addresses.append(actual)
                if identity is not None:
                    self._unix_files.append((actual.path, identity))
            for index, (endpoint, sock) in enumerate(bound):
                if endpoint.tls:
                    context = _tls_context(endpoint)
                    bound[index] = (endpoint, context.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False))
        except BaseException:
            for _, sock in bound:
                _close_quietly(sock)
            raise

        options = {"ident": "zsup", "asyncore_use_poll": True, **self.adjustments}
        adj = Adjustments(threads=self.threads, **options)
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(self.threads)
        self._manager = _WebSocketManager()
        upgrader = _WebSocketUpgrader(self.websocket_routes, self.authorize, self._manager,
                                      self.websocket_timeout)
        effective = []
        for index, (endpoint, sock) in enumerate(bound):
            cls = _UnixServer if sock.family == socket.AF_UNIX else _TcpServer
            try:
                server = cls(self.app, map=self._map, _sock=sock, dispatcher=self._dispatcher,
                             adj=adj, bind_socket=False,
                             sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
                             upgrader=upgrader,
                             tls_handshake_timeout=self.tls_handshake_timeout)
            except BaseException:
                for _, later in bound[index:]:
                    _close_quietly(later)
                raise
            self._servers.append(server)
            effective.append((server.effective_host, server.effective_port))
        self._waitress = MultiSocketServer(self._map, adj, effective, self._dispatcher,
                                           self._servers[0].log_info)
        self._manager.start()
        self._loop_thread = threading.Thread(target=self._waitress.run, name="zsup-http-loop",
                                             daemon=True)
        self._loop_thread.start()
        for endpoint, address in zip(self.endpoints, self._addresses):
            logger.info("endpoint %s listening on %s%s", endpoint.name, address,
                        " (TLS)" if endpoint.tls else "")

    def _in_loop(self, fn: Callable[[], None], timeout: float) -> None:
        """Run fn in waitress's loop thread (the only thread that may touch its map)."""
        thread = self._loop_thread
        if thread is None or not thread.is_alive() or not self._servers:
            fn()
            return
        done = threading.Event()

        def thunk() -> None:
            try:
                fn()
            finally:
                done.set()

        self._servers[0].trigger.pull_trigger(thunk)
        if not done.wait(timeout):
            logger.warning("HTTP loop did not run a shutdown step within %ss", timeout)

    def _teardown(self, timeout: float) -> None:
        servers = list(self._servers)

        def stop_accepting() -> None:
            for server in servers:
                server.accepting = False

        def close_everything() -> None:
            for obj in list(self._map.values()):
                try:
                    if isinstance(obj, HTTPChannel):
                        obj.handle_close()
                    else:
                        obj.close()
                except Exception:
                    logger.exception("error while closing %r", obj)
            self._map.clear()  # the loop ends when its map is empty

        if servers:
            self._in_loop(stop_accepting, timeout)
        if self._dispatcher is not None:
            # Running requests (and upgrades) finish while the loop still flushes their
            # answers; queued ones are cancelled. No worker may pull a closed trigger later.
            self._dispatcher.shutdown(cancel_pending=True, timeout=timeout)
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
        if self._manager is not None:
            self._manager.stop()
            if self._manager.ident is not None:
                self._manager.join(timeout)
                if self._manager.is_alive():
                    logger.warning("websocket manager still running after %ss", timeout)
            else:
                self._manager.run()  # never started: closes what it holds, releases the poller
        for path, identity in self._unix_files:
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == identity:  # still ours, not a newer server's
                    os.unlink(path)
            except OSError:
                pass
        self._unix_files = []
