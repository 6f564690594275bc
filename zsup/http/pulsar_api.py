"""pulsar-rest-api's own paths beside zsup's ``/tasks/...``, so pulsar clients work unchanged:

    POST /<app>/<env>          action=...   -> {"taskId": N, ...}   (as POST /tasks/<app>/<env>)
    GET  /task/<id>                                                  (as GET /tasks/<id>)
    GET  /task/<id>/state      the long-poll                         (as GET /tasks/<id>/state)
    GET|POST /task/<id>/kill                                         (as .../tasks/<id>/kill)

They are served by the task API's app (the ``/tasks`` mount; 404 when it is not there), with
the same answers (its links point at ``/tasks/...``). ``POST /<app>/<env>`` is a *fallback*
route: it answers only when no other route has that path under any method, so an app cannot
shadow ``/jobs/<session>``, ``/<pid>/signal``, ``/keys/...`` and the like, and an app named
after one of zsup's first path segments is reachable only as ``/tasks/<app>/<env>``. All four
are in routes_api's fallback table, so out of /openapi.json (docs/tasks.md lists them).
"""

from __future__ import annotations

from zsup.http.routes_api import api
from zsup.http.web import HTTPError

TASKS = "/tasks"


def _delegate(ctx, req, path: str):
    """The task API's answer for `path` (relative to its mount), as a WSGI app."""
    sub = ctx._mount(TASKS)
    if sub is None:
        raise HTTPError(404, "the task API is not installed")

    def app(environ, start_response):
        req.script_name += TASKS
        req.path_info = path
        release = ctx.acquire_stream()  # the long-poll holds its thread, as under /tasks
        try:
            return sub(environ, start_response)
        finally:
            release()
    return app


@api.fallback.route("POST", "/{app}/{env}", "pulsar-rest-api: create a task (as POST /tasks/{app}/{env})",
                    tag="tasks")
def create(ctx, req, app, env):
    return _delegate(ctx, req, f"/{app}/{env}")


@api.fallback.route("GET", "/task/{id:int}", "pulsar-rest-api: a task (as GET /tasks/{id})", tag="tasks")
def get(ctx, req, id):  # noqa: A002 - pulsar's name
    return _delegate(ctx, req, f"/{id}")


@api.fallback.route("GET", "/task/{id:int}/state", "pulsar-rest-api: long-poll (as GET /tasks/{id}/state)",
           tag="tasks")
def state(ctx, req, id):  # noqa: A002
    return _delegate(ctx, req, f"/{id}/state")


for _method in ("GET", "POST"):
    api.fallback.route(_method, "/task/{id:int}/kill", "pulsar-rest-api: kill a task (as /tasks/{id}/kill)",
              tag="tasks")(lambda ctx, req, id: _delegate(ctx, req, f"/{id}/kill"))
