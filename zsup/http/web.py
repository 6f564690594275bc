"""What every route shares: JSON errors with bus codes, JSON bodies with a size limit, answers."""

from __future__ import annotations

import json
from typing import Any

from webob import Request, Response

from zsup.bus.protocol import decode_json
from zsup.errors import ZsupError

__all__ = ["HTTPError", "MAX_BODY", "STATUS_BY_CODE", "error_response", "json_response",
           "read_body", "read_json", "StreamResponse"]

#: The largest request body a route reads; a bigger one gets 413.
MAX_BODY = 1 << 20

STATUS_BY_CODE = {"bad_request": 400, "not_found": 404, "conflict": 409, "forbidden": 403,
                  "unavailable": 503, "internal": 500}
# Only the bus's codes, so a client handles every error of zsup the same way.
CODE_BY_STATUS = {400: "bad_request", 401: "forbidden", 403: "forbidden", 404: "not_found",
                  405: "bad_request", 409: "conflict", 413: "bad_request", 429: "unavailable",
                  503: "unavailable", 500: "internal"}


class HTTPError(Exception):
    """An error answered as ``{"error": {"code": ..., "message": ...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODE_BY_STATUS.get(status, "bad_request")
        self.headers = headers or {}

    @classmethod
    def from_bus(cls, exc: ZsupError) -> "HTTPError":
        code = exc.code if exc.code in STATUS_BY_CODE else "internal"
        return cls(STATUS_BY_CODE[code], exc.message, code)


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
    resp = Response(body=body, status=status, content_type="application/json", charset="utf-8")
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def error_response(err: HTTPError) -> Response:
    return json_response({"error": {"code": err.code, "message": err.message}}, err.status,
                         err.headers)


def read_body(req: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused with 413 beyond `limit` bytes (declared or actual)."""
    length = req.content_length
    if length is not None and length > limit:
        raise HTTPError(413, f"request body too large ({length} bytes; the limit is {limit})")
    stream = req.environ.get("wsgi.input")
    if stream is None:
        return b""
    data = stream.read(limit + 1) if length is None else stream.read(length)
    if len(data) > limit:
        raise HTTPError(413, f"request body too large (the limit is {limit} bytes)")
    return data


def read_json(req: Request, default: Any = None, *, lenient: bool = False) -> Any:
    """The body as JSON (`default` when empty). With `lenient`, a body that is not JSON is
    taken as a bare word (``start``, ``+2``, ``HUP``), for curl users."""
    data = read_body(req)
    if not data.strip():
        return default
    try:
        return decode_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise HTTPError(400, "the request body is not UTF-8") from None
    except ValueError as exc:
        if lenient:
            text = data.decode("utf-8").strip()
            if text and len(text) < 64 and not any(c in text for c in "{}[]\"'"):
                return text
        raise HTTPError(400, f"malformed JSON in the request body: {exc}") from None


class StreamResponse:
    """A long-lived answer: the app sends its head at once, then iterates `body`.

    `body` must be an iterator of bytes with a ``close()`` (called by the server at the end,
    or when the client goes away).
    """

    def __init__(self, body, content_type: str = "text/plain; charset=utf-8", status: int = 200,
                 headers: dict | None = None):
        self.body = body
        self.status = status
        self.headers = {"Content-Type": content_type, "Cache-Control": "no-cache",
                        "X-Accel-Buffering": "no", **(headers or {})}
