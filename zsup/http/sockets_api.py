"""REST routes for zsupd's listening sockets ([socket:NAME], docs/config.md): list, add, remove.

Each maps to one bus command (`sockets`, `add_socket`, `remove_socket`, zsup/bus/schema.py);
bus errors become HTTP errors in app.py (`conflict` 409 for a socket a job uses, `forbidden`
403 for one of the config file, `not_found` 404).
"""

from __future__ import annotations

from zsup.http.routes_api import route
from zsup.http.web import HTTPError, read_json


@route("GET", "/sockets", "The listening sockets zsupd keeps open, with the jobs using them", tag="sockets")
def list_sockets(ctx, req):
    return {"sockets": ctx.gate.request("sockets")}


@route("POST", "/sockets", "Open a listening socket at run time", tag="sockets", status=201,
       body="`{name, bind, backlog, reuseport, mode, owner, family}`: the keys of a [socket:NAME] "
            "section, and its name")
def add_socket(ctx, req):
    body = read_json(req)
    if not isinstance(body, dict):
        raise HTTPError(400, "body: expected a JSON object {name, bind, ...}")
    config = dict(body)
    name = config.pop("name", None)
    if not isinstance(name, str):
        raise HTTPError(400, "name: the socket's name is required")
    return ctx.gate.request("add_socket", {"name": name, "config": config})


@route("DELETE", "/sockets/{name}", "Close a socket added at run time (409 while a job lists it)",
       tag="sockets")
def remove_socket(ctx, req, name):
    return ctx.gate.request("remove_socket", {"name": name})
