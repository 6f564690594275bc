"""gaffer 0.5's two websocket protocols, so its ``GafferSocket`` and ``IOChannel`` (and the
``gaffer logs``, ``send`` and ``recv`` commands) work against zsup-http unchanged.

- ``/channel/websocket``: JSON text frames. The client sends ``{"event": "SUB"|"UNSUB",
  "data": {"topic": T}}``, ``{"event": "CMD", "data": {"identity", "name", "args",
  "kwargs"}}`` and ``{"event": "NOP"}``; the server answers ``gaffer:subscription_success``
  (or ``gaffer:subscription_error``), ``gaffer:command_success``/``gaffer:command_error``
  ``{"id", "result"|"error"}``, and sends ``{"event": "gaffer:event", "data": {"event",
  "topic", ...fields}}`` for each event of a subscribed topic. Topics: ``EVENTS[:prefix]``
  (gaffer's manager events, see gaffer_compat.channel_event), ``JOB:session.name``,
  ``PROCESS:pid``, ``STATS:session.name`` or ``STATS:pid``, ``STREAM:pid[.label]``.
- ``/<pid>/channel[/<label>]?mode=M``: frames ``V1 <type> <id>\\0<body>``. ``mode`` bit 1
  reads the process's output (``message`` frames, one per line), bit 2 writes what each
  ``message`` frame carries to its stdin, answered ``response`` ``OK`` with the same id (or an
  ``error`` frame, body ``{"errno", "reason"}``). The socket closes when the process exits.

With ``require_key`` on (zsup.http.gaffer_keys_api), the first frame must be ``AUTH:<key>``
(gaffer's client sends it when it has a key): on the event channel a key that may manage
everything, on an IO channel one that may read (mode bit 1) and write (bit 2) the process's
job; otherwise an error is sent and the socket closed. With it off, ``AUTH:`` frames are
ignored and the gateway's own authentication guards the upgrade.

Served by the stream hub (zsup.http.hubws), as zsup's own websockets: no thread per socket
or subscription. Each subscription is pumped by a hub source (``Hub.task_source``): gaffer's
JSON for an event is made once per topic and, on a websocket, framed once for every socket
subscribed to it. Frames from the client (``SUB``, ``CMD``, stdin writes) run on the hub's
task pool, in order. ``CMD`` frames run in zsup.http.gaffer_commands. The IO channel is
zsup.http.gaffer_io's.
"""

from __future__ import annotations

import json
import logging
import threading
from urllib.parse import parse_qs

from zsup.errors import ZsupError
from zsup.http import gaffer_compat as gaffer
from zsup.http.busgate import memo
from zsup.http.gaffer_commands import run_command
from zsup.http.gaffer_commands import split_name as _split
from zsup.http.gaffer_keys_api import KeyCheck
from zsup.http.hub import shared_hub
from zsup.http.hubws import HubSocket, ws_frame
from zsup.http.web import STATUS_BY_CODE

log = logging.getLogger("zsup.http.gaffer_ws")

READABLE, WRITABLE = 1, 2  # pyuv.UV_READABLE, pyuv.UV_WRITABLE, as gaffer's mode uses them
DELAY = 0.05  # batching of a busy subscription (streams.BATCH_DELAY)


def _delay() -> float:
    return DELAY


def errno_of(exc: Exception) -> dict:
    if isinstance(exc, ZsupError):
        return {"errno": STATUS_BY_CODE.get(exc.code, 500), "reason": exc.message}
    return {"errno": 400, "reason": str(exc)}


