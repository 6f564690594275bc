"""Websockets served by the stream hub (zsup.http.hub): no thread per websocket, TLS or not.

After the ``101`` (zsup.http.wshandoff), a ``HubSocket``'s socket belongs to the hub thread,
which both reads and writes it, non-blocking: readable, it reads what came (over TLS until
the SSL object wants more, ``SSLWantReadError``) and feeds ws4py's frame parser
(``WebSocket.process``); pings are answered and closes handled there too. So one SSL object
is only ever touched by one thread. What the client sends (``received_message``) may call the
bus: it runs on the hub's small task pool (``Hub.tasks``), in order per websocket, at most
``max_inbox`` messages waiting (more: the websocket is closed, 1008). Frames to the client
(``send``, and whatever the websocket's sources push) go into its bounded queue in the hub;
one that falls ``max_buffer`` bytes behind is closed (1008, "too slow").

Closing: a close frame is queued like any frame; the socket is closed once it is written and
the client answered (or after the hub's ``drop_grace`` seconds). ``closed()`` runs once,
whoever ends it (the client, the server, a reset: one debug line, ``connection_lost``).

Thread rules: the socket and ws4py's stream are the hub thread's (before ``serve``, the
upgrading worker's); ``send`` and ``close`` may be called from any thread.
"""

from __future__ import annotations

import logging
import ssl
import struct
from typing import Callable

from ws4py.messaging import BinaryMessage, TextMessage
from ws4py.websocket import WebSocket

from zsup.http.sources import Client, Inbox
from zsup.http.ws4py_adapter import connection_lost

__all__ = ["DROPPED_FRAME", "HubSocket", "ws_frame"]

log = logging.getLogger("zsup.http.websockets")

_TOO_SLOW = struct.pack("!H", 1008) + b"too slow: dropped"
DROPPED_FRAME = bytes((0x88, len(_TOO_SLOW))) + _TOO_SLOW
_AWAY = struct.pack("!H", 1001) + b"server shutting down"
_READS = 64  # recv calls per readable event before serving the others


def ws_frame(payload: bytes, binary: bool = False) -> bytes:
    """One unmasked, final server frame (RFC 6455 section 5.2)."""
    first = 0x82 if binary else 0x81
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def _none(_event) -> bytes:
    return b""


class HubSocket(WebSocket):
    """A ws4py websocket whose socket the hub serves (``environ["zsup.hub"]``).

    Subclasses implement ``opened()`` and ``received_message()`` as for ws4py, and may give
    the hub ``client`` to a source (``Hub.line_source(...).join``, ``Hub.event_source``).
    ``released()`` runs once when the websocket is gone, from any thread.
    """

    max_inbox = 256
    #: Why the server closes it when its source ends (``Hub.end``).
    end_reason = ""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None,
                 *, kind: str = "ws", fmt_event: Callable = _none,
                 fmt_line: Callable | None = None, beat: bytes = b"",
                 heartbeat: float | None = None):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq)
        self.hub = (environ or {}).get("zsup.hub")
        self.client: Client | None = None
        self.gone = False
        #: Runs once after released() (the upgrader's count of open websockets).
        self.on_gone: Callable[[], None] | None = None
        if self.hub is None or sock is None:
            return
        self.client = Client(sock, kind=kind, chunked=False, fmt_event=fmt_event,
                             fmt_line=fmt_line, final=DROPPED_FRAME, beat=beat,
                             heartbeat=heartbeat, release=self._release, on_end=self._source_ended,
                             on_close=self._hub_closed, on_read=self._hub_read)
        self.client.bye = bytes((0x88, len(_AWAY))) + _AWAY
        self._inbox = Inbox(self.hub.tasks, self.max_inbox)
        self._handle = self.received_message
        self.received_message = self._queue_message  # (ws4py's parser calls it: the hub thread)

    # -- any thread

    def serve(self) -> None:
        """The upgrade is answered: open it and hand the socket to the hub."""
        try:
            self.opened()
        except Exception:
            log.exception("websocket opened() failed")
            self.close(1011, "internal error")
        self.hub.attach(self.client)

    def _write(self, b):
        if self.client is None:
            return super()._write(b)
        if self.gone or self.sock is None:
            raise RuntimeError("Cannot send on a terminated websocket")
        self.hub.write_now(self.client, b)

    def send_frames(self, data: bytes) -> None:
        """Queue frames made elsewhere (``ws_frame``); bounded like every write."""
        if data and not self.gone:
            self.hub.send(self.client, data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        first = not self.server_terminated
        super().close(code, reason)
        if first and self.client is not None:
            self.hub.close_by(self.client)  # the client may never answer

    def _source_ended(self) -> None:
        if not self.gone:
            self.close(1000, self.end_reason)

    def released(self) -> None:
        """Once, when the websocket is gone: free what it holds (subscriptions, sources)."""

    def _release(self) -> None:
        try:
            self.released()
        finally:
            on_gone, self.on_gone = self.on_gone, None
            if on_gone is not None:
                on_gone()

    # -- the hub thread

    def _queue_message(self, message) -> None:
        # ws4py drops the message's data as this returns: the task gets a copy.
        data = bytes(message.data)
        copy = BinaryMessage(data) if message.is_binary else TextMessage(data)
        if not self._inbox.put(lambda: self._handle(copy)):
            log.info("websocket %s: more than %d messages waiting: closed", self.path_name,
                     self.max_inbox)
            self.close(1008, "too many messages waiting")

    @property
    def path_name(self) -> str:
        return getattr(self, "path", "?")

    def _hub_read(self) -> bool:
        """The socket is readable: read and parse what came. False: close it now."""
        sock, eof = self.sock, False
        if sock is None or self.stream is None:
            return False  # terminated: nothing more is read
        for _ in range(_READS):
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                break
            except OSError as exc:
                connection_lost(self, exc)
                eof = True
                break
            if not data:
                eof = True
                break
            self.buf += data
            if not self._parse():
                break
        if self.stream is not None and (eof or not self._parse()):
            self.terminate()
        return not eof

    def _parse(self) -> bool:
        while self.buf and self.stream is not None:
            n = self.reading_buffer_size
            chunk, self.buf = self.buf[:n], self.buf[n:]
            if not self.process(chunk):
                return False
        return self.stream is not None

    def close_connection(self) -> None:
        """ws4py's terminate(): the hub closes the socket once the queue is written."""
        self.gone = True
        if self.client is None:
            return super().close_connection()
        self.sock = None
        self.hub.finish(self.client)

    def _hub_closed(self) -> None:
        """The hub closed the socket (the client went away, was dropped, the hub stops)."""
        self.gone = True
        if self.client.error is not None:
            connection_lost(self, self.client.error)
        if self.stream is not None:
            try:
                self.terminate()
            except Exception:
                log.debug("websocket terminate failed", exc_info=True)
