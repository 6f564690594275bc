"""zsup-lookupd: where zsupd nodes announce themselves, and clients find the node running a job.

gaffer's ``gaffer_lookupd`` kept the topology of a cluster of gafferd nodes; this is the same
idea over plain HTTP and JSON (docs/lookupd.md):

- A node registers with ``POST /nodes`` (or ``PUT /nodes/<node_id>``): its id, a name, the
  URLs where it can be reached, its version and the jobs (``session.name``) it has loaded.
  Sending the same document again is the heartbeat; ``DELETE /nodes/<node_id>`` says goodbye.
- A node that sends nothing for its ``ttl`` seconds is forgotten: there is no reaper thread,
  every request first drops the nodes whose time ran out, so what a client reads is never stale.
- Clients ask ``GET /findJob?name=web`` or ``GET /findSession?session=app`` and get the nodes.

The registry is memory only, on purpose: nodes re-send everything with every heartbeat, so a
restarted lookupd knows the whole cluster again after one heartbeat interval.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from typing import Iterable

from webob import Request, Response

from zsup import __version__
from zsup.lookup.changes import feed
from zsup.lookup.registry import (
    Registry,
    RegistryError,
    _bad,
    job_name,
    session_name,
)

__all__ = ["LookupApp", "TokenFile"]

log = logging.getLogger("zsup.lookupd")
MAX_BODY = 1024 * 1024

class TokenFile:
    """Bearer tokens, one per line (``#`` comments and blank lines skipped).

    The file is read again when its mtime or size changes, so tokens can be added or revoked
    without a restart. A file that cannot be read any more lets nobody in (and is logged).
    """

    def __init__(self, path: str):
        from zsup.http.auth import check_private

        check_private(path, "tokens file")  # ValueError: a secret others can read is refused
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._tokens: list[bytes] = []
        self._load()  # raises OSError at start: a missing file is a startup error
        if not self._tokens:
            raise ValueError(f"tokens file {path!r} holds no token")

    def _load(self) -> None:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        with open(self.path, encoding="utf-8") as f:
            tokens = [line.strip().encode("utf-8") for line in f]
        self._tokens = [t for t in tokens if t and not t.startswith(b"#")]
        self._stamp = stamp

    def tokens(self) -> list[bytes]:
        with self._lock:
            try:
                self._load()
            except (OSError, UnicodeDecodeError) as exc:
                if self._stamp is not None:
                    log.error("cannot read tokens file %s: %s; refusing every token", self.path, exc)
                self._stamp, self._tokens = None, []
            return self._tokens

    def check(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = token.strip().encode("utf-8")
        found = False
        for known in self.tokens():  # no early exit: the time taken says nothing of which matched
            found |= hmac.compare_digest(given, known)
        return found


def _json(status: int, body: object, headers: Iterable[tuple[str, str]] = ()) -> Response:
    resp = Response(status=status, content_type="application/json", charset="utf-8")
    resp.body = json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"
    resp.headers["Cache-Control"] = "no-store"
    for key, value in headers:
        resp.headers[key] = value
    return resp


def _error(exc: RegistryError, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return _json(exc.status, {"error": {"code": exc.code, "message": exc.message}}, headers)


class LookupApp:
    """The WSGI application: routes, JSON in and out, optional bearer tokens."""

    def __init__(self, registry: Registry, tokens: TokenFile | None = None, protect_reads: bool = False):
        self.registry = registry
        self.tokens = tokens
        self.protect_reads = protect_reads

    def __call__(self, environ, start_response):
        req = Request(environ)
        try:
            resp = self.handle(req)
        except RegistryError as exc:
            resp = _error(exc, [("WWW-Authenticate", 'Bearer realm="zsup-lookupd"')] if exc.status == 401 else [])
        except Exception:  # a bug must answer JSON, never a traceback
            log.exception("error serving %s %s", req.method, req.path_info)
            resp = _error(RegistryError(500, "internal", "internal error"))
        return resp(environ, start_response)

    def handle(self, req: Request) -> Response:
        path = req.path_info.rstrip("/") or "/"
        method = req.method.upper()
        node_id = None
        if path.startswith("/nodes/"):
            node_id = path[len("/nodes/"):]
            if "/" in node_id:
                raise RegistryError(404, "not_found", f"no such resource {req.path_info!r}")
            methods = {"GET": (self.get_node, False), "PUT": (self.put_node, True),
                       "DELETE": (self.delete_node, True)}
        else:
            methods = self.ROUTES.get(path)
            if methods is None:
                raise RegistryError(404, "not_found", f"no such resource {req.path_info!r}")
            methods = {m: (getattr(self, name), writes) for m, (name, writes) in methods.items()}
        if method == "HEAD" and "GET" in methods:
            method = "GET"
        if method not in methods:
            allowed = ", ".join(sorted(methods))
            return _error(RegistryError(405, "bad_request",
                                        f"{req.method} is not allowed on {path} (allowed: {allowed})"),
                          [("Allow", allowed)])
        handler, writes = methods[method]
        if self.tokens is not None and (writes or self.protect_reads) and path != "/ping":
            if not self.tokens.check(req.headers.get("Authorization")):
                raise RegistryError(401, "forbidden", "a valid bearer token is required")
        return handler(req, node_id) if node_id is not None else handler(req)

    # path -> {method: (handler method name, whether it changes the registry)}
    ROUTES = {
        "/": {"GET": ("index", False)},
        "/ping": {"GET": ("ping", False)},
        "/version": {"GET": ("version", False)},
        "/nodes": {"GET": ("list_nodes", False), "POST": ("post_node", True)},
        "/jobs": {"GET": ("list_jobs", False)},
        "/sessions": {"GET": ("list_sessions", False)},
        "/findJob": {"GET": ("find_job", False)},
        "/findSession": {"GET": ("find_session", False)},
        "/watch": {"GET": ("watch", False)},
    }

    @staticmethod
    def body(req: Request, empty_ok: bool = False) -> object:
        length = req.content_length
        if length is not None and length > MAX_BODY:
            raise RegistryError(413, "bad_request", f"body larger than {MAX_BODY} bytes")
        raw = req.body_file.read(MAX_BODY + 1) if length is None else req.body
        if len(raw) > MAX_BODY:
            raise RegistryError(413, "bad_request", f"body larger than {MAX_BODY} bytes")
        if not raw.strip():
            if empty_ok:
                return {}
            raise _bad("a JSON body is required")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"malformed JSON: {exc}") from None

    @staticmethod
    def param(req: Request, name: str) -> str:
        value = req.GET.get(name)
        if not value:
            raise _bad(f"query parameter {name!r} is required")
        return value

    def index(self, req):
        return _json(200, {"name": "zsup-lookupd", "version": __version__,
                           "endpoints": ["/nodes", "/nodes/<node_id>", "/jobs", "/sessions",
                                         "/findJob?name=", "/findSession?session=", "/watch", "/ping",
                                         "/version"]})

    def ping(self, req):
        return _json(200, {"ping": "pong"})

    def version(self, req):
        return _json(200, {"name": "zsup-lookupd", "version": __version__})

    def list_nodes(self, req):
        return _json(200, {"nodes": self.registry.nodes()})

    def post_node(self, req):
        node, created = self.registry.register(self.body(req))
        return _json(201 if created else 200, {"node": node})

    def get_node(self, req, node_id):
        return _json(200, {"node": self.registry.node(node_id)})

    def put_node(self, req, node_id):
        node, created = self.registry.register(self.body(req, empty_ok=True), node_id)
        return _json(201 if created else 200, {"node": node})

    def delete_node(self, req, node_id):
        return _json(200, self.registry.unregister(node_id))

    def list_jobs(self, req):
        return _json(200, {"jobs": self.registry.jobs()})

    def list_sessions(self, req):
        return _json(200, {"sessions": self.registry.sessions()})

    def find_job(self, req):
        name = job_name(self.param(req, "name"))
        return _json(200, {"job": name, "nodes": self.registry.find_job(name)})

    def find_session(self, req):
        session = session_name(self.param(req, "session"))
        return _json(200, {"session": session, "nodes": self.registry.find_session(session)})

    def watch(self, req):
        """Fleet changes, live: JSON lines, or server-sent events when the client asks for
        ``text/event-stream`` (or ``?format=sse``). zsup.lookup.changes says what is sent."""
        changes = self.registry.changes
        q = changes.subscribe()  # before the snapshot: a change in between is sent, not lost
        if q is None:
            raise RegistryError(503, "unavailable", f"too many open watches ({changes.max_feeds})")
        try:
            snapshot = self.registry.nodes()
        except BaseException:
            changes.unsubscribe(q)
            raise
        sse = req.GET.get("format") == "sse" or "text/event-stream" in req.headers.get("Accept", "")
        resp = Response(status=200, content_type="text/event-stream" if sse else "application/x-ndjson",
                        charset=None)
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Accel-Buffering"] = "no"
        resp.app_iter = feed(changes, q, snapshot, sse, getattr(self.registry, "tick", None))
        return resp
