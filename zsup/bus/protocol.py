"""Bus protocol v1: framing, request checks, replies, topics and events (see docs/bus.md).

Server and client both import this module, so the two sides cannot disagree on how a frame
looks. Nothing here touches a socket: every function takes and returns frames (lists of bytes)
or plain data, which keeps it easy to test and to read as the protocol's reference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import orjson

from zsup.bus.topics import (  # noqa: F401  (the events' vocabulary, re-exported)
    INTERNAL_SESSION,
    JOB_EVENTS,
    PROC_EVENTS,
    PROTOCOL_VERSION,
    SYS_EVENTS,
    agent_topic,
    io_topic,
    job_io_prefix,
    job_topic,
    proc_topic,
    stats_topic,
    sys_topic,
    task_topic,
    topic_matches,  # noqa: F401  (gaffer's rules, kept in one place)
)
from zsup.errors import BadRequest, ZsupError

#: Default upper bound of a request's body, in bytes (`[zsup] max_request_size`). A bigger
#: request gets `bad_request` without being parsed, so a runaway client cannot make the
#: control thread chew on it, and the client learns the limit.
MAX_REQUEST_BYTES = 1 << 20
#: A frame above FRAME_LIMIT_FACTOR times that limit is not even read: libzmq checks the size
#: a frame announces before it allocates it (zmq.MAXMSGSIZE) and drops the connection, so
#: the sender gets no reply. That bounds what one request can cost in memory.
FRAME_LIMIT_FACTOR = 4

#: Every error code a reply can carry.
ERROR_CODES = ("bad_request", "not_found", "conflict", "forbidden", "unavailable", "internal")

# ---------------------------------------------------------------------------------- JSON


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON, the one encoding used on the bus (no NaN/Infinity: not JSON)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode_json(data: bytes) -> Any:
    """Parse UTF-8 JSON; raises ValueError on anything else: NaN, Infinity, numbers that
    overflow a float (1e999: a timer given it would never end), invalid UTF-8 and lone
    surrogates (they could not be encoded again), and nesting deeper than 1024.

    orjson, not the json module: the same strictness without a Python call per float, and
    2-3x faster on the big replies (`info` of a job of hundreds of processes), where the
    client's decoding is most of a call's time (docs/performance.md)."""
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        data = bytes(data)
    return orjson.loads(data)


# ------------------------------------------------------------------------------ requests


@dataclass
class Request:
    """A checked request, with the envelope its reply must carry back."""

    envelope: list[bytes]
    id: str | int | None
    cmd: str
    args: dict


class InvalidRequest(BadRequest):
    """A request the server must refuse; it still knows where (and with which id) to answer."""

    def __init__(self, message: str, envelope: list[bytes], request_id: str | int | None = None):
        super().__init__(message)
        self.envelope = envelope
        self.request_id = request_id


def split_envelope(frames: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split frames read from a ROUTER into (envelope, body frames).

    The ROUTER prepends the peer's identity. A REQ socket (or a DEALER that mimics one) then
    sends an empty delimiter frame before the JSON; a bare DEALER may send the JSON alone.
    The envelope is the identity plus the delimiter if there is one, so the reply goes back
    in the shape the client sent, and a REQ socket accepts it.
    """
    frames = [bytes(f) for f in frames]
    if len(frames) < 2:
        return frames, []
    if frames[1] == b"":
        return frames[:2], frames[2:]
    return frames[:1], frames[1:]


def _valid_id(value: Any) -> bool:
    # bool is an int in Python but not an id anyone means to send.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def decode_request(frames: Sequence[bytes], max_bytes: int = MAX_REQUEST_BYTES) -> Request:
    """Check the frames of one request; raise InvalidRequest (code bad_request) if wrong.

    The id is picked up as early as possible so that even an error reply echoes it.
    """
    envelope, body = split_envelope(frames)
    size = sum(len(f) for f in body)
    if size > max_bytes:
        raise InvalidRequest(f"request of {size} bytes exceeds the limit of {max_bytes} bytes", envelope)
    if not body:
        raise InvalidRequest("empty request: expected one JSON frame after the envelope", envelope)
    try:
        payload = decode_json(body[0])
    except ValueError as exc:
        raise InvalidRequest(f"request is not UTF-8 JSON: {_one_line(exc)}", envelope) from None
    if not isinstance(payload, dict):
        raise InvalidRequest(f"request must be a JSON object, not {_json_type(payload)}", envelope)

    request_id = payload.get("id")
    if request_id is not None and not _valid_id(request_id):
        raise InvalidRequest(f"'id' must be a string or an integer, not {_json_type(request_id)}", envelope)
    if len(body) > 1:
        raise InvalidRequest(f"expected one JSON frame after the envelope, got {len(body)} frames",
                             envelope, request_id)
    cmd = payload.get("cmd")
    if cmd is None:
        raise InvalidRequest("missing 'cmd'", envelope, request_id)
    if not isinstance(cmd, str) or not cmd:
        raise InvalidRequest(f"'cmd' must be a non-empty string, not {_json_type(cmd)}", envelope, request_id)
    args = payload.get("args")
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        raise InvalidRequest(f"'args' must be a JSON object, not {_json_type(args)}", envelope, request_id)
    return Request(envelope=envelope, id=request_id, cmd=cmd, args=args)


