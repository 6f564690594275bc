"""The gateway's WSGI application: routing, JSON errors, CORS, authentication, mounts.

``GatewayApp(gate, authenticator=None, plugin_dir=None, max_streams=256)`` is a WSGI app and
also gives HTTPServer what it needs: ``websocket_routes`` and ``authorize``; ``threads`` is
the worker pool (``threads``: half for requests that hold their worker while they wait, the
rest for REST, which no waiting request can take; live feeds and websockets hold none).

Order of a request: the ``access_token`` query parameter is taken out of the environ (so no
route, mounted app or log line sees it) -> ``OPTIONS`` (CORS preflight, never authenticated)
-> authentication (when a password or tokens file is configured: the ``Authorization``
header, or a bearer token as ``?access_token=``; 401 otherwise) -> gaffer's ``X-Api-Key``
when zsupd's config has ``require_key`` (zsup.http.gaffer_keys_api) -> mounted sub-apps
(``/tasks`` from ``zsup.http.tasks_api``, ``/agent`` from ``zsup.http.agent_api``, when those
modules exist) -> the route table (routes_api, streams, plugins). Every answer carries the
CORS headers; every error is ``{"error": {"code", "message"}}`` with a bus code; an
unexpected exception is logged and answered 500 without details.

The dashboard's files under ``/ui/`` (zsup.http.ui_routes) are answered right after the
``access_token`` is taken out, before OPTIONS and authentication: they hold no data, and
the page authenticates the calls it makes.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

from webob import Request, Response

from zsup import __version__
from zsup.errors import ZsupError
from zsup.http import gaffer_keys_api, ui_routes
from zsup.http import plugins as _plugins  # noqa: F401  (registers its routes)
from zsup.http import sockets_api as _sockets_api  # noqa: F401  (registers its routes)
from zsup.http import streams as _streams  # noqa: F401  (registers its routes)
from zsup.http.auth import Authenticator, Throttled, strip_access_token
from zsup.http.busgate import BusGate
from zsup.http.cluster_api import cluster
from zsup.http.metrics import metrics_response
from zsup.http.openapi import gateway_openapi
from zsup.http.routes_api import api
from zsup.http.streams import Cursors
from zsup.http.web import HTTPError, StreamResponse, error_response, json_response
from zsup.http.websockets import websocket_route

__all__ = ["GatewayApp", "MOUNTS"]

log = logging.getLogger("zsup.http")

#: prefix -> module that may provide ``make_app(gate, public_base)``.
MOUNTS = {"/tasks": "zsup.http.tasks_api", "/agent": "zsup.http.agent_api"}

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID, X-Api-Key, X-Requested-With",
    "Access-Control-Expose-Headers": "Location, Content-Type",
    "Access-Control-Max-Age": "86400",
}


def public_base(req: Request) -> str:
    """The gateway's base URL as the client sees it (``scheme://host[:port]``, no slash)."""
    return req.host_url


def _optional_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def _undecodable(environ: dict) -> str | None:
    """"path" or "query string" when that part of the request, once %-decoded, is not UTF-8
    (webob would raise deep inside a route); None when both are fine. WSGI hands them over as
    latin-1 strings of the raw bytes (PEP 3333)."""
    for key, what in (("PATH_INFO", "path"), ("QUERY_STRING", "query string")):
        value = environ.get(key) or ""
        try:
            raw = value.encode("latin-1")
            if key == "QUERY_STRING":
                raw = unquote_to_bytes(raw.replace(b"+", b" "))
            raw.decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return what
    return None


