"""One route table: the router matches requests with it and /openapi.json is generated from it.

A route is declared once, with the ``@route`` decorator of a ``RouteTable``::

    @api.route("GET", "/jobs/{session}/{name}", "A job's state", tag="jobs")
    def job_info(ctx, req, session, name): ...

Path templates use ``{name}`` (one segment, any text), ``{name:int}`` (digits) and
``{name:path}`` (the rest of the path, possibly empty, slashes included). An ``int`` of more
than 18 digits matches, and raises NotFound (404): no id is that large.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from zsup.errors import NotFound

__all__ = ["Route", "RouteTable", "openapi_document"]

_PARAM = re.compile(r"\{(\w+)(?::(int|path))?\}")
_REGEX = {None: r"[^/]+", "int": r"[0-9]+", "path": r".*"}


@dataclass
class Route:
    method: str
    path: str
    summary: str
    handler: Callable
    tag: str = "misc"
    body: str | None = None  # a description of the request body, if the route reads one
    query: dict[str, str] = field(default_factory=dict)  # query parameter -> description
    status: int = 200
    produces: str = "application/json"
    stream: bool = False

    def __post_init__(self) -> None:
        pattern, self.params, self.converters = "", [], {}
        pos = 0
        for m in _PARAM.finditer(self.path):
            pattern += re.escape(self.path[pos:m.start()])
            pattern += f"(?P<{m.group(1)}>{_REGEX[m.group(2)]})"
            self.params.append(m.group(1))
            self.converters[m.group(1)] = m.group(2)
            pos = m.end()
        pattern += re.escape(self.path[pos:])
        self.regex = re.compile(f"^{pattern}$")
        self.openapi_path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", self.path)

    def match(self, path: str) -> dict[str, Any] | None:
        m = self.regex.match(path)
        if m is None:
            return None
        out = {}
        for name, value in m.groupdict().items():
            if self.converters[name] == "int":
                # No id is that large; int() of thousands of digits would even raise.
                if len(value.lstrip("0")) > 18:
                    raise NotFound(f"no {name} {value[:40]}{'...' if len(value) > 40 else ''}")
                value = int(value)
            out[name] = value
        return out


class RouteTable:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str, summary: str, **options) -> Callable:
        def register(fn: Callable) -> Callable:
            self.routes.append(Route(method, path, summary, fn, **options))
            return fn
        return register

    def resolve(self, method: str, path: str) -> tuple[Route | None, dict, list[str]]:
        """(route, params, []) or (None, {}, allowed methods of that path; [] if none)."""
        allowed: list[str] = []
        for r in self.routes:
            params = r.match(path)
            if params is None:
                continue
            if r.method == method or (method == "HEAD" and r.method == "GET"):
                return r, params, []
            allowed.append(r.method)
        return None, {}, allowed


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string", "enum": ["bad_request", "not_found", "conflict", "forbidden",
                                            "unavailable", "internal"]},
        "message": {"type": "string"}}, "required": ["code", "message"]}},
}


def openapi_document(routes: list[Route], title: str, version: str, description: str = "") -> dict:
    paths: dict[str, dict] = {}
    for r in routes:
        params = []
        for name in r.params:
            schema = {"type": "integer"} if r.converters[name] == "int" else {"type": "string"}
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
        for name, text in r.query.items():
            params.append({"name": name, "in": "query", "required": False,
                           "description": text, "schema": {"type": "string"}})
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": f"{r.method.lower()}_{r.handler.__name__}",
            "tags": [r.tag],
            "parameters": params,
            "responses": {
                str(r.status): {"description": "success",
                                "content": {r.produces: {"schema": {}}}},
                "default": {"description": "an error",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        if r.body:
            op["requestBody"] = {"description": r.body, "required": False,
                                 "content": {"application/json": {"schema": {}}}}
        paths.setdefault(r.openapi_path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR_SCHEMA},
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
