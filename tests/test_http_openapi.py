"""/openapi.json covers everything the gateway serves: beyond the route table (checked by
test_http_gateway.py), gaffer's routes, the mounted /tasks and /agent, and the websockets,
each of them served at the path the document gives."""

import base64
import os
import re
import socket

from test_http_support import GW, echo_job, gw  # noqa: F401

from zsup.http.openapi import MOUNTED, RESPONSES, WEBSOCKETS
from zsup.http.routes_api import api


def fill(path, values):
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def upgrade_status(g: GW, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((g.host, g.port), 5) as s:
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.split(b"\r\n", 1)[0]


def test_openapi_covers_gaffer_mounts_and_websockets(gw):  # noqa: F811
    doc = gw.get("/openapi.json").json
    ops = {(m.upper(), p): op for p, methods in doc["paths"].items() for m, op in methods.items()}
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))

    # gaffer's short routes and keys: in the document, marked
    for r in api.gaffer.routes:
        assert ops[(r.method, r.openapi_path)].get("x-gaffer") is True, r.path

    # response schemas of the main routes
    for method, path in RESPONSES:
        openapi_path = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
        responses = ops[(method, openapi_path)]["responses"]
        schema = next(iter(v for k, v in responses.items() if k != "default"))
        assert next(iter(schema["content"].values()))["schema"].get("type") == "object"

    # every mounted path is in the document and served by its mount (not "no route")
    values = {"app": "app", "env": "env", "id": 999999, "slug": "nope"}
    for method, path, _, _, _, module in MOUNTED:
        assert ops[(method, path)]["x-mount"] == module
        a = gw.request(method, fill(path, values), b"")
        assert a.status != 405, (method, path, a)
        assert not a.json["error"]["message"].startswith("no route") if a.status >= 400 else True
        assert a.status in (200, 400, 404, 503), (method, path, a)
    assert gw.get("/tasks/").status == 200 and gw.get("/agent/").status == 200

    # every websocket path is in the document, marked, and opens (or is refused before the
    # upgrade for what does not exist, as documented)
    gw.load(echo_job())
    pid = gw.pid_of("default.echo")[0]
    values = {"pid": pid, "pattern": "job.", "label": "stdout", "slug": "nope"}
    for path, _, _ in WEBSOCKETS:
        op = ops[("GET", path)]
        assert op["x-websocket"] is True and "101" in op["responses"]
        status = upgrade_status(gw, fill(path, values) + ("?mode=1" if "channel" in path else ""))
        expected = b"404" if path.startswith("/agent/") else b"101"
        assert status.split(b" ")[1] == expected, (path, status)