class GatewayApp:
    def __init__(self, gate: BusGate, authenticator: Authenticator | None = None,
                 plugin_dir: str | None = None, max_streams: int = 10000, threads: int = 32):
        self.gate = gate
        self.authenticator = authenticator or Authenticator()
        self.plugin_dir = plugin_dir
        self.max_streams = max_streams
        #: Requests that hold their worker while open (longpolls, mounted apps; live feeds and
        #: websockets leave theirs for zsup.http.hub): at most this many at once.
        self.held_threads = max(1, threads // 2)
        self.rest_threads = max(1, threads - self.held_threads)
        self.cursors = Cursors()
        self._slots = threading.BoundedSemaphore(max_streams)
        self._held = threading.BoundedSemaphore(min(max_streams, self.held_threads))
        self.open_streams = 0
        self._count_lock = threading.Lock()
        self._mounts: dict[str, Any] = {}
        self._mounts_lock = threading.Lock()
        self._openapi: dict | None = None
        #: set by whoever runs the HTTPServer: how many websockets are open (for /metrics)
        self.count_websockets: Callable[[], int] | None = None
        #: the fleet for /cluster/* (zsup.http.cluster_api), set by zsup-http's --cluster
        self.fleet = None

    @property
    def threads(self) -> int:
        return min(self.max_streams, self.held_threads) + self.rest_threads

    # -- hooks for HTTPServer

    def authorize(self, headers) -> bool:
        # HTTPServer passes webob's EnvironHeaders, whose ``environ`` is the upgrade request's
        # environ: that is where ``?access_token=`` is (browsers cannot set headers on a
        # WebSocket). It is taken out of the environ here, before HTTPServer reads the query
        # string for websocket_routes() and the websocket's ``query_string``.
        environ = getattr(headers, "environ", None)
        tokens = strip_access_token(environ) if isinstance(environ, dict) else []
        authorization = headers.get("Authorization") or headers.get("authorization")
        client = environ.get("REMOTE_ADDR", "") if isinstance(environ, dict) else ""
        try:
            return self.authenticator.check_request(authorization, tokens, client)
        except Throttled:
            return False  # the upgrade is refused (401): HTTPServer's hook says yes or no

    def websocket_routes(self, path: str, query: str, headers) -> Callable | None:
        try:
            if not gaffer_keys_api.websocket_allowed(self, path, headers):
                return None
            if path.startswith("/agent/"):
                module = _optional_module(MOUNTS["/agent"])
                hook = getattr(module, "websocket_route", None)
                return hook(self.gate, path, query) if hook else None
            return websocket_route(self.gate, path, query)
        except ZsupError as exc:
            log.info("no websocket at %s: %s", path, exc)
            return None

    # -- stream slots

    def acquire_stream(self, holds_thread: bool = True) -> Callable[[], None]:
        """Take one of `max_streams` slots (503 when none is left); returns its release.
        A stream that `holds_thread` also takes one of `held_threads` (503 when none)."""
        if holds_thread and not self._held.acquire(blocking=False):
            raise HTTPError(503, f"too many open long-polls ({self.held_threads}); try again later")
        if not self._slots.acquire(blocking=False):
            if holds_thread:
                self._held.release()
            raise HTTPError(503, f"too many open streams ({self.max_streams}); try again later")
        with self._count_lock:
            self.open_streams += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._count_lock:
                if released:
                    return
                released = True
                self.open_streams -= 1
            self._slots.release()
            if holds_thread:
                self._held.release()
        return release

    def openapi(self) -> dict:
        if self._openapi is None:
            doc = gateway_openapi(api.routes, api.gaffer.routes, "zsup HTTP gateway",
                                  __version__, "REST, stream feeds, events and websockets of "
                                  "zsupd; see docs/http.md.")
            for prefix, module in MOUNTS.items():
                doc.setdefault("x-mounts", {})[prefix] = module
            self._openapi = doc
        return self._openapi

    # -- WSGI

    def __call__(self, environ: dict, start_response: Callable):
        def with_cors(status, headers, exc_info=None):
            present = {name.lower() for name, _ in headers}
            headers = list(headers) + [(k, v) for k, v in CORS_HEADERS.items()
                                       if k.lower() not in present]
            return start_response(status, headers, exc_info)

        bad = _undecodable(environ)
        if bad:
            return error_response(HTTPError(400, f"the {bad} is not valid UTF-8"))(environ, with_cors)
        access_tokens = strip_access_token(environ)
        req = Request(environ)
        try:
            return self._handle(req, environ, with_cors, access_tokens)
        except HTTPError as err:
            return error_response(err)(environ, with_cors)
        except ZsupError as exc:
            return error_response(HTTPError.from_bus(exc))(environ, with_cors)
        except Exception:
            log.exception("error in %s %r", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return error_response(HTTPError(500, "internal error in the gateway (logged)",
                                            "internal"))(environ, with_cors)

    def _handle(self, req: Request, environ: dict, start_response: Callable,
                access_tokens: list[str]):
        if ui_routes.is_ui_path(req.path_info or "/") and req.method != "OPTIONS":
            return ui_routes.serve(req)(environ, start_response)  # static, no secrets: no auth
        if req.method == "OPTIONS":
            resp = Response(status=204)
            resp.headers["Allow"] = CORS_HEADERS["Access-Control-Allow-Methods"]
            return resp(environ, start_response)
        try:
            allowed = self.authenticator.check_request(req.headers.get("Authorization"), access_tokens,
                                                       environ.get("REMOTE_ADDR", ""))
        except Throttled as exc:
            raise HTTPError(exc.status, exc.message, "unavailable",
                            {"Retry-After": str(exc.retry_after)}) from None
        if not allowed:
            challenge = ", ".join(f'{scheme} realm="zsup"' for scheme in self.authenticator.schemes)
            raise HTTPError(401, "authentication required", "forbidden",
                            {"WWW-Authenticate": challenge})
        path = req.path_info or "/"
        gaffer_keys_api.enforce(self, req, path)  # gaffer's X-Api-Key, when require_key is on
        if path == "/metrics" and req.method in ("GET", "HEAD"):  # Prometheus (docs/metrics.md)
            return metrics_response(self)(environ, start_response)
        for prefix in MOUNTS:
            if path == prefix or path.startswith(prefix + "/"):
                sub = self._mount(prefix)
                if sub is not None:
                    req.script_name += prefix
                    req.path_info = path[len(prefix):]
                    # A mounted app may hold its thread (the task long-poll waits up to its
                    # timeout): it takes a stream slot so REST keeps its reserved threads.
                    release = self.acquire_stream()
                    try:
                        return sub(environ, start_response)
                    finally:
                        release()
        table = cluster if path == "/cluster" or path.startswith("/cluster/") else api
        route, params, allowed = table.resolve(req.method, path)
        if route is None:
            if allowed:
                raise HTTPError(405, f"{req.method} is not allowed on {path} "
                                     f"(allowed: {', '.join(sorted(set(allowed)))})",
                                headers={"Allow": ", ".join(sorted(set(allowed)))})
            raise HTTPError(404, f"no route {req.method} {path}")
        result = route.handler(self, req, **params)
        if isinstance(result, StreamResponse):
            return self._stream(result, start_response)
        if callable(result):  # a webob Response, FileApp or any WSGI app
            return result(environ, start_response)
        return json_response(result, route.status)(environ, start_response)

    @staticmethod
    def _stream(result: StreamResponse, start_response: Callable):
        status = f"{result.status} {'OK' if result.status == 200 else ''}".strip()
        write = start_response(status, list(result.headers.items()))
        try:
            write(b"")  # the head goes out now: a client knows the stream is open
        except Exception:
            result.body.close()
            raise
        return result.body

    def _mount(self, prefix: str):
        with self._mounts_lock:
            if prefix not in self._mounts:
                module = _optional_module(MOUNTS[prefix])
                make_app = getattr(module, "make_app", None) if module else None
                self._mounts[prefix] = make_app(self.gate, public_base) if make_app else None
            return self._mounts[prefix]
