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

Each open websocket has one pump thread in the gateway that moves lines or events from its
gate subscription to the socket (ws4py's manager thread must never block on a slow client);
zsupd sees none of this: all of them share the gateway's one SUB socket.
"""

from __future__ import annotations

import json
import logging
import threading
from urllib.parse import parse_qs, unquote

from ws4py.websocket import WebSocket

from zsup.errors import ZsupError
from zsup.http import gaffer_ws
from zsup.http.adapter import connection_lost
from zsup.http.feeds import LineFeed, event_json_text

log = logging.getLogger("zsup.http.websockets")


def _error_frame(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


class _PumpedSocket(WebSocket):
    """A websocket fed by a pump thread until the source ends or the socket closes."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq)
        self._stop = threading.Event()
        self._pump_thread: threading.Thread | None = None

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

    def pump(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self):
        pass


class ProcessSocket(_PumpedSocket):
    """``/wstreams/<pid>``: stdin in, output lines out."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None, *,
                 gate, proc: dict, label: str):
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq)
        self.gate = gate
        self.proc = proc
        self.label = label
        self.feed: LineFeed | None = None

    def opened(self):
        after = (self.proc.get("last_seq") or {}).get(self.label, 0)
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
