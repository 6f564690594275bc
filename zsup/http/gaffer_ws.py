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

Each subscription has a pump thread that moves events from its gate subscription to the
socket; sends are serialised by a lock. ``CMD`` frames run in zsup.http.gaffer_commands.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from urllib.parse import parse_qs

from ws4py.websocket import WebSocket

from zsup.errors import ZsupError
from zsup.http import gaffer_compat as gaffer
from zsup.http.gaffer_commands import run_command
from zsup.http.gaffer_commands import split_name as _split
from zsup.http.gaffer_keys_api import KeyCheck
from zsup.http.streams import LineFeed
from zsup.http.web import STATUS_BY_CODE

log = logging.getLogger("zsup.http.gaffer_ws")

READABLE, WRITABLE = 1, 2  # pyuv.UV_READABLE, pyuv.UV_WRITABLE, as gaffer's mode uses them


def _errno(exc: Exception) -> dict:
    if isinstance(exc, ZsupError):
        return {"errno": STATUS_BY_CODE.get(exc.code, 500), "reason": exc.message}
    return {"errno": 400, "reason": str(exc)}


class _LockedSend(WebSocket):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
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
        if self._stop.is_set() or self.terminated:
            return False
        try:
            with self._send_lock:
                self.send(payload, binary)
            return True
        except Exception as exc:
            log.debug("gaffer websocket send failed: %s", exc)
            return False

    def closed(self, code, reason=None):
        self._stop.set()

    def spawn(self, target, name: str) -> None:
        threading.Thread(target=target, daemon=True, name=name).start()


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

    def close(self) -> None:
        self.sub.close()


class GafferChannel(_LockedSend):
    """``/channel/websocket``: gaffer's event channel and command frames."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None,
                 *, gate):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq)
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
                self.spawn(lambda: self._pump(sub), f"zsup-gaffer-sub {topic}")
        self.send_json({"event": "gaffer:subscription_success", "topic": topic})

    def unsubscribe(self, topic: str) -> None:
        with self._subs_lock:
            sub = self.subs.pop(topic, None)
        if sub is not None:
            sub.close()
        self.send_json({"event": "gaffer:subscription_success", "topic": topic})

    def _pump(self, sub: _Sub) -> None:
        try:
            while not self._stop.is_set() and not sub.sub.closed:
                ev = sub.sub.get(timeout=0.5)
                if ev is None:
                    continue
                for name, fields in sub.translate(ev):
                    data = dict(fields, event=name, topic=sub.topic)
                    if not self.send_json({"event": "gaffer:event", "data": data}):
                        return
        except Exception:
            if not self._stop.is_set():
                log.exception("gaffer channel pump for %s failed", sub.topic)
        finally:
            sub.close()

    def command(self, data: dict) -> None:
        ident = data["identity"]
        try:
            args = list(data.get("args") or [])
            kwargs = dict(data.get("kwargs") or {})
            result = run_command(self.gate, str(data["name"]), args, kwargs)
        except Exception as exc:  # a bad command is answered, never fatal
            self.send_json({"event": "gaffer:command_error",
                            "data": {"id": ident, "error": _errno(exc)}})
            return
        self.send_json({"event": "gaffer:command_success", "data": {"id": ident, "result": result}})

    def closed(self, code, reason=None):
        super().closed(code, reason)
        with self._subs_lock:
            subs, self.subs = list(self.subs.values()), {}
        for sub in subs:
            sub.close()


# -- /<pid>/channel ----------------------------------------------------------------------------

def encode_frame(kind: str, ident: str, body: bytes) -> bytes:
    return b" ".join((b"V1", kind.encode(), ident.encode())) + b"\0" + body


def decode_frame(raw: bytes) -> tuple[str, str, bytes]:
    """(type, id, body) of a ``V1 type id\\0body`` frame; ValueError when it is not one."""
    header, sep, body = raw.partition(b"\0")
    parts = header.split()
    if not sep or len(parts) != 3 or parts[0] != b"V1":
        raise ValueError("invalid message")
    return parts[1].decode("ascii", "replace"), parts[2].decode("ascii", "replace"), body


class IOChannel(_LockedSend):
    """``/<pid>/channel[/<label>]``: one process's output out, its stdin in (gaffer's framing)."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None,
                 *, gate, proc: dict, label: str | None, mode: int):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq)
        self.gate = gate
        self.proc = proc
        self.label = label
        self.mode = mode
        self.feed: LineFeed | None = None
        self.authorized = False

    def auth_failed(self, reason: str) -> None:
        self.error(403, reason)

    def _may(self, perms) -> bool:
        job = self.proc["job"]
        return ((not self.mode & READABLE or perms.can("read", job))
                and (not self.mode & WRITABLE or perms.can("write", job)))

    def error(self, errno: int, reason: str, ident: str = "gaffer_error") -> None:
        self.emit(encode_frame("error", ident, json.dumps({"errno": errno, "reason": reason})
                               .encode()), True)

    def opened(self):
        if self.proc.get("state") == "exited":
            self.error(404, "the process exited")
            self.close(1000, "process exited")
            return
        if self.mode & WRITABLE and not self.proc.get("redirect_input"):
            self.error(403, "EPERM")
            self.close(1000, "no stdin")
            return
        try:
            self.authorized = not KeyCheck(self.gate).required()
        except ZsupError:
            self.authorized = False
        if self.authorized:
            self.begin()  # else once its AUTH frame is in

    def begin(self) -> None:
        if self.mode & READABLE:
            after = (self.proc.get("last_seq") or {}).get(self.label, 0)
            self.feed = LineFeed(self.gate, self.proc, self.label, after)
            self.spawn(self._pump, f"zsup-gaffer-io {self.proc['pid']}")
        else:
            self.spawn(self._watch_exit, f"zsup-gaffer-io {self.proc['pid']}")

    def _ended(self) -> None:
        if not self._stop.is_set():
            self.close(1000, "process exited")

    def _pump(self):
        try:
            lines = self.feed.initial
            while not self._stop.is_set():
                for _, line in lines:
                    frame = encode_frame("message", uuid.uuid4().hex, line)
                    if not self.emit(frame, not _is_utf8(frame)):
                        return
                if self.feed.ended:
                    return self._ended()
                lines = self.feed.wait(0.5)
        except Exception:
            if not self._stop.is_set():
                log.exception("gaffer IO channel pump failed")
        finally:
            self.feed.close()

    def _watch_exit(self):
        """Write-only: close when the process exits (gaffer does), by its event or, for an
        exit the subscription missed, by asking every few seconds."""
        s, n, pid = self.proc["session"], self.proc["name"], self.proc["pid"]
        sub = self.gate.subscribe([f"proc.{s}.{n}.exit"])
        try:
            checks = 0
            while not self._stop.is_set():
                ev = sub.get(timeout=0.5)
                if ev is not None and ev.msg.get("pid") == pid:
                    return self._ended()
                checks += 1
                if checks % 4 == 0:
                    try:
                        if self.gate.call("get_process", pid=pid).get("state") == "exited":
                            return self._ended()
                    except ZsupError:
                        return self._ended()
        finally:
            sub.close()

    def received_message(self, message):
        raw = message.data if isinstance(message.data, (bytes, bytearray)) else \
            str(message.data).encode("utf-8")
        try:
            _, ident, body = decode_frame(bytes(raw))
        except ValueError as exc:
            self.error(400, str(exc))
            return
        if not self.authorized:
            ok = self.check_auth(self.gate, body.decode("utf-8", "replace"), self._may)
            if ok is False:
                return
            self.authorized = True
            self.begin()
        if not body.startswith(b"AUTH:"):
            if not self.mode & WRITABLE:
                self.error(403, "EPERM", ident)
                return
            try:
                self.gate.call("send", pid=self.proc["pid"], data=body.decode("utf-8", "replace"))
            except ZsupError as exc:
                err = _errno(exc)
                self.error(err["errno"], err["reason"], ident)
                return
        self.emit(encode_frame("response", ident, b"OK"), False)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


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
