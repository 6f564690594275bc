"""REST routes for the bus commands: sessions, jobs, processes (gaffer's URL scheme).

Every handler is ``handler(ctx, req, **path_params)`` and returns JSON-able data (answered
with the route's status), a webob Response, or a StreamResponse. Bus errors become HTTP
errors in app.py.
"""

from __future__ import annotations

import copy
from typing import Any

from webob import Response

from zsup import __version__
from zsup.bus.docgen import add_bus_openapi
from zsup.bus.parse import scale_order
from zsup.errors import ZsupError
from zsup.http import gaffer_commands, gaffer_keys_api
from zsup.http import gaffer_compat as gaffer
from zsup.http.routing import RouteTable
from zsup.http.web import HTTPError, json_response, read_json


class _Table(RouteTable):
    """The route table, plus gaffer's short per-pid routes, which are matched first (HEAD
    /{pid} must not fall back to GET) and kept out of ``routes`` (so out of /openapi.json:
    docs/http.md lists them). ``fallback`` routes are tried last, only for a path no other
    route has under any method (pulsar-rest-api's paths: zsup.http.pulsar_api); they are kept
    out of ``routes`` too (docs/tasks.md lists them)."""

    def __init__(self) -> None:
        super().__init__()
        self.gaffer = RouteTable()
        self.fallback = RouteTable()

    def resolve(self, method: str, path: str):
        found, params, allowed = self.gaffer.resolve(method, path)
        if found is not None:
            return found, params, []
        found, params, more = super().resolve(method, path)
        if found is None and not allowed and not more:
            return self.fallback.resolve(method, path)
        return found, params, (allowed + more) if found is None else []


api = _Table()
route = api.route
gaffer_route = api.gaffer.route

def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise HTTPError(400, f"{what}: expected a JSON object")
    return value


def _flag(req, name: str, default: bool | None) -> bool | None:
    value = req.GET.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise HTTPError(400, f"{name}: expected true or false, got {value!r}")


# -- about ---------------------------------------------------------------------------------

@route("GET", "/", "Links to the main resources", tag="about")
def index(ctx, req):
    return {"name": "zsup-http", "version": __version__,
            "links": {name: f"{req.host_url}{path}" for name, path in (
                ("ping", "/ping"), ("version", "/version"), ("sessions", "/sessions"),
                ("jobs", "/jobs"), ("processes", "/processes"), ("pids", "/pids"),
                ("watch", "/watch/{pattern}"), ("streams", "/streams/{pid}/{label}"),
                ("bus", "/bus"), ("openapi", "/openapi.json"), ("plugins", "/_plugin"),
                ("dashboard", "/ui/"))}}


@route("GET", "/ping", "Is zsupd answering? {\"ok\": true} (gaffer's client: OK), or 503",
       tag="about", query={"format": "gaffer: the bare body OK"})
def ping(ctx, req):
    ctx.gate.ping()
    if gaffer.is_gaffer_request(req):
        return Response(body=b"OK", content_type="text/plain")
    return {"ok": True}


@route("GET", "/version", "Versions of the gateway and of zsupd", tag="about")
def version(ctx, req):
    return {"name": "zsup-http", "version": __version__, "zsupd": ctx.gate.version()}


@route("GET", "/openapi.json", "This API, as an OpenAPI 3 document", tag="about")
def openapi(ctx, req):
    # The bus part comes from the declaration (zsup/bus/schema.py); added to a copy, so the
    # cached document is never changed while another thread serializes it.
    return add_bus_openapi(copy.deepcopy(ctx.openapi()))


# -- the bus as is ---------------------------------------------------------------------------

@route("GET", "/bus", "The bus commands zsupd answers", tag="bus")
def bus_commands(ctx, req):
    return {"commands": ctx.gate.commands()}


@route("POST", "/bus/{cmd}", "Run any bus command; the body is its args object",
       tag="bus", body="the command's arguments, a JSON object (empty body: {})")
def bus_command(ctx, req, cmd):
    args = _object(read_json(req, {}), "body")
    return {"result": ctx.gate.request(cmd, args)}


# -- sessions and jobs -----------------------------------------------------------------------

@route("GET", "/sessions", "Session names", tag="jobs")
def sessions(ctx, req):
    return {"sessions": ctx.gate.sessions()}


@route("GET", "/jobs", "Every job (session.name)", tag="jobs")
def jobs(ctx, req):
    return {"jobs": ctx.gate.jobs()}


@route("GET", "/jobs/{session}", "The jobs of one session", tag="jobs")
def session_jobs(ctx, req, session):
    names = ctx.gate.jobs(session=session)
    if not names and session not in ctx.gate.sessions():
        raise HTTPError(404, f"no session {session}")
    return {"session": session, "jobs": names}


@route("POST", "/jobs/{session}", "Load a job into a session (body: the job)", tag="jobs",
       body="the job, as `zsupctl load` takes it: {\"name\", \"cmd\", \"args\", ...}; "
            "gaffer's \"start\": false loads it stopped",
       query={"start": "false: load without starting"}, status=201)
