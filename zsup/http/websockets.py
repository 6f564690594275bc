"""Websockets of the gateway (ws4py), served on the REST ports by zsup.http.server.

- ``/wstreams/<pid>[?label=stdout]``: every text or binary frame received is written to the
  process's stdin (bus ``send``, as given); every output line of ``label`` (default: the
  process's first stream, normally stdout) is sent back as one frame (text when it is UTF-8,
  binary otherwise). A frame the process cannot take (it exited, or has no stdin) is answered
  with a JSON text frame ``{"error": {"code", "message"}}``; the socket closes (1000) when the
  process exits.
- ``/channel?pattern=P[&pattern=Q...]`` or ``/channel/<pattern>``: bus events as JSON text
  frames ``{"topic", "msg"[, "data"]}`` (``.`` or nothing: every event).
- gaffer 0.5's ``/channel/websocket`` and ``/<pid>/channel[/<label>]``: zsup.http.gaffer_ws.

Served by the gateway's stream hub (zsup.http.hub), as the live HTTP feeds are: ws4py's
manager reads the socket, the hub writes it (a dup of it, non-blocking): each output line is
framed once per event for every websocket of that stream (one text frame per line, binary
when it is not UTF-8), a websocket that falls ``max_buffer`` bytes behind is closed (1008,
"too slow"), and ws4py's own frames (pong, close) go through the hub's queue so nothing
interleaves. Over TLS (one SSL object cannot be written and read by two threads) and without
a hub, each websocket has its own pump thread instead, as before. zsupd sees none of this:
all of them share the gateway's one SUB socket.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import struct
import threading
from urllib.parse import parse_qs, unquote

from ws4py.websocket import WebSocket

from zsup.bus.protocol import Event
from zsup.errors import ZsupError
from zsup.http import gaffer_ws
from zsup.http.busgate import memo
from zsup.http.feeds import LineFeed, event_json_text, event_lines
from zsup.http.hub import Client
from zsup.http.ws4py_adapter import connection_lost

log = logging.getLogger("zsup.http.websockets")


def _error_frame(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def ws_frame(payload: bytes, binary: bool = False) -> bytes:
    """One unmasked, final server frame (RFC 6455 section 5.2)."""
    first = 0x82 if binary else 0x81
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def _line_frame(seq: int, line: bytes) -> bytes:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return ws_frame(line, True)
    return ws_frame(line)


def _event_frames(event: Event) -> bytes:
    """Every line of an output event as frames, made once per event for every websocket."""
    m = memo(event)
    out = m.get("ws")
    if out is None:
        out = m["ws"] = b"".join(_line_frame(0, line) for line in event_lines(event))
    return out


def _event_json_frame(event: Event) -> bytes:
    m = memo(event)
    out = m.get("ws-json")
    if out is None:
        out = m["ws-json"] = ws_frame(event_json_text(event).encode("utf-8"))
    return out


_TOO_SLOW = struct.pack("!H", 1008) + b"too slow: dropped"
DROPPED_FRAME = bytes((0x88, len(_TOO_SLOW))) + _TOO_SLOW


class _PumpedSocket(WebSocket):
    """A websocket fed by the stream hub, or by a pump thread (TLS, no hub), until the source
    ends or the socket closes."""

    end_reason = ""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq)
        self._stop = threading.Event()
        self._pump_thread: threading.Thread | None = None
        self._hub = None
        self._hub_client: Client | None = None

    def _hub_for(self):
        """The hub that will write this websocket, or None (TLS, or no hub)."""
        hub = (self.environ or {}).get("zsup.hub")
        if hub is None or isinstance(self.sock, ssl.SSLSocket):
            return None
        return hub

    def _make_client(self, hub, kind: str, fmt_event, fmt_line, release) -> Client:
        dup = socket.socket(fileno=os.dup(self.sock.fileno()))
        dup.setblocking(False)

        def shut() -> None:  # dropped: ws4py's read sees the end and terminates it
            try:
                dup.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def end() -> None:  # the source ended (the process exited, the gateway stops)
            if not self._stop.is_set():
                self.close(1000, self.end_reason)

        self._hub = hub
        self._hub_client = Client(dup, kind=kind, chunked=False, fmt_event=fmt_event,
                                  fmt_line=fmt_line, final=DROPPED_FRAME, beat=b"",
                                  heartbeat=None, release=release, reads=False, on_end=end,
                                  on_close=shut)
        return self._hub_client

    def _write(self, b):
        client = self._hub_client
        if client is None:
            return super()._write(b)
        if self.terminated or self.sock is None:
            raise RuntimeError("Cannot send on a terminated websocket")
        self._hub.write_now(client, b)

    def opened(self):
        self._pump_thread = threading.Thread(target=self._pump_safely, daemon=True,
                                             name=f"zsup-ws-pump {self.path}")
        self._pump_thread.start()

    def _pump_safely(self):
        try:
            self.pump()
        except OSError as exc:  # the client went away: one debug line for the websocket
            if not self._stop.is_set():
                connection_lost(self, exc)
        except Exception as exc:  # a send after the websocket was terminated, mostly
            if not self._stop.is_set():
                log.debug("websocket pump ended: %s", exc)
        finally:
            self.release()

    def closed(self, code, reason=None):
        self._stop.set()
        if self._hub_client is not None:
            self._hub.detach(self._hub_client)
            self.release()

    def pump(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self):
        pass


class ProcessSocket(_PumpedSocket):
    """``/wstreams/<pid>``: stdin in, output lines out."""

    end_reason = "process exited"

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None, *,
                 gate, proc: dict, label: str):
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq)
        self.gate = gate
        self.proc = proc
        self.label = label
        self.feed: LineFeed | None = None

    def opened(self):
        after = (self.proc.get("last_seq") or {}).get(self.label, 0)
        hub = self._hub_for()
        if hub is not None:
            client = self._make_client(hub, "ws", _event_frames, _line_frame, lambda: None)
            while not hub.line_source(self.gate, self.proc, self.label, lambda: 0.05).join(
                    client, after, b""):
                pass
            hub.attach(client)
            return
        self.feed = LineFeed(self.gate, self.proc, self.label, after)
        super().opened()

    def pump(self):
        lines = self.feed.initial
        while not self._stop.is_set():
            for _, line in lines:
                try:
                    self.send(line.decode("utf-8"), False)
                except UnicodeDecodeError:
                    self.send(line, True)
            if self.feed.ended:
                if not self._stop.is_set():
                    self.close(1000, "process exited")
                return
            lines = self.feed.wait(0.5)

    def release(self):
        if self.feed is not None:
            self.feed.close()
        client = self._hub_client
        if client is not None and client.source is not None:
            client.source.wake()  # it forgets the client (gone)

    def received_message(self, message):
        data = message.data
        text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
        try:
            self.gate.send(pid=self.proc["pid"], data=text)
        except ZsupError as exc:
            try:
                self.send(_error_frame(exc.code, exc.message), False)
            except Exception:
                pass


class ChannelSocket(_PumpedSocket):
    """``/channel``: bus events as JSON text frames."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None, *,
                 gate, patterns: list[str]):
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq)
        self.gate = gate
        self.patterns = patterns
        self.sub = None

    def opened(self):
        self.sub = self.gate.subscribe(self.patterns)
        hub = self._hub_for()
        if hub is not None:
            client = self._make_client(hub, "ws-json", _event_json_frame, None, self.sub.close)
            hub.event_source(self.sub, client, lambda: 0.05)
            hub.attach(client)
            return
        super().opened()

    def pump(self):
        while not self._stop.is_set() and not self.sub.closed:
            event = self.sub.get(timeout=0.5)
            if event is not None:
                self.send(event_json_text(event), False)

    def release(self):
        if self.sub is not None:
            self.sub.close()

    def received_message(self, message):
        try:
            self.send(_error_frame("bad_request", "this channel only sends events"), False)
        except Exception:
            pass


