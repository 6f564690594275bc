"""Where the gateway listens: bind addresses, endpoints, TLS contexts and listening sockets.

Everything here happens before waitress sees a socket: a config is checked (``parse_bind``,
``Endpoint``) before anything is bound, and ``listen`` binds one endpoint with its own
backlog (waitress would use one backlog for every socket). Only the standard library is used
(and the defaults of zsup.http.limits).

TLS: the listening socket is wrapped by the context ``tls_context`` makes, without
handshaking, so every accepted connection is an unhandshaken ``TLSSocket``; the channel
(zsup.http.channel) drives the handshake without blocking.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import ssl
import stat
import threading
from dataclasses import dataclass

from zsup.http.limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CLIENT_CONNECTIONS,
    DEFAULT_MAX_WEBSOCKETS,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_BIND",
    "BindAddress",
    "Endpoint",
    "TLSSocket",
    "close_quietly",
    "listen",
    "parse_bind",
    "tls_context",
]

DEFAULT_BIND = "127.0.0.1:5000"
DEFAULT_BACKLOG = 128

#: sun_path holds 108 bytes on Linux, the last one a NUL.
_UNIX_PATH_MAX = 107
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]+")

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
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_client_connections: int = DEFAULT_MAX_CLIENT_CONNECTIONS
    max_websockets: int = DEFAULT_MAX_WEBSOCKETS
    cacert: str | None = None  # set: client certificates signed by it are required (mutual TLS)

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
        for key in ("max_client_connections", "max_websockets"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"endpoint {self.name!r}: {key} must be a positive integer, "
                                 f"not {value!r}")
        value = self.header_timeout
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"endpoint {self.name!r}: header_timeout must be a number of "
                             f"seconds > 0, not {value!r}")

    @property
    def address(self) -> BindAddress:
        return parse_bind(self.bind)

    @property
    def tls(self) -> bool:
        return bool(self.certfile)


# --------------------------------------------------------------------------------------------
# TLS


class TLSSocket(ssl.SSLSocket):
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
            with TLSSocket._io_lock_guard:
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


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = TLSSocket
    try:
        context.load_cert_chain(endpoint.certfile, endpoint.keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ValueError(f"endpoint {endpoint.name!r}: cannot load TLS certificate "
                         f"{endpoint.certfile!r}: {reason}") from None
    if endpoint.cacert:
        try:
            context.load_verify_locations(endpoint.cacert)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"endpoint {endpoint.name!r}: cannot load CA certificate {endpoint.cacert!r}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
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


def listen(endpoint: Endpoint) -> tuple[socket.socket, BindAddress, tuple[int, int] | None]:
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


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