def load_job(ctx, req, session):
    config, start = gaffer.job_body(_object(read_json(req), "body (the job)"))
    start = _flag(req, "start", True if start is None else start)
    return ctx.gate.load(config=config, session=session, start=start)


@route("DELETE", "/jobs/{session}", "Unload every job of a session", tag="jobs")
def unload_session(ctx, req, session):
    return {"unloaded": ctx.gate.unload_session(session=session)}


@route("GET", "/jobs/{session}/{name}", "A job: state, processes, config", tag="jobs",
       query={"format": "gaffer: name as session.name, processes as pids"})
def job_info(ctx, req, session, name):
    return gaffer.job_info(ctx.gate.info(name=name, session=session),
                           gaffer.is_gaffer_request(req))


@route("PUT", "/jobs/{session}/{name}", "Update a job's config (body: the job)", tag="jobs",
       body="the job's new config; `name` may be left out",
       query={"start": "true/false: start or stop it as well"})
def update_job(ctx, req, session, name):
    config, start = gaffer.job_body(_object(read_json(req), "body (the job)"))
    if config.setdefault("name", name) != name:
        raise HTTPError(400, f"the body names job {config['name']!r}, the URL {name!r}")
    return ctx.gate.update(config=config, session=session,
                         start=_flag(req, "start", start))


@route("DELETE", "/jobs/{session}/{name}", "Unload a job (its processes stop)", tag="jobs")
def unload_job(ctx, req, session, name):
    return ctx.gate.unload(name=name, session=session)


@route("GET", "/jobs/{session}/{name}/config", "A job's config, as `load` takes it", tag="jobs")
def job_config(ctx, req, session, name):
    return ctx.gate.get(name=name, session=session)


@route("GET", "/jobs/{session}/{name}/state", "Is the job active? (gaffer's client: 1 or 0)",
       tag="jobs", query={"format": "gaffer: the bare number 1 or 0"})
def job_state(ctx, req, session, name):
    info = ctx.gate.info(name=name, session=session)
    if gaffer.is_gaffer_request(req):
        # gaffer's client compares the body with b"1": no trailing newline
        return Response(body=b"1" if info["active"] else b"0", content_type="application/json")
    return {"job": info["job"], "active": info["active"], "state": info["state"]}


_STATE_ACTIONS = {"1": "start_job", "start": "start_job", "0": "stop_job", "stop": "stop_job",
                  "2": "restart_job", "restart": "restart_job", "reload": "reload",
                  "rolling": "rolling_restart"}


@route("POST", "/jobs/{session}/{name}/state", "Start, stop, restart (all at once or rolling) or reload a job",
       tag="jobs",
       body="1 or \"start\", 0 or \"stop\", 2 or \"restart\", \"rolling\", \"reload\" (JSON or a bare "
            "word); or {\"state\": ...}, with \"max_surge\": N for \"rolling\"")
def set_job_state(ctx, req, session, name):
    value = read_json(req, None, lenient=True)
    extra = {}
    if isinstance(value, dict):
        if value.get("max_surge") is not None:
            extra["max_surge"] = value["max_surge"]
        value = value.get("state", value.get("action"))
    if isinstance(value, bool):
        value = int(value)
    action = _STATE_ACTIONS.get(str(value).lower()) if value is not None else None
    if action is None:
        raise HTTPError(400, "body: expected 1/\"start\", 0/\"stop\", 2/\"restart\", \"rolling\" or \"reload\"")
    if extra and action != "rolling_restart":
        raise HTTPError(400, "max_surge: only with \"rolling\"")
    if action == "stop_job" and gaffer.is_gaffer_request(req):  # gafferd's: one-shots too
        return gaffer_commands.stop_job(ctx.gate, name=name, session=session)
    return ctx.gate.call(action, name=name, session=session, **extra)


@route("GET", "/jobs/{session}/{name}/numprocesses", "How many processes the job keeps", tag="jobs")
def job_numprocesses(ctx, req, session, name):
    info = ctx.gate.info(name=name, session=session)
    return {"job": info["job"], "numprocesses": info["numprocesses"]}


@route("POST", "/jobs/{session}/{name}/numprocesses", "Scale a job", tag="jobs",
       body="{\"scale\": N} or a bare N: an integer adds (or removes) that many; "
            "\"+N\", \"-N\", \"=N\" as strings")
def scale_job(ctx, req, session, name):
    value = read_json(req, None, lenient=True)
    if isinstance(value, dict):
        value = value.get("scale", value.get("n", value.get("numprocesses")))
    order = scale_order(value) if isinstance(value, str) else None
    if isinstance(value, bool) or not (isinstance(value, int) or order):
        raise HTTPError(400, f"scale: expected an integer or \"+N\", \"-N\", \"=N\", got {value!r}")
    # a bare number in text sets the count, as `zsup scale web=3`
    return ctx.gate.scale(name, order if order else value, session=session)


def _signal_from(req) -> Any:
    value = read_json(req, None, lenient=True)
    if isinstance(value, dict):
        value = value.get("signal", value.get("sig"))
    if value is None or isinstance(value, bool) or not isinstance(value, (int, str)):
        raise HTTPError(400, "signal: expected a number or a name such as \"HUP\"")
    return value


@route("POST", "/jobs/{session}/{name}/signal", "Send a signal to every process of a job",
       tag="jobs", body="{\"signal\": \"HUP\"} or a bare name/number")
def signal_job(ctx, req, session, name):
    return ctx.gate.killall(name=name, session=session, sig=_signal_from(req))


@route("POST", "/jobs/{session}/{name}/commit", "Start a one-shot process of the job", tag="jobs",
       body="optional {\"graceful_timeout\": s, \"env\": {...}}", status=201)
def commit_job(ctx, req, session, name):
    body = _object(read_json(req, {}), "body")
    unknown = set(body) - {"graceful_timeout", "env"}
    if unknown:
        raise HTTPError(400, f"body: unknown field(s) {', '.join(sorted(unknown))}")
    # gaffer's client sends null for "the job's own" and {} for "no extra environment"
    body = {k: v for k, v in body.items() if v is not None}
    return ctx.gate.commit(name=name, session=session, **body)


@route("GET", "/jobs/{session}/{name}/stats", "CPU and memory of a job's processes", tag="jobs")
def job_stats(ctx, req, session, name):
    return gaffer.job_stats(ctx.gate.stats(name=name, session=session))


@route("GET", "/jobs/{session}/{name}/pids", "zsup pids of a job's processes", tag="jobs")
def job_pids(ctx, req, session, name):
    return {"pids": ctx.gate.pids(name=name, session=session)}


# -- processes --------------------------------------------------------------------------------

@route("GET", "/pids", "Every running process's zsup pid", tag="processes")
def all_pids(ctx, req):
    return {"pids": ctx.gate.pids()}


@route("GET", "/processes", "A summary per job (what `zsupctl status` shows)", tag="processes")
def processes(ctx, req):
    return {"processes": ctx.gate.status()}


@route("GET", "/processes/{name}/_pids", "zsup pids of a job (name or session.name)",
       tag="processes")
def name_pids(ctx, req, name):
    return {"pids": ctx.gate.pids(name=name)}


def _process(ctx, req, pid: int) -> dict:
    proc = ctx.gate.get_process(pid=pid)
    try:
        config = ctx.gate.get(name=proc["name"], session=proc["session"])
    except ZsupError:  # its job was unloaded since
        config = None
    return gaffer.process_info(proc, config, gaffer.is_gaffer_request(req))


@route("GET", "/processes/{pid:int}", "One process (running or recently exited)", tag="processes",
       query={"format": "gaffer: name as session.name"})
def process_info(ctx, req, pid):
    return _process(ctx, req, pid)


@gaffer_route("HEAD", "/{pid:int}", "200 while the process runs, 404 once it exited",
       tag="processes")
def process_alive(ctx, req, pid):
    proc = ctx.gate.get_process(pid=pid)
    return json_response({}, 200 if proc.get("state") != "exited" else 404)


@route("GET", "/{pid:int}", "One process (gaffer's short form of /processes/{pid})",
       tag="processes", query={"format": "gaffer: name as session.name"})
def process_info_short(ctx, req, pid):
    return _process(ctx, req, pid)


@gaffer_route("DELETE", "/{pid:int}", "Stop one process (gaffer's short form)", tag="processes",
       status=202)
def stop_process_short(ctx, req, pid):
    return ctx.gate.stop_process(pid=pid)


@gaffer_route("POST", "/{pid:int}/signal", "Send a signal to one process (gaffer's short form)",
       tag="processes", body="{\"signal\": \"HUP\"} or a bare name/number", status=202)
def signal_process_short(ctx, req, pid):
    return ctx.gate.kill(pid=pid, sig=_signal_from(req))


@gaffer_route("GET", "/{pid:int}/stats", "{\"stats\": CPU and memory of one process}",
       tag="processes")
def process_stats_short(ctx, req, pid):
    return {"stats": ctx.gate.process_stats(pid=pid)}


@route("DELETE", "/processes/{pid:int}", "Stop one process (a kept-alive job replaces it)",
       tag="processes")
def stop_process(ctx, req, pid):
    return ctx.gate.stop_process(pid=pid)


@route("POST", "/processes/{pid:int}/signal", "Send a signal to one process", tag="processes",
       body="{\"signal\": \"HUP\"} or a bare name/number")
def signal_process(ctx, req, pid):
    return ctx.gate.kill(pid=pid, sig=_signal_from(req))


@route("GET", "/processes/{pid:int}/stats", "CPU and memory of one process (and children)",
       tag="processes")
def process_stats(ctx, req, pid):
    return ctx.gate.process_stats(pid=pid)


gaffer_keys_api.register(gaffer_route)  # gaffer's /auth, /keys, /users
from zsup.http import pulsar_api  # noqa: E402,F401  (registers pulsar-rest-api's paths)
