"""The remote agent API (smartmob-agent) over HTTP and a websocket; speaks only bus commands.

Mounted by the gateway (at /agent); paths here are relative to the mount. Every link in
every document is absolute (`public_base(req)` + path; `ws://`/`wss://` for attach):

    GET  /                          {"create": URL, "list": URL}
    POST /create-process            {app, node, process_type, source_url, env} -> 201, status
                                    (503 with Retry-After when too many setups are under way)
    GET  /list-processes            {"processes": [status, ...]}
    GET  /process-status/<slug>     status
    POST /delete-process/<slug>     {} -> 200 {"slug", "state": "deleted"}
    ws   /attach-console/<slug>     each line of output as a text frame

A status document: app, node, slug, state, reason, process_type, job, pids, and the links
attach, details, status (the same link as details: the seed names it both ways) and delete.

`websocket_route(gate, path, query)` answers the websocket upgrade for the gateway's
`websocket_routes` hook: a factory for `attach-console/<slug>`, None elsewhere.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Callable
from urllib.parse import quote

from webob import Request, Response
from ws4py.websocket import WebSocket

from zsup.bus.topics import job_io_prefix
from zsup.errors import BadRequest, NotFound, ZsupError
from zsup.http.subapp import SubApp, check_method, error_response, json_response, mount_base, params

RETRY_AFTER = 5  # seconds, in a 503 answer to create-process
ATTACH_RE = re.compile(r"(?:^|/)attach-console/([^/]+)/?$")


def links(doc: dict, base: str) -> dict:
    slug = quote(doc["slug"], safe="")
    ws_base = "ws" + base[4:] if base.startswith("http") else base
    details = f"{base}/process-status/{slug}"
    return {**doc, "attach": f"{ws_base}/attach-console/{slug}", "details": details, "status": details,
            "delete": f"{base}/delete-process/{slug}"}


class AgentApp(SubApp):
    def route(self, req: Request) -> Response:
        parts = [p for p in req.path_info.split("/") if p]
        base = mount_base(req, self.public_base)
        if not parts:
            check_method(req, "GET")
            return json_response({"create": f"{base}/create-process", "list": f"{base}/list-processes"})
        head, rest = parts[0], parts[1:]
        if head == "create-process" and not rest:
            check_method(req, "POST")
            return self.create(req, base)
        if head == "list-processes" and not rest:
            check_method(req, "GET")
            return json_response({"processes": [links(p, base) for p in self.gate.agent_list()]})
        if head == "process-status" and len(rest) == 1:
            check_method(req, "GET")
            return json_response(links(self.gate.agent_status(slug=rest[0]), base))
        if head == "delete-process" and len(rest) == 1:
            check_method(req, "POST", "DELETE")
            return json_response(self.gate.agent_delete(slug=rest[0]))
        if head == "attach-console" and len(rest) == 1:
            self.gate.agent_status(slug=rest[0])  # 404 for an unknown process
            resp = json_response({"error": {"code": "upgrade_required",
                                            "message": "attach-console is a websocket: connect with ws://"}}, 426)
            return resp  # no Upgrade header: WSGI forbids hop-by-hop headers (waitress: 500)
        raise NotFound(f"no such resource: {req.path_info}")

    def create(self, req: Request, base: str) -> Response:
        data = params(req)
        args = {}
        for key in ("app", "node", "process_type", "source_url"):
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise BadRequest(f"{key}: required (a string)")
            args[key] = value
        env = data.get("env") or {}
        if not isinstance(env, dict):
            raise BadRequest("env: expected an object of names to strings")
        args["env"] = env
        try:
            doc = links(self.gate.agent_create(**args), base)
        except ZsupError as exc:
            if exc.code != "unavailable":
                raise
            # too many setups at once (docs/agent.md, "Limits"), or zsupd down: both pass
            return error_response(exc.code, exc.message, headers={"Retry-After": str(RETRY_AFTER)})
        return json_response(doc, 201, {"Location": doc["details"]})


class ConsoleSocket(WebSocket):
    """Sends each line a process writes (stdout and stderr, every restart) as a text frame.

    A thread of its own reads the bus subscription and sends: ws4py's manager thread, which
    serves every websocket, never waits on a slow client here."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, *, gate=None, slug=None, job=None,
                 **kw):
        super().__init__(sock, protocols=protocols, extensions=extensions, environ=environ, **kw)
        self.gate = gate
        self.slug = slug
        self.job = job
        self._stop = threading.Event()
        self._sub = None
        self._thread = None

    def opened(self):
        self._sub = self.gate.subscribe([job_io_prefix(self.job)], maxsize=10000)
        self._thread = threading.Thread(target=self._pump, name=f"zsup-attach-{self.slug}", daemon=True)
        self._thread.start()

    def _pump(self):
        try:
            while not self._stop.is_set() and not self.terminated:
                event = self._sub.get(timeout=0.5)
                if event is None:
                    if self._sub.closed:
                        break
                    continue
                for line in (event.data or b"").splitlines():
                    self.send(line.decode("utf-8", "replace"), binary=False)
        except Exception:
            pass  # the client went away; closed() cleans up
        finally:
            self._sub.close()
            if not self.terminated:
                try:
                    self.close(1001, "console closed")
                except Exception:
                    pass

    def received_message(self, message):
        pass  # the console is output only

    def closed(self, code, reason=None):
        self._stop.set()
        if self._sub is not None:
            self._sub.close()


def websocket_route(gate, path: str, query: str = "", headers=None):
    """The factory for `attach-console/<slug>` (path relative to the mount, or the full
    path), or None when nothing lives at `path` or the process does not exist."""
    match = ATTACH_RE.search(path or "")
    if not match:
        return None
    from urllib.parse import unquote

    slug = unquote(match.group(1))
    try:
        status = gate.agent_status(slug=slug)
    except NotFound:
        return None
    except ZsupError:
        return None
    return functools.partial(ConsoleSocket, gate=gate, slug=slug, job=status["job"])


def make_app(gate, public_base: Callable[[Request], str]) -> AgentApp:
    """The agent API as a WSGI app. `gate` is the gateway's BusGate (call, subscribe);
    `public_base(req)` the absolute URL of the mount point, e.g. "http://127.0.0.1:5000/agent"."""
    return AgentApp(gate, public_base)
