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

Served by the gateway's stream hub (zsup.http.hub, zsup.http.hubws), as the live HTTP feeds
are, plain or TLS: the hub thread reads and writes every websocket's socket; each output line
is framed once per event for every websocket of that stream (one text frame per line, binary
when it is not UTF-8); a websocket that falls ``max_buffer`` bytes behind is closed (1008,
"too slow"); stdin writes run on the hub's small task pool. zsupd sees none of this: all of
them share the gateway's one SUB socket.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, unquote

from zsup.bus.protocol import Event
from zsup.errors import ZsupError
from zsup.http import gaffer_ws
from zsup.http.busgate import memo
from zsup.http.feeds import event_json_text, event_lines
from zsup.http.hubws import DROPPED_FRAME, HubSocket, ws_frame

__all__ = ["DROPPED_FRAME", "ChannelSocket", "ProcessSocket", "websocket_route", "ws_frame"]

log = logging.getLogger("zsup.http.websockets")


def _error_frame(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


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


class ProcessSocket(HubSocket):
    """``/wstreams/<pid>``: stdin in, output lines out."""

    end_reason = "process exited"

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None, *,
                 gate, proc: dict, label: str):
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq, kind="ws",
                         fmt_event=_event_frames, fmt_line=_line_frame)
        self.gate = gate
        self.proc = proc
        self.label = label

    def opened(self):
        after = (self.proc.get("last_seq") or {}).get(self.label, 0)
        while not self.hub.line_source(self.gate, self.proc, self.label, lambda: 0.05).join(
                self.client, after, b""):
            pass

    def released(self):
        if self.client.source is not None:
            self.client.source.wake()  # it forgets the client (gone)

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


class ChannelSocket(HubSocket):
    """``/channel``: bus events as JSON text frames."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None, *,
                 gate, patterns: list[str]):
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq, kind="ws-json",
                         fmt_event=_event_json_frame)
        self.gate = gate
        self.patterns = patterns
        self.sub = None

    def opened(self):
        self.sub = self.gate.subscribe(self.patterns)
        self.hub.event_source(self.sub, self.client, lambda: 0.05)

    def released(self):
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
