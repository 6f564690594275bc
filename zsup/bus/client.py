"""The client's side of the bus: send commands (Client) and receive events (Subscriber).

Neither class is thread-safe, because ZeroMQ sockets are not: use one Client or Subscriber per
thread.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from typing import Any, Iterable, Iterator

import zmq

from zsup.bus import curve as curvekeys
from zsup.bus.protocol import (
    Event,
    decode_event,
    decode_reply,
    encode_request,
    topic_matches,
    zmq_prefix,
)
from zsup.bus.typed import BusCommands
from zsup.errors import Unavailable, ZsupError, error_from_dict
from zsup.paths import default_state_dir

__all__ = ["Client", "Event", "Subscriber", "default_endpoints"]

COMMAND_SOCKET = "zsupd.sock"
PUB_SOCKET = "zsupd-pub.sock"


def default_endpoints(state_dir: str | None = None) -> tuple[str, str]:
    """(command endpoint, pub endpoint) of the local daemon.

    With an explicit `state_dir`: the sockets in it. Otherwise `$ZSUP_BUS` / `$ZSUP_PUB` if
    set, else the sockets in the default state dir (`$ZSUP_STATE_DIR` or `~/.zsup`).
    """
    if state_dir is not None:
        state_dir = os.path.abspath(os.path.expanduser(state_dir))
        return (f"ipc://{os.path.join(state_dir, COMMAND_SOCKET)}",
                f"ipc://{os.path.join(state_dir, PUB_SOCKET)}")
    base = default_state_dir()
    return (os.environ.get("ZSUP_BUS") or f"ipc://{os.path.join(base, COMMAND_SOCKET)}",
            os.environ.get("ZSUP_PUB") or f"ipc://{os.path.join(base, PUB_SOCKET)}")


def _prepare(sock: zmq.Socket, endpoint: str, curve: dict | None) -> None:
    sock.linger = 0
    if endpoint.startswith("tcp://["):
        sock.ipv6 = True
    if curve:
        curvekeys.configure_client_socket(sock, curve)


class Client(BusCommands):
    """Send commands to zsupd over a DEALER socket and wait for their replies.

    `call("scale", name="web", n=3)`, or the typed `scale("web", 3)` (one method per declared
    command, zsup/bus/typed.py), returns the result or raises the ZsupError the daemon
    answered with (same code). When nothing answers within `timeout` seconds it raises
    Unavailable and starts over with a fresh socket, so a late reply can never be taken for
    the answer to the next call. Not thread-safe: one Client per thread.
    """

    def __init__(self, endpoint: str | None = None, timeout: float = 5.0, curve: dict | None = None,
                 context: zmq.Context | None = None):
        self.endpoint = endpoint or default_endpoints()[0]
        self.timeout = timeout
        self._curve = curve
        self._context = context or zmq.Context.instance()
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._socket: zmq.Socket | None = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self._context.socket(zmq.DEALER)
        try:
            _prepare(sock, self.endpoint, self._curve)
            sock.connect(self.endpoint)
        except (zmq.ZMQError, ZsupError) as exc:
            sock.close()
            if isinstance(exc, ZsupError):
                raise
            raise ZsupError(f"cannot connect to {self.endpoint}: {exc}") from None
        return sock

    def call(self, cmd: str, /, **args: Any) -> Any:
        """Run `cmd` with keyword arguments as its args; return its result."""
        return self.request(cmd, args)

    def request(self, cmd: str, args: dict | None = None, timeout: float | None = None) -> Any:
        """Run `cmd` with an args dict (for args that are not Python names, or a custom timeout)."""
        if self._socket is None:
            raise ZsupError("this Client is closed")
        request_id = f"{self._prefix}-{next(self._counter)}"
        self._socket.send_multipart([b"", encode_request(cmd, args, request_id)])
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(remaining * 1000, zmq.POLLIN):
                self._reset()
                raise Unavailable(f"no zsupd answering at {self.endpoint} (is it running?)")
            frames = self._socket.recv_multipart()
            if len(frames) != 2 or frames[0] != b"":
                continue  # not a reply to the envelope we use; cannot be ours
            reply = decode_reply(frames[1])
            if reply.get("id") not in (request_id, None):
                continue  # a reply to an earlier request; ours is still to come
            # id null: zsupd could not read our request (e.g. too big). Every earlier request
            # on this socket was answered or its socket replaced, so that reply is ours.
            if reply["ok"]:
                return reply.get("result")
            raise error_from_dict(reply["error"])

    def _reset(self) -> None:
        # LINGER is 0: the unanswered request is dropped, not delivered to a server that
        # starts later, and the old socket's late reply dies with it.
        self._socket.close()
        self._socket = self._connect()

    def close(self) -> None:
        """Close the socket (pending requests are dropped)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber:
    """Receive events from zsupd's PUB socket, filtered by topic patterns.

    Patterns follow `topic_matches`: `""` or `"."` is everything, `proc.default.web` is that
    job's process events (not `webapp`'s), a pattern ending with `.` is a plain prefix.
    ZeroMQ drops what no pattern's prefix covers on the daemon's side; the exact rule is then
    applied here.

    A new subscription takes a moment to reach the daemon (ZeroMQ's "slow joiner"): events
    published meanwhile are not delivered. Wait for a first event, or poll with
    `read_output` for what came before. Not thread-safe: one Subscriber per thread.
    """

    def __init__(self, endpoint: str | None = None, patterns: Iterable[str] = ("",),
                 curve: dict | None = None, hwm: int = 100_000,
                 context: zmq.Context | None = None):
        self.endpoint = endpoint or default_endpoints()[1]
        self._context = context or zmq.Context.instance()
        self._patterns: set[str] = set()
        self._socket: zmq.Socket | None = self._context.socket(zmq.SUB)
        try:
            _prepare(self._socket, self.endpoint, curve)
            self._socket.rcvhwm = hwm
            self._socket.connect(self.endpoint)
        except BaseException as exc:
            self._socket.close()
            self._socket = None
            if isinstance(exc, zmq.ZMQError):
                raise ZsupError(f"cannot connect to {self.endpoint}: {exc}") from None
            raise
        for pattern in patterns:
            self.subscribe(pattern)

    @property
    def patterns(self) -> frozenset[str]:
        return frozenset(self._patterns)

    def subscribe(self, pattern: str) -> None:
        """Also receive topics matching `pattern` (idempotent)."""
        if pattern not in self._patterns:
            self._patterns.add(pattern)
            self._socket.subscribe(zmq_prefix(pattern))

    def unsubscribe(self, pattern: str) -> None:
        """Stop receiving topics for `pattern` (other patterns still apply)."""
        if pattern in self._patterns:
            self._patterns.discard(pattern)
            self._socket.unsubscribe(zmq_prefix(pattern))

    def recv(self, timeout: float | None = None) -> Event | None:
        """The next matching event, or None after `timeout` seconds (None: wait forever)."""
        if self._socket is None:
            raise ZsupError("this Subscriber is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                wait_ms = None
            else:
                wait_ms = max(0.0, deadline - time.monotonic()) * 1000
            if not self._socket.poll(wait_ms, zmq.POLLIN):
                return None
            frames = self._socket.recv_multipart()
            try:
                event = decode_event(frames)
            except ValueError:
                continue  # not a v1 event; a subscriber skips what it cannot read
            if any(topic_matches(p, event.topic) for p in self._patterns):
                return event

    def __iter__(self) -> Iterator[Event]:
        """Events, forever (until the Subscriber is closed)."""
        while True:
            event = self.recv()
            if event is not None:
                yield event

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