class GafferSocket(HubSocket):
    """What both of gaffer's channels share: key checks, and sending that never raises.

    Made with a socket (a websocket, served by the hub) or without one (a SockJS session's
    channel, zsup.http.sockjs: its frames go to the session). Either way its subscriptions
    are pumped by ``hub`` (the gateway's, or ``shared_hub()``)."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None,
                 *, hub=None):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq)
        self.hub = self.hub or hub or shared_hub()
        self.authorized = True  # False until a good AUTH frame when keys are required

    def check_auth(self, gate, text: str, allowed) -> bool | None:
        """With keys required: True when `text` is an AUTH frame whose key passes
        `allowed(Permissions)`, False (after an error and a close) otherwise. None: keys are
        not required (`text` is an ordinary frame, or an AUTH frame to ignore)."""
        check = KeyCheck(gate)
        try:
            if not check.required():
                return None
            if not text.startswith("AUTH:"):
                raise ValueError("AUTH_REQUIRED")
            if not allowed(check.permissions(text[5:].strip())):
                raise ValueError("forbidden")
        except Exception as exc:
            reason = str(getattr(exc, "message", exc))
            self.auth_failed(reason)
            self.close(1008, reason)
            return False
        self.authorized = True
        return True

    def auth_failed(self, reason: str) -> None:  # pragma: no cover - per protocol
        raise NotImplementedError

    def emit(self, payload, binary: bool = False) -> bool:
        """Send one frame; False once the socket is gone."""
        if self.gone or self.terminated:
            return False
        try:
            self.send(payload, binary)
            return True
        except Exception as exc:
            log.debug("gaffer websocket send failed: %s", exc)
            return False

    def emit_texts(self, texts: list[str], framed: bytes | None) -> bool:
        """Send text frames; on a websocket `framed` (the same texts, framed once for every
        socket) when given. False once the socket is gone."""
        if self.client is not None and framed is not None:
            self.send_frames(framed)
            return not self.gone
        return all(self.emit(text) for text in texts)


# -- /channel/websocket ------------------------------------------------------------------------

class _Sub:
    """One gaffer topic: the zsup patterns it needs and how an event becomes gaffer's."""

    def __init__(self, gate, topic: str):
        self.topic = topic
        source, _, target = topic.partition(":")
        source = source.upper()
        self.translate = None
        if source == "EVENTS":
            prefix = target if target not in ("", ".") else None
            patterns = ["job", "proc"]

            def translate(ev):
                return [(name, f) for name, f in gaffer.channel_event(ev.topic, ev.msg)
                        if prefix is None or name == prefix
                        or name.startswith(prefix.rstrip(".") + ".")]
        elif source == "JOB" and target:
            session, name = _split(target)
            gate.call("info", name=name, session=session)  # not_found now, not silence later
            patterns = [f"job.{session}.{name}", f"proc.{session}.{name}"]
            head = f"job.{session}.{name}."

            def translate(ev):
                return [(n[len(head):], f) for n, f in gaffer.channel_event(ev.topic, ev.msg)
                        if n.startswith(head)]
        elif source == "PROCESS" and target.isdigit():
            proc = gate.call("get_process", pid=int(target))
            patterns = [f"proc.{proc['session']}.{proc['name']}"]
            head = f"proc.{int(target)}."

            def translate(ev):
                return [(n[len(head):], f) for n, f in gaffer.channel_event(ev.topic, ev.msg)
                        if n.startswith(head)]
        elif source == "STATS" and target:
            if target.isdigit():
                proc = gate.call("get_process", pid=int(target))
                patterns = [f"stats.{proc['session']}.{proc['name']}.{proc['pid']}"]
            else:
                session, name = _split(target)
                gate.call("info", name=name, session=session)
                patterns = [f"stats.{session}.{name}"]

            def translate(ev):
                pid = ev.topic.rsplit(".", 1)[1]
                return [("stat", dict(ev.msg, pid=int(pid) if pid.isdigit() else pid,
                                      name=ev.msg.get("job") or ev.topic.split(".", 1)[1]))]
        elif source == "STREAM" and target:
            pid, _, label = target.partition(".")
            if not pid.isdigit():
                raise ValueError("invalid_topic")
            proc = gate.call("get_process", pid=int(pid))
            labels = proc.get("labels") or []
            label = label or (labels[0] if labels else "")
            if label not in labels:
                raise ValueError("stream_not_found")
            patterns = [f"io.{proc['session']}.{proc['name']}.{proc['pid']}.{label}"]
            pname = proc["job"]

            def translate(ev):
                return [(label, {"name": pname, "pid": ev.msg.get("pid"), "label": label,
                                 "data": line.decode("utf-8", "replace")})
                        for line in ev.lines()]
        else:
            raise ValueError("invalid_topic")
        self.translate = translate
        self.sub = gate.subscribe(patterns)
        self.source = None

    def end(self) -> None:
        """Stop it (any thread): its source closes it in the hub."""
        if self.source is not None:
            self.source.end()
        else:
            self.close()

    def close(self) -> None:
        self.sub.close()