def _factory(cls, **bound):
    def make(sock, protocols=None, extensions=None, environ=None):
        return cls(sock, protocols=protocols, extensions=extensions, environ=environ, **bound)
    return make


def websocket_route(gate, path: str, query: str):
    """The factory for a websocket at `path`, or None (404). Bus errors propagate.

    gaffer's websockets (``/channel/websocket``, ``/<pid>/channel[/<label>]``) are
    zsup.http.gaffer_ws's, so ``/channel/websocket`` is not the event pattern "websocket"."""
    gaffer_socket = gaffer_ws.websocket_route(gate, path, query)
    if gaffer_socket is not None:
        return gaffer_socket
    params = parse_qs(query or "", keep_blank_values=True)
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "wstreams" and parts[1].isdigit():
        proc = gate.call("get_process", pid=int(parts[1]))
        labels = proc.get("labels") or []
        label = (params.get("label") or [labels[0] if labels else ""])[0]
        if label not in labels:
            return None
        if proc.get("state") == "exited":
            return None
        return _factory(ProcessSocket, gate=gate, proc=proc, label=label)
    if parts[0] == "channel":
        if len(parts) == 1:
            patterns = params.get("pattern") or [""]
        elif len(parts) == 2:
            patterns = [unquote(parts[1])]
        else:
            return None
        patterns = ["" if p == "." else p for p in patterns]
        return _factory(ChannelSocket, gate=gate, patterns=patterns)
    return None
