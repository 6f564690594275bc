"""SockJS (protocol 0.3, what sockjs-client 1.x speaks) for gaffer's two channels, so a
browser page using sockjs-client reaches them as gaffer's manual promises.

Prefixes: ``/channel`` (gaffer's event channel, zsup.http.gaffer_ws.GafferChannel) and
``/<pid>/channel[/<label>]`` (the IO channel; ``?mode=`` as on its websocket). Under a prefix:

- ``GET  <prefix>/info``: ``{"websocket": true, "cookie_needed": false, "origins", "entropy"}``
- ``GET  <prefix>/<server>/<session>/websocket``: websocket transport (gaffer_ws hands the
  upgrade here); ``<prefix>/websocket`` stays gaffer's raw websocket.
- ``POST <prefix>/<server>/<session>/xhr_streaming``, ``GET .../eventsource``: streaming
  receivers; ``POST .../xhr``: polling receiver; ``POST .../xhr_send``: a JSON array of
  messages in (204; 404 for an unknown session).
Not served: ``iframe.html``, ``htmlfile``, ``jsonp`` (sockjs-client then uses another
transport). Frames are SockJS's: ``o`` open, ``h`` heartbeat (every HEARTBEAT seconds),
``a[...]`` messages, ``c[code,"reason"]`` close. A session without a receiver for
DISCONNECT_DELAY seconds is closed and its channel told so; a second concurrent receiver gets
``c[2010,"Another connection still open"]``. SockJS carries text only: an IO channel's frame
that is not UTF-8 is sent with U+FFFD replacements.

The channel objects are gaffer_ws's, with their frames going into a Session instead of a
socket (SessionFrames); their subscriptions are pumped by the stream hub. The websocket
transport is a hub websocket (zsup.http.hubws), and the streaming receivers are handed to the
hub after their head (zsup.http.sockjs_stream): what the session gets is sent as it comes,
with no thread of its own. Each receiver takes a stream slot; a polling ``xhr`` receiver holds
a gateway thread while it waits (up to HEARTBEAT seconds).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Callable

from webob import Response
from ws4py.messaging import TextMessage

from zsup.http import gaffer_ws
from zsup.http.channel import stream_hub
from zsup.http.hubws import HubSocket, ws_frame
from zsup.http.routes_api import api
from zsup.http.sockjs_stream import hub_receiver
from zsup.http.streams import StreamBody, _waitress_channel
from zsup.http.web import HTTPError, StreamResponse, read_body

log = logging.getLogger("zsup.http.sockjs")

HEARTBEAT = 25.0
DISCONNECT_DELAY = 5.0
STREAM_LIMIT = 128 * 1024  # bytes a streaming receiver sends before it ends (client reopens)
TRANSPORTS = ("xhr", "xhr_streaming", "eventsource", "xhr_send")
_JS = "application/javascript; charset=UTF-8"
_NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"


def close_frame(code: int, reason: str) -> str:
    return "c" + json.dumps([code, reason])


class Session:
    """One SockJS session: the queue of messages for the client and its channel object.

    Thread rules: every method may be called from any thread; ``take`` blocks its caller."""

    def __init__(self, make_channel: Callable[["Session"], object]):
        self._cond = threading.Condition()
        self._queue: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.opened_sent = False
        self.receiving = False
        self.last_seen = time.monotonic()
        self.channel = None
        self._channel_closed = False
        #: Called (any thread, no lock held) after a message is queued or the session closed.
        self.listener: Callable[[], None] | None = None
        self.channel = make_channel(self)
        self.channel.opened()

    def _tell(self) -> None:
        listener = self.listener
        if listener is not None:
            listener()

    def claim(self) -> bool:
        """Become the session's one receiving request: False when another one is."""
        with self._cond:
            if self.receiving:
                return False
            self.receiving = True
            return True

    def push(self, text: str) -> bool:
        with self._cond:
            if self.closed:
                return False
            self._queue.append(text)
            self._cond.notify_all()
        self._tell()
        return True

    def take(self, timeout: float) -> list[str] | None:
        """The queued messages (waiting up to `timeout`); [] on timeout; None once closed
        and drained."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            out, self._queue = self._queue, []
            return out or None

    def close(self, code: int = 3000, reason: str = "Go away!") -> None:
        """Close from the server side (the channel) or because the client went away."""
        with self._cond:
            if self.closed is None:
                self.closed = (code, reason)
            self._cond.notify_all()
        self._close_channel()
        self._tell()

    def _close_channel(self) -> None:
        with self._cond:
            if self._channel_closed or self.channel is None:
                return
            self._channel_closed = True
            self.channel.client_terminated = self.channel.server_terminated = True
        code, reason = self.closed or (1000, "")
        try:
            self.channel.closed(code, reason)
        except Exception:
            log.exception("closing a SockJS channel failed")

    def deliver(self, payload: bytes) -> None:
        """Messages from the client (a JSON array of strings, or one string): to the channel.
        ValueError when `payload` is not that."""
        if not payload:
            raise ValueError("Payload expected.")
        try:
            messages = json.loads(payload)
        except ValueError:
            raise ValueError("Broken JSON encoding.") from None
        if isinstance(messages, str):
            messages = [messages]
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise ValueError("Broken JSON encoding.")
        # (only receiving requests keep a session alive, as SockJS says: not sends)
        for text in messages:
            if self.closed:
                return
            self.channel.received_message(TextMessage(text))


class SessionFrames:
    """Mixed in before a gaffer_ws channel class: what it sends goes to its Session."""

    sockjs_session: Session

    def send(self, payload, binary: bool = False) -> None:
        if isinstance(payload, (bytes, bytearray)):
            payload = bytes(payload).decode("utf-8", "replace")
        if not self.sockjs_session.push(payload):
            raise RuntimeError("the SockJS session is closed")

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.sockjs_session.close(code, reason)


_classes: dict[type, type] = {}


def _session_channel(cls: type, bound: dict, hub) -> Callable[[Session], object]:
    sub = _classes.get(cls)
    if sub is None:
        sub = _classes.setdefault(cls, type(f"SockJS{cls.__name__}", (SessionFrames, cls), {}))

    def make(session: Session):
        obj = sub.__new__(sub)
        obj.sockjs_session = session
        obj.__init__(None, **bound, hub=hub)
        return obj
    return make


class SessionTable:
    """The gateway's SockJS sessions by (prefix, session id); a reaper thread closes the ones
    without a receiver for DISCONNECT_DELAY seconds (and removes closed ones)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], Session] = {}
        self._reaper: threading.Thread | None = None

    def get(self, key) -> Session | None:
        with self._lock:
            return self._sessions.get(key)

    def get_or_create(self, key, make: Callable[[], Session]) -> Session:
        """The session at `key`, made by `make()` (outside the lock: it may call the bus)
        when there is none."""
        session = self.get(key)
        if session is not None:
            return session
        made = make()
        with self._lock:
            session = self._sessions.setdefault(key, made)
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, daemon=True,
                                                name="zsup-sockjs-reaper")
                self._reaper.start()
        if session is not made:  # another request made it first
            made.close()
        return session

    def _reap(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self._lock:
                stale = [(k, s) for k, s in self._sessions.items() if not s.receiving
                         and now - s.last_seen > DISCONNECT_DELAY]
                for key, _ in stale:
                    del self._sessions[key]
                if not self._sessions:
                    self._reaper = None
                    return
            for _, session in stale:
                session.close(1002, "Connection interrupted")


_tables_lock = threading.Lock()


def _table(ctx) -> SessionTable:
    with _tables_lock:
        table = getattr(ctx, "sockjs_sessions", None)
        if table is None:
            table = ctx.sockjs_sessions = SessionTable()
        return table


def split(path: str) -> tuple[str, str | None, str | None] | None:
    """(prefix, session id, transport) of a SockJS path, (prefix, None, "info") for an info
    request, or None when `path` is not under one of the prefixes."""
    parts = path.strip("/").split("/")
    if parts[-1] == "info":
        prefix, tail = parts[:-1], (None, "info")
    elif len(parts) >= 3 and parts[-1] in TRANSPORTS + ("websocket",):
        prefix, tail = parts[:-3], (parts[-2], parts[-1])
        if not parts[-3] or not parts[-2] or "." in parts[-3] or "." in parts[-2]:
            return None
    else:
        return None
    ok = prefix == ["channel"] or (len(prefix) in (2, 3) and prefix[0].isdigit()
                                   and prefix[1] == "channel")
    return ("/" + "/".join(prefix), *tail) if ok else None


def is_sockjs_path(path: str) -> bool:
    return split(path) is not None


def _channel(gate, prefix: str, query: str) -> tuple[type, dict]:
    found = gaffer_ws.channel_for(gate, prefix, query)
    if found is None:
        raise HTTPError(404, f"no SockJS channel at {prefix}")
    return found


# -- websocket transport ---------------------------------------------------------------------

class SessionSocket(HubSocket):
    """``<prefix>/<server>/<session>/websocket``: one session over one websocket."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None,
                 *, cls: type, bound: dict):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq, kind="sockjs", beat=ws_frame(b"h"),
                         heartbeat=HEARTBEAT)
        self._make = _session_channel(cls, bound, self.hub)
        self._out_lock = threading.Lock()
        self.session: Session | None = None

    def opened(self):
        self.send("o")
        self.session = Session(self._make)
        self.session.listener = self._forward
        self._forward()

    def _forward(self) -> None:
        """Send what the session has (any thread; one at a time, so frames keep their order)."""
        session = self.session
        with self._out_lock:
            batch = session.take(0)
            try:
                if batch is None:
                    session.listener = None
                    code, reason = session.closed
                    self.send(close_frame(code, reason))
                    self.close(1000, reason)
                elif batch:
                    self.send("a" + json.dumps(batch))
            except Exception as exc:  # the socket is gone
                log.debug("SockJS websocket send failed: %s", exc)

    def received_message(self, message):
        data = message.data
        if not data or self.session is None:
            return
        try:
            self.session.deliver(bytes(data) if isinstance(data, (bytes, bytearray))
                                 else str(data).encode("utf-8"))
        except ValueError:
            self.close(1002, "Broken framing.")

    def closed(self, code, reason=None):
        if self.session is not None:
            self.session.listener = None
            self.session.close(1002, "Connection interrupted")


def websocket_route(gate, path: str, query: str):
    """The factory for a SockJS websocket transport at `path`, or None."""
    found = split(path)
    if found is None or found[2] != "websocket":
        return None
    cls, bound = _channel(gate, found[0], query)

    def make(sock, protocols=None, extensions=None, environ=None):
        return SessionSocket(sock, protocols=protocols, extensions=extensions, environ=environ,
                             cls=cls, bound=bound)
    return make


# -- HTTP transports ---------------------------------------------------------------------------

def _info(ctx, req, **_):
    resp = Response(json.dumps({"websocket": True, "cookie_needed": False, "origins": ["*:*"],
                                "entropy": random.getrandbits(31)}),
                    content_type="application/json", charset="UTF-8")
    resp.headers["Cache-Control"] = _NO_CACHE
    return resp


def _receive(session: Session, first: str | None, kind: str):
    """The frames of one receiver request (a generator of bytes)."""
    def frame(text: str) -> bytes:
        if kind == "eventsource":
            return f"data: {text}\r\n\r\n".encode("utf-8")
        return (text + "\n").encode("utf-8")

    sent = 0
    try:
        if first:
            yield first.encode("utf-8")
        if not session.opened_sent:
            session.opened_sent = True
            yield frame("o")
            if kind == "xhr":
                return
        while True:
            batch = session.take(HEARTBEAT)
            if batch is None:
                yield frame(close_frame(*session.closed))
                return
            chunk = frame("a" + json.dumps(batch) if batch else "h")
            yield chunk
            sent += len(chunk)
            if kind == "xhr" or sent > STREAM_LIMIT:
                return
    finally:
        session.last_seen = time.monotonic()
        session.receiving = False


def _turned_away(first: str | None, kind: str):
    """A second receiver's answer while the session has one (a generator of bytes)."""
    text = close_frame(2010, "Another connection still open")
    yield (first or "").encode() + (f"data: {text}\r\n\r\n" if kind == "eventsource"
                                    else text + "\n").encode()


def _transport(ctx, req, prefix: str, server: str, session: str, transport: str):
    if transport not in TRANSPORTS or not server or "." in server or "." in session:
        raise HTTPError(404, f"no SockJS transport {transport!r} (or a bad server/session id)")
    want = "GET" if transport == "eventsource" else "POST"
    if req.method != want:
        raise HTTPError(405, f"{transport} takes {want}", headers={"Allow": want})
    table = _table(ctx)
    key = (prefix, session)
    if transport == "xhr_send":
        found = table.get(key)
        if found is None or found.closed:
            raise HTTPError(404, "no such SockJS session")
        try:
            found.deliver(read_body(req))
        except ValueError as exc:
            return Response(str(exc), status=500, content_type="text/plain")
        resp = Response(status=204, content_type="text/plain")
        resp.headers["Cache-Control"] = _NO_CACHE
        return resp
    current = table.get(key)
    if current is None:
        cls, bound = _channel(ctx.gate, prefix, req.query_string)
        hub = stream_hub(req.environ)
        current = table.get_or_create(key, lambda: Session(_session_channel(cls, bound, hub)))
    hub = stream_hub(req.environ) if transport != "xhr" else None
    release = ctx.acquire_stream(holds_thread=hub is None)
    first = {"xhr_streaming": "h" * 2048 + "\n", "eventsource": "\r\n"}.get(transport)
    ctype = "text/event-stream; charset=UTF-8" if transport == "eventsource" else _JS
    if current.claim():
        if hub is not None:
            return hub_receiver(hub, req, current, first, transport, ctype,
                                {"Cache-Control": _NO_CACHE}, release, HEARTBEAT, STREAM_LIMIT)
        gen = _receive(current, first, transport)
    else:
        gen = _turned_away(first, transport)
    return StreamResponse(StreamBody(gen, release, _waitress_channel(req)), ctype,
                          headers={"Cache-Control": _NO_CACHE})


def _register() -> None:
    for base, params in (("/channel", ()), ("/{pid:int}/channel", ("pid",)),
                         ("/{pid:int}/channel/{label}", ("pid", "label"))):
        def prefix_of(kw, params=params, base=base):
            return base.replace("{pid:int}", str(kw.get("pid"))).replace(
                "{label}", str(kw.get("label")))

        api.gaffer.route("GET", base + "/info", "SockJS: the channel's info (gaffer's SockJS)",
                  tag="gaffer")(_info)
        for method in ("GET", "POST"):
            def handler(ctx, req, server, session, transport, prefix_of=prefix_of, **kw):
                return _transport(ctx, req, prefix_of(kw), server, session, transport)
            api.gaffer.route(method, base + "/{server}/{session}/{transport}",
                      "SockJS transports: xhr, xhr_streaming, xhr_send (POST), eventsource (GET)",
                      tag="gaffer")(handler)


_register()
