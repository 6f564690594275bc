"""Listening sockets added and removed at run time (issue 16): over the bus (`add_socket`,
`remove_socket`, `sockets`) and HTTP (`/sockets`), used by a job loaded as JSON, kept across a
restart of zsupd, and never removed while a job lists it."""

import os
import socket

import pytest
from conftest import PYTHON, wait_for
from test_http_support import gw  # noqa: F401
from test_sockets import SERVER, ask

from zsup.errors import ZsupError


def server_job(tmp_path, name="srv", sock="rt"):
    server = tmp_path / "server.py"
    server.write_text(SERVER)
    return {"name": name, "cmd": PYTHON, "args": [str(server), "--fd", f"$(socket.{sock})"], "sockets": [sock],
            "graceful_timeout": 5}


def code_of(call):
    with pytest.raises(ZsupError) as info:
        call()
    return info.value.code, info.value.message


def test_add_use_remove_and_restore(zsupd_factory, tmp_path):
    path = tmp_path / "rt.sock"
    d = zsupd_factory(f"[socket:filed]\nbind = unix:{tmp_path}/filed.sock\n")
    row = d.call("add_socket", name="rt", config={"bind": f"unix:{path}", "mode": "600", "backlog": 64})
    assert row["origin"] == "runtime" and row["address"] == f"unix:{path}" and row["jobs"] == []
    d.call("load", config=server_job(tmp_path))
    wait_for(lambda: d.call("pids", name="srv"))
    pid, listen_pid, fds, names, fd = ask(str(path)).split()
    assert (pid, fds, names, fd) == (listen_pid, "1", "rt", "3")
    rows = {r["name"]: r for r in d.call("sockets")}
    assert rows["rt"]["jobs"] == ["default.srv"] and rows["filed"]["origin"] == "file"

    # in use, taken, of the file, unknown, bad: refused, nothing changed
    code, message = code_of(lambda: d.call("remove_socket", name="rt"))
    assert code == "conflict" and "default.srv" in message
    assert code_of(lambda: d.call("add_socket", name="rt", config={"bind": "127.0.0.1:0"}))[0] == "conflict"
    assert code_of(lambda: d.call("add_socket", name="filed", config={"bind": "127.0.0.1:0"}))[0] == "conflict"
    assert code_of(lambda: d.call("remove_socket", name="filed"))[0] == "forbidden"
    assert code_of(lambda: d.call("remove_socket", name="nope"))[0] == "not_found"
    assert code_of(lambda: d.call("add_socket", name="x", config={"bind": "unix:rel.sock"})) == \
        ("bad_request", "bind: a unix socket added at run time needs an absolute path")
    assert code_of(lambda: d.call("add_socket", name="x", config={"bind": "nowhere"}))[0] == "bad_request"
    assert code_of(lambda: d.call("add_socket", name="x", config={"bind": ":1", "color": "red"}))[0] == "bad_request"
    assert sorted(r["name"] for r in d.call("sockets")) == ["filed", "rt"]

    # a restart of zsupd binds it again (before the job, which finds it)
    inode = os.stat(path).st_ino
    d.stop()
    d.start()
    wait_for(lambda: d.call("pids", name="srv"))
    assert ask(str(path)).split()[3] == "rt" and os.stat(path).st_ino != inode
    # a reload keeps it too
    d.call("reload_config")
    assert {r["name"]: r["origin"] for r in d.call("sockets")} == {"filed": "file", "rt": "runtime"}

    d.call("unload", name="srv")
    assert d.call("remove_socket", name="rt") == {"ok": True, "name": "rt"}
    assert not path.exists() and [r["name"] for r in d.call("sockets")] == ["filed"]
    d.stop()
    d.start()
    assert [r["name"] for r in d.call("sockets")] == ["filed"]


def test_sockets_over_http(gw):  # noqa: F811
    a = gw.post("/sockets", {"name": "web", "bind": "127.0.0.1:0", "reuseport": True})
    assert a.status == 201, a
    host, port = a.json["address"].rsplit(":", 1)
    assert a.json["reuseport"] is True and a.json["family"] == "inet"
    gw.load(server_job(gw.tmp_path, sock="web"))
    wait_for(lambda: gw.get("/processes/default.srv/_pids").json["pids"])
    assert ask((host, int(port))).split()[3] == "web"
    assert gw.get("/sockets").json["sockets"][0]["jobs"] == ["default.srv"]
    a = gw.request("DELETE", "/sockets/web")
    assert a.status == 409 and a.json["error"]["code"] == "conflict"
    assert gw.post("/sockets", {"bind": "127.0.0.1:0"}).status == 400
    assert gw.post("/sockets", {"name": "x", "bind": "127.0.0.1:0", "family": "ipx"}).status == 400
    assert gw.request("DELETE", "/sockets/nope").status == 404
    assert gw.request("DELETE", "/jobs/default/srv").status == 200
    assert gw.request("DELETE", "/sockets/web").status == 200

    def refused():  # once the server (which holds its own copy of the fd) is gone too
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return False
        except ConnectionRefusedError:
            return True

    wait_for(refused, message="the socket closed")
    doc = gw.get("/openapi.json").json
    assert {"get", "post"} <= set(doc["paths"]["/sockets"]) and "delete" in doc["paths"]["/sockets/{name}"]