def encode_request(cmd: str, args: dict | None = None, request_id: str | int | None = None) -> bytes:
    """The JSON frame of a request (the client puts an empty delimiter frame before it)."""
    payload: dict[str, Any] = {"cmd": cmd, "args": args or {}}
    if request_id is not None:
        payload["id"] = request_id
    return encode_json(payload)


# ------------------------------------------------------------------------------- replies


def ok_reply(request_id: str | int | None, result: Any) -> dict:
    """`{"id", "ok": true, "result"}`; the id is always present (null if the request had none)."""
    return {"id": request_id, "ok": True, "result": result}


def error_reply(request_id: str | int | None, error: ZsupError) -> dict:
    """`{"id", "ok": false, "error": {"code", "message"}}`."""
    return {"id": request_id, "ok": False, "error": error.to_dict()}


class RawJSON(bytes):
    """A command's result already encoded by `encode_json` (a cached listing): replied as is."""


def encode_reply(envelope: Sequence[bytes], reply: dict) -> list[bytes]:
    """Frames to send on the ROUTER: the request's envelope, then the JSON reply."""
    result = reply.get("result")
    if isinstance(result, RawJSON):
        head = encode_json({"id": reply["id"], "ok": True})
        return [*envelope, head[:-1] + b',"result":' + result + b"}"]
    return [*envelope, encode_json(reply)]


def decode_reply(data: bytes) -> dict:
    """Parse and check a reply frame (client side); ZsupError if it is not a v1 reply."""
    try:
        reply = decode_json(data)
    except ValueError as exc:
        raise ZsupError(f"malformed reply from zsupd: {_one_line(exc)}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ZsupError("malformed reply from zsupd: expected an object with 'ok'")
    if not reply["ok"] and not isinstance(reply.get("error"), dict):
        raise ZsupError("malformed reply from zsupd: an error reply without 'error'")
    return reply


# -------------------------------------------------------------------------------- topics
# The builders and event names live in zsup.bus.topics (pure, so the core can use them too).


def zmq_prefix(pattern: str) -> str:
    """The ZeroMQ subscription that receives (at least) every topic `pattern` matches."""
    return "" if pattern in ("", ".") else pattern


# -------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """One message from the PUB socket: a topic, its JSON body and, for output, raw bytes."""

    topic: str
    msg: dict
    data: bytes | None = None

    def lines(self) -> list[bytes]:
        """The lines of an IO event's data frame (see split_lines); [] for other events."""
        return split_lines(self.data) if self.data is not None else []


def encode_event(topic: str, msg: dict, data: bytes | None = None) -> list[bytes]:
    """Frames of an event: `[topic, json]`, plus the raw bytes for output."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("an event needs a non-empty topic")
    if not isinstance(msg, dict):
        raise TypeError(f"an event's message must be a dict, not {type(msg).__name__}")
    frames = [topic.encode("utf-8"), encode_json(msg)]
    if data is not None:
        frames.append(bytes(data))
    return frames


def decode_event(frames: Sequence[bytes]) -> Event:
    """Rebuild an Event from frames read on a SUB socket; ValueError if they are not one."""
    if len(frames) not in (2, 3):
        raise ValueError(f"an event has 2 or 3 frames, got {len(frames)}")
    topic = bytes(frames[0]).decode("utf-8")
    msg = decode_json(frames[1])
    if not isinstance(msg, dict):
        raise ValueError("an event's JSON frame must be an object")
    data = bytes(frames[2]) if len(frames) == 3 else None
    return Event(topic, msg, data)


def split_lines(data: bytes) -> list[bytes]:
    """Cut an IO data frame into its lines, each keeping its `\\n`.

    Only `\\n` separates lines (a `\\r` is data). A last piece without `\\n` is part of an
    over-long line that was cut; it still counts as one line (one `seq`). So the result has
    exactly the event's `lines` entries, the first one numbered `seq`.
    """
    if not data:
        return []
    pieces = data.split(b"\n")
    lines = [piece + b"\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


# -------------------------------------------------------------------------------- helpers


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