class GafferChannel(GafferSocket):
    """``/channel/websocket``: gaffer's event channel and command frames."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None,
                 *, gate, hub=None):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq, hub=hub)
        self.gate = gate
        self.subs: dict[str, _Sub] = {}
        self._subs_lock = threading.Lock()
        self.authorized = False

    def auth_failed(self, reason: str) -> None:
        self.send_json({"event": "gaffer:error", "data": {"error": "AUTH_REQUIRED",
                                                          "reason": reason}})

    def send_json(self, obj: dict) -> bool:
        return self.emit(json.dumps(obj), False)

    def received_message(self, message):
        raw = message.data
        text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        if not self.authorized:
            ok = self.check_auth(self.gate, text, lambda p: p.can("manage", "*"))
            if ok is not None:
                return
            self.authorized = True
        if text.startswith("AUTH:"):
            return
        try:
            msg = json.loads(text)
            event = msg["event"]
            data = msg.get("data") or {}
        except (ValueError, KeyError, TypeError):
            self.send_json({"event": "gaffer:error", "data": {"error": "invalid_msg",
                                                              "reason": "invalid_json"}})
            return
        if event == "NOP":
            return
        if event in ("SUB", "UNSUB") and isinstance(data, dict) and "topic" in data:
            (self.subscribe if event == "SUB" else self.unsubscribe)(str(data["topic"]))
        elif event == "CMD" and isinstance(data, dict) and "identity" in data and "name" in data:
            self.command(data)
        else:
            self.send_json({"event": "gaffer:error", "data": {"error": "invalid_msg",
                                                              "reason": f"bad {event} frame"}})

    def subscribe(self, topic: str) -> None:
        with self._subs_lock:
            if topic not in self.subs:
                try:
                    sub = _Sub(self.gate, topic)
                except (ZsupError, ValueError) as exc:
                    reason = exc.message if isinstance(exc, ZsupError) else str(exc)
                    self.send_json({"event": "gaffer:subscription_error", "topic": topic,
                                    "data": {"reason": reason}})
                    return
                self.subs[topic] = sub
                sub.source = self.hub.task_source(lambda: self._pump(sub), _delay,
                                                  on_close=sub.close)
                sub.sub.on_ready = sub.source.wake
                sub.source.wake()
        self.send_json({"event": "gaffer:subscription_success", "topic": topic})

    def unsubscribe(self, topic: str) -> None:
        with self._subs_lock:
            sub = self.subs.pop(topic, None)
        if sub is not None:
            sub.end()
        self.send_json({"event": "gaffer:subscription_success", "topic": topic})

    def _pump(self, sub: _Sub) -> bool:
        """Send what came for `sub` (a hub worker); True once it has ended."""
        if self.gone:
            return True
        for ev in sub.sub.drain(1000):
            m = memo(ev)
            texts = m.get(("gaffer", sub.topic))
            if texts is None:
                texts = m[("gaffer", sub.topic)] = [
                    json.dumps({"event": "gaffer:event",
                                "data": dict(fields, event=name, topic=sub.topic)})
                    for name, fields in sub.translate(ev)]
            framed = None
            if self.client is not None:
                framed = m.get(("gaffer-ws", sub.topic))
                if framed is None:
                    framed = m[("gaffer-ws", sub.topic)] = b"".join(
                        ws_frame(text.encode("utf-8")) for text in texts)
            if texts and not self.emit_texts(texts, framed):
                return True
        return sub.sub.closed

    def command(self, data: dict) -> None:
        ident = data["identity"]
        try:
            args = list(data.get("args") or [])
            kwargs = dict(data.get("kwargs") or {})
            result = run_command(self.gate, str(data["name"]), args, kwargs)
        except Exception as exc:  # a bad command is answered, never fatal
            self.send_json({"event": "gaffer:command_error",
                            "data": {"id": ident, "error": errno_of(exc)}})
            return
        self.send_json({"event": "gaffer:command_success", "data": {"id": ident, "result": result}})

    def closed(self, code, reason=None):
        self.gone = True
        with self._subs_lock:
            subs, self.subs = list(self.subs.values()), {}
        for sub in subs:
            sub.end()


def _factory(cls, **bound):
    def make(sock, protocols=None, extensions=None, environ=None):
        return cls(sock, protocols=protocols, extensions=extensions, environ=environ, **bound)
    return make


def channel_for(gate, path: str, query: str) -> tuple[type, dict] | None:
    """(channel class, its keyword arguments) for gaffer's channel at `path`, or None when
    `path` is not one of them. Used for websockets here and for SockJS (zsup.http.sockjs).

    Bus errors (no such process) propagate: the caller answers 404.
    """
    parts = path.strip("/").split("/")
    if parts == ["channel", "websocket"] or parts == ["channel"]:
        return GafferChannel, {"gate": gate}
    if len(parts) in (2, 3) and parts[0].isdigit() and parts[1] == "channel":
        params = parse_qs(query or "")
        try:
            mode = int((params.get("mode") or ["3"])[0])
        except ValueError:
            return None
        proc = gate.call("get_process", pid=int(parts[0]))
        labels = proc.get("labels") or []
        label = parts[2] if len(parts) == 3 else (labels[0] if labels else None)
        if mode & READABLE and label not in labels:
            return None
        return IOChannel, {"gate": gate, "proc": proc, "label": label, "mode": mode & 3}
    return None


def websocket_route(gate, path: str, query: str):
    """The factory for gaffer's websockets at `path` (``/channel/websocket``,
    ``/<pid>/channel[/<label>]``, and SockJS's ``.../<server>/<session>/websocket`` under
    either), or None when `path` is not one of them. Bus errors propagate (404)."""
    session_socket = sockjs.websocket_route(gate, path, query)
    if session_socket is not None:
        return session_socket
    if path.strip("/") == "channel":
        return None  # /channel is zsup's own event websocket
    found = channel_for(gate, path, query)
    return _factory(found[0], **found[1]) if found else None


from zsup.http import sockjs  # noqa: E402  (it uses this module; importing it registers its routes)
from zsup.http.gaffer_io import IOChannel  # noqa: E402  (it builds on GafferSocket)
