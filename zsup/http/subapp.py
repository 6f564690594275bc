"""What the bus-command sub-apps (tasks_api at /tasks, agent_api at /agent) share.

These apps raise zsup's own errors (ZsupError: BadRequest, NotFound... or whatever zsupd
answered) rather than web.py's HTTPError, take form or JSON parameters, build absolute links
from their mount point and answer every document with ``Cache-Control: no-store``. That is
their contract, not the gateway's, so it lives here, built on web.py's JSON answers.
"""

from __future__ import annotations

from typing import Any, Callable

from webob import Request, Response

from zsup.bus.protocol import decode_json
from zsup.errors import BadRequest, ZsupError
from zsup.http import web

__all__ = ["HTTP_STATUS", "MethodNotAllowed", "SubApp", "check_method", "error_response",
           "json_response", "mount_base", "number", "params", "run"]

HTTP_STATUS = web.STATUS_BY_CODE
NO_STORE = {"Cache-Control": "no-store"}


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    """web.json_response, never cached."""
    return web.json_response(body, status, {**NO_STORE, **(headers or {})})


def error_response(code: str, message: str, status: int | None = None,
                   headers: dict | None = None) -> Response:
    """``{"error": {"code", "message"}}``; the code is kept as given (zsupd may send its own),
    the status from it (500 when unknown) unless `status` says."""
    return web.error_response(web.HTTPError(status or HTTP_STATUS.get(code, 500), message, code,
                                            {**NO_STORE, **(headers or {})}))


class MethodNotAllowed(ZsupError):
    code = "bad_request"  # with status 405 and Allow: the bus's codes only (docs/http.md)

    def __init__(self, allowed: list[str]):
        super().__init__(f"method not allowed here (allowed: {', '.join(allowed)})")
        self.allowed = allowed


def params(req: Request) -> dict:
    """A request's parameters: a JSON object body, or form fields, with the query string."""
    out = dict(req.GET.items())
    if req.method in ("POST", "PUT"):
        ctype = (req.content_type or "").lower()
        body = req.body
        if ctype == "application/json" or (not ctype and body.lstrip().startswith(b"{")) or \
                (ctype == "text/plain" and body.lstrip().startswith(b"{")):
            try:
                data = decode_json(body.decode("utf-8")) if body.strip() else {}
            except (UnicodeDecodeError, ValueError) as exc:
                raise BadRequest(f"body: not valid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise BadRequest("body: expected a JSON object")
            out.update(data)
        else:
            out.update(req.POST.items())
    return out


def mount_base(req: Request, public_base: Callable[[Request], str]) -> str:
    """The absolute URL of the mount point. `public_base(req)` may give it whole, or only
    the gateway's `scheme://host[:port]`: then the mount's path (SCRIPT_NAME) is added."""
    base = public_base(req).rstrip("/")
    script = req.script_name.rstrip("/")
    if script and not base.endswith(script):
        base += script
    return base


def check_method(req: Request, *allowed: str) -> None:
    if req.method not in allowed and not (req.method == "HEAD" and "GET" in allowed):
        raise MethodNotAllowed(list(allowed))


def run(handler: Callable[[Request], Response], environ, start_response):
    """Answer a request, turning any ZsupError (ours or zsupd's) into a JSON error."""
    req = Request(environ)
    try:
        resp = handler(req)
    except MethodNotAllowed as exc:
        resp = error_response(exc.code, exc.message, 405, {"Allow": ", ".join(exc.allowed)})
    except ZsupError as exc:
        resp = error_response(exc.code, exc.message)
    return resp(environ, start_response)


def number(value, name: str, default: float, low: float, high: float) -> float:
    if value in (None, ""):
        return default
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}: expected a number, got {value!r}") from None
    if result != result or result < low:
        raise BadRequest(f"{name}: must be >= {low:g}")
    return min(result, high)


class SubApp:
    """A WSGI app over the gateway's BusGate: `route(req)` answers, ZsupErrors become JSON."""

    def __init__(self, gate, public_base: Callable[[Request], str]):
        self.gate = gate
        self.public_base = public_base

    def __call__(self, environ, start_response):
        return run(self.route, environ, start_response)

    def route(self, req: Request) -> Response:
        raise NotImplementedError
