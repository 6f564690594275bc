"""waitress's HTTP channel, as zsup needs it: a non-blocking TLS handshake, a deadline for a
request head, the per-client connection count, and the hand-over of a socket to the stream
hub or a websocket. It reaches into waitress's internals (zsup/http/adapter.py has the
servers that make these channels); tests/test_http_adapter.py pins every assumption below.

waitress (3.0.x), assumed:

- ``HTTPChannel.received`` is the loop that parses requests and queues them
  (``Channel.received`` repeats it to hold back an upgrade request: the request must be caught
  after it is parsed and before it is queued); it uses ``requests_lock``, ``request``,
  ``requests``, ``parser_class``, ``sent_continue``, ``send_continue()``, ``will_close``,
  ``close_when_flushed``, ``server.add_task()``.
- a channel's output sits in ``outbufs`` (``OverflowableBuffer``, ``.buf``, ``.overflow``)
  guarded by ``outbuf_lock``, with ``current_outbuf_count`` and ``total_outbufs_len``;
- ``WSGITask(channel, request).get_environment()`` builds a request's WSGI environ;
- ``environ["waitress.client_disconnected"]`` is a bound method of the channel;
- a channel leaves the per-client count in ``del_channel``, which ``close()`` calls; the
  request-head clock reads the parser's ``headers_finished``, ``completed`` and ``error``.

Thread rules: a ``Channel`` runs in waitress's loop thread; ``hand_over`` may be called from
a worker thread (it waits for the loop to do it).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any, Callable

from waitress.channel import HTTPChannel
from waitress.task import WSGITask

__all__ = ["Channel", "stream_hub", "waitress_channel", "wants_websocket"]

logger = logging.getLogger("zsup.http")


def waitress_channel(environ: dict):
    """The zsup channel serving the request of ``environ`` (None when not served by one)."""
    channel = getattr(environ.get("waitress.client_disconnected"), "__self__", None)
    return channel if hasattr(channel, "reset_drained_outbuf") else None


def stream_hub(environ: dict):
    """The stream hub of the server that serves the request of ``environ`` (None: none)."""
    channel = waitress_channel(environ)
    return getattr(channel.server, "hub", None) if channel is not None else None


def wants_websocket(request) -> bool:
    """Whether a parsed waitress request asks for ``Upgrade: websocket``."""
    upgrade = request.headers.get("UPGRADE", "")
    return any(token.strip().lower() == "websocket" for token in upgrade.split(","))


class Channel(HTTPChannel):
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

    def hand_over(self, take: Callable[[Any], None], timeout: float = 30.0) -> bool:
        """From the worker serving a streaming response, after its head was written.

        Once everything the channel queued is sent, the loop thread takes the socket out of
        waitress (as for a websocket) and calls ``take(sock)``; this waits for that. False when
        the connection closed first, or the loop did not get to it within ``timeout``: then
        nothing was taken. Whatever the worker writes afterwards is discarded (waitress sees a
        closed connection: its last chunk of a chunked answer is the taker's to send).
        """
        done = threading.Event()
        with self._handover_lock:
            if self._detached or not self.connected:
                return False
            self._handover = (take, done)
        self.server.trigger.pull_trigger()
        done.wait(timeout)
        with self._handover_lock:
            self._handover = None
            return self._handed_over

    _handover: tuple[Callable[[Any], None], threading.Event] | None = None
    _handed_over = False
    _handover_lock = threading.RLock()  # shared by every channel: held for an instant

    def _handover_ready(self) -> bool:
        return (self._handover is not None and not self._detached
                and not self.total_outbufs_len)

    def _do_handover(self) -> None:
        """In the loop thread: the socket leaves waitress for the taker."""
        with self._handover_lock:
            pending, self._handover = self._handover, None
            if pending is None:
                return
            take, done = pending
            sock = self.socket
            self.del_channel()
            self._detached = True
            self._handed_over = True
            self.socket = None  # a late close() from the loop must not close the stream
            self.connected = False
        try:
            take(sock)
        except Exception:
            logger.exception("handing a stream over failed")
            close_socket(sock)
        finally:
            done.set()

    def _cancel_handover(self) -> None:
        with self._handover_lock:
            pending, self._handover = self._handover, None
        if pending is not None:
            pending[1].set()

    _tls = False
    _tls_handshaking = False
    _tls_want_write = False
    _tls_deadline = 0.0
    _upgrade: tuple[Any, bytes] | None = None  # (request, bytes after its head)
    _detached = False
    #: When the request head being read must be complete (monotonic); None between requests
    #: (idle keep-alive connections are waitress's ``channel_timeout``'s business).
    _head_deadline: float | None = None
    _client: str | None = None  # the host counted in server.client_cap, until released

    def __init__(self, server, sock, addr, adj, map=None, client: str | None = None):
        if isinstance(sock, ssl.SSLSocket):
            self._tls = self._tls_handshaking = True
            self._tls_deadline = time.monotonic() + server.tls_handshake_timeout
        self._client = client
        try:
            super().__init__(server, sock, addr, adj, map)
        except BaseException:
            self._release_client(server)
            raise
        if not self._tls:
            self._start_head_clock()

    def _start_head_clock(self) -> None:
        timeout = self.server.limits.header_timeout
        self._head_deadline = time.monotonic() + timeout if timeout else None

    def _head_expired(self) -> bool:
        """In readable(): a request head that took too long closes the connection."""
        if (self._head_deadline is None or self.requests or self.total_outbufs_len
                or time.monotonic() <= self._head_deadline):
            return False
        logger.debug("closing %s: no complete request head within %gs", self.addr,
                     self.server.limits.header_timeout)
        self._head_deadline = None
        self.will_close = True  # writable() now says yes; handle_write() closes
        return True

    def _release_client(self, server) -> None:
        client, self._client = self._client, None
        if client is not None:
            server.client_cap.release(client)

    def del_channel(self, map=None):
        self._release_client(self.server)
        super().del_channel(map)
        self._cancel_handover()  # closed before the hand-over: its worker stops waiting

    # -- readiness: waitress's rules, unless a handshake or an upgrade is under way

    def readable(self):
        if self._detached or self._upgrade is not None:
            return False
        if self._head_expired():
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
        return super().writable() or self._upgrade_ready() or self._handover_ready()

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
            if self._handover_ready():
                self._do_handover()

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
        self._start_head_clock()
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
                self._time_head(self.request)
                if (self.request.expect_continue and self.request.headers_finished
                        and not self.requests and not self.sent_continue):
                    self.send_continue()
                if self.request.completed:
                    self.sent_continue = False
                    request, self.request = self.request, None
                    if self._tls:
                        request.url_scheme = "https"
                    if not request.empty:
                        if request.error is None and wants_websocket(request):
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

    def _time_head(self, request) -> None:
        """Start the head clock at a request's first byte; stop it once its head is read."""
        if request.headers_finished or request.completed or request.error is not None:
            self._head_deadline = None
        elif self._head_deadline is None:
            self._start_head_clock()

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
        self.server.add_task(self.server.upgrader.task(sock, environ, leftover,
                                                       self.server.limits))


def close_socket(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass
