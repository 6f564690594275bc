"""gaffer 0.5's IO channel, ``/<pid>/channel[/<label>]?mode=M`` (see zsup.http.gaffer_ws for
the protocol): one process's output out as ``message`` frames, its stdin in.

No thread of its own: its LineFeed (or, write-only, its subscription to the process's exit)
is pumped by a hub source (``Hub.task_source``); stdin frames run on the hub's task pool.
Each line is framed for each channel (gaffer's frame carries an id of its own).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid

from zsup.errors import ZsupError
from zsup.http.feeds import LineFeed
from zsup.http.gaffer_keys_api import KeyCheck
from zsup.http.gaffer_ws import READABLE, WRITABLE, GafferSocket, _delay, errno_of
from zsup.http.hubws import ws_frame
from zsup.http.sources import lines_of

__all__ = ["IOChannel", "decode_frame", "encode_frame"]

EXIT_CHECK = 2.0  # seconds between asking whether a write-only channel's process exited


def encode_frame(kind: str, ident: str, body: bytes) -> bytes:
    return b" ".join((b"V1", kind.encode(), ident.encode())) + b"\0" + body


def decode_frame(raw: bytes) -> tuple[str, str, bytes]:
    """(type, id, body) of a ``V1 type id\\0body`` frame; ValueError when it is not one."""
    header, sep, body = raw.partition(b"\0")
    parts = header.split()
    if not sep or len(parts) != 3 or parts[0] != b"V1":
        raise ValueError("invalid message")
    return parts[1].decode("ascii", "replace"), parts[2].decode("ascii", "replace"), body


class IOChannel(GafferSocket):
    """``/<pid>/channel[/<label>]``: one process's output out, its stdin in (gaffer's framing)."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None,
                 *, gate, proc: dict, label: str | None, mode: int, hub=None):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ,
                         heartbeat_freq=heartbeat_freq, hub=hub)
        self.gate = gate
        self.proc = proc
        self.label = label
        self.mode = mode
        self.feed: LineFeed | None = None
        self._prefix, self._ids = uuid.uuid4().hex[:16], itertools.count()  # message ids
        self.source = None
        self._pending: list = []
        self._exit_sub = None
        self._next_check = float("inf")
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
        """Start reading (output, or only the exit when write-only): a hub source pumps it."""
        if self.mode & READABLE:
            after = (self.proc.get("last_seq") or {}).get(self.label, 0)
            self.feed = LineFeed(self.gate, self.proc, self.label, after)
            self._pending = self.feed.initial
            sub, step, close = self.feed.sub, self._pump, self.feed.close
            feed = self.feed

            def due() -> float:
                return feed.next_check
        else:
            s, n = self.proc["session"], self.proc["name"]
            sub = self._exit_sub = self.gate.subscribe([f"proc.{s}.{n}.exit"])
            step, close = self._watch_exit, sub.close
            self._next_check = time.monotonic() + EXIT_CHECK

            def due() -> float:
                return self._next_check
        self.source = self.hub.task_source(step, _delay, next_due=due, on_close=close)
        sub.on_ready = self.source.wake
        self.source.wake()

    def _ended(self) -> bool:
        if not self.gone:
            self.close(1000, "process exited")
        return True

    def _pump(self) -> bool:
        """Send the lines that came (a hub worker); True once done."""
        if self.gone:
            return True
        items, self._pending = self._pending + self.feed.poll(), []
        frames = [encode_frame("message", f"{self._prefix}{next(self._ids)}", line)
                  for _, line in lines_of(items)]
        if self.client is not None:  # a websocket: one write for the batch
            self.send_frames(b"".join(ws_frame(f, not _is_utf8(f)) for f in frames))
            if self.gone:
                return True
        else:
            for frame in frames:
                if not self.emit(frame, not _is_utf8(frame)):
                    return True
        return self._ended() if self.feed.ended else False

    def _watch_exit(self) -> bool:
        """Write-only: close when the process exits (gaffer does), by its event or, for an
        exit the subscription missed, by asking every EXIT_CHECK seconds."""
        if self.gone:
            return True
        pid = self.proc["pid"]
        if any(ev.msg.get("pid") == pid for ev in self._exit_sub.drain(1000)):
            return self._ended()
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + EXIT_CHECK
            try:
                if self.gate.call("get_process", pid=pid).get("state") == "exited":
                    return self._ended()
            except ZsupError:
                return self._ended()
        return self._exit_sub.closed

    def closed(self, code, reason=None):
        self.gone = True
        if self.source is not None:
            self.source.end()

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
                err = errno_of(exc)
                self.error(err["errno"], err["reason"], ident)
                return
        self.emit(encode_frame("response", ident, b"OK"), False)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
