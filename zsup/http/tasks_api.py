"""The task API (pulsar-rest-api) over HTTP: a WSGI app that speaks only bus commands.

Mounted by the gateway (at /tasks); paths here are relative to the mount:

    POST /<app>/<env>          action=...   -> {"taskId": N}
    GET  /                     ?limit=&offset=  tasks, newest first (no output)
    GET  /<id>                 the task with all its output to date
    GET  /<id>/state           ?timeout=30&version=V  long-poll: {"changed": true, "task": ...}
                               or {"changed": false} after the timeout
    GET|POST /<id>/kill        stop the task; the task

Errors: `{"error": {"code", "message"}}` with 400, 404, 405, 409, 503... (docs/tasks.md).

The long-poll subscribes to `task.<id>.update` first, then reads the task's `version` (so no
change falls between the two), and also re-reads the task every POLL_EVERY seconds: a new
subscription takes a moment to reach zsupd (the bus's slow-joiner rule). With `version=V`
the client says which version it has seen, and a task already past it answers at once.
"""

from __future__ import annotations

import time
from typing import Callable

from webob import Request, Response

from zsup.errors import BadRequest, NotFound
from zsup.http.subapp import SubApp, check_method, json_response, mount_base, number, params

DEFAULT_WAIT = 30.0
MAX_WAIT = 120.0
POLL_EVERY = 0.5


def _is_id(text: str) -> bool:
    """ASCII digits that fit in 63 bits (str.isdigit() alone takes "²", which int() refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


class TasksApp(SubApp):
    def route(self, req: Request) -> Response:
        parts = [p for p in req.path_info.split("/") if p]
        if not parts:
            check_method(req, "GET")
            return self.list(req)
        if _is_id(parts[0]) and len(parts) == 1:
            check_method(req, "GET")
            return json_response(self.gate.task_get(id=int(parts[0])))
        if _is_id(parts[0]) and len(parts) == 2 and parts[1] == "state":
            check_method(req, "GET")
            return self.state(req, int(parts[0]))
        if _is_id(parts[0]) and len(parts) == 2 and parts[1] == "kill":
            check_method(req, "GET", "POST")
            return json_response(self.gate.task_kill(id=int(parts[0])))
        if len(parts) == 2:
            check_method(req, "POST")
            return self.create(req, parts[0], parts[1])
        raise NotFound(f"no such resource: {req.path_info}")

    def create(self, req: Request, app: str, env: str) -> Response:
        action = params(req).get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("action: the process type to run is required")
        task = self.gate.task_create(app=app, env=env, action=action)
        base = mount_base(req, self.public_base)
        return json_response({"taskId": task["id"], "status": task["status"], "url": f"{base}/{task['id']}",
                              "state": f"{base}/{task['id']}/state"})

    def list(self, req: Request) -> Response:
        limit = int(number(req.GET.get("limit"), "limit", 20, 0, 500))
        offset = int(number(req.GET.get("offset"), "offset", 0, 0, 2**62))
        result = self.gate.task_list(limit=limit, offset=offset)
        base = mount_base(req, self.public_base)
        for task in result["tasks"]:
            task["url"] = f"{base}/{task['id']}"
        nxt = offset + limit
        result["next"] = f"{base}/?limit={limit}&offset={nxt}" if nxt < result["total"] and limit else None
        result["previous"] = f"{base}/?limit={limit}&offset={max(0, offset - limit)}" if offset else None
        return json_response(result)

    def state(self, req: Request, task_id: int) -> Response:
        timeout = number(req.GET.get("timeout"), "timeout", DEFAULT_WAIT, 0, MAX_WAIT)
        seen = req.GET.get("version")
        deadline = time.monotonic() + timeout
        with self.gate.subscribe([f"task.{task_id}.update"], maxsize=100) as sub:
            task = self.gate.task_get(id=task_id, since_output=2**62)  # no output: just the version
            if seen not in (None, ""):
                baseline = int(number(seen, "version", 0, 0, 2**62))
            else:
                baseline = task["version"]
            while task["version"] <= baseline:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return json_response({"changed": False})
                event = sub.get(timeout=min(POLL_EVERY, remaining))
                if event is not None and event.msg.get("version", 0) <= baseline:
                    continue
                task = self.gate.task_get(id=task_id, since_output=2**62)
        return json_response({"changed": True, "task": self.gate.task_get(id=task_id)})


def make_app(gate, public_base: Callable[[Request], str]) -> TasksApp:
    """The task API as a WSGI app. `gate` is the gateway's BusGate (call, subscribe);
    `public_base(req)` the absolute URL of the mount point, e.g. "http://127.0.0.1:5000/tasks"."""
    return TasksApp(gate, public_base)
