"""The remote agent (smartmob-agent): a real zsupd, the real BusGate, the WSGI app and its
websocket served by the gateway's HTTP server, archives served by a local http.server."""

import functools
import http.server as httpserver
import io
import json
import os
import queue
import signal
import sys
import tarfile
import threading
import urllib.error
import urllib.request
import zipfile

import pytest
from conftest import alive, mount, wait_for
from ws4py.client.threadedclient import WebSocketClient

from zsup.http import agent_api
from zsup.http.busgate import BusGate
from zsup.http.server import Endpoint, HTTPServer

PYTHON = sys.executable
APP_PY = r'''
import os, sys, time
print("hello", os.environ.get("ZSUP_AGENT_NODE"), os.environ.get("EXTRA"), os.environ.get("FROM_DOTENV"), flush=True)
n = 0
while True:
    n += 1
    print("tick", n, flush=True)
    time.sleep(0.05)
'''
CONFIG = "[zsup]\nagent_max_unpacked = 1M\n"


class Gateway:
    """The agent API served for real, mounted at /agent, websockets on the same port."""

    def __init__(self, zsupd):
        self.gate = BusGate(zsupd.bus, zsupd.pub)
        # public_base as zsup/http/app.py gives it (scheme://host:port); the mount path is added
        app = agent_api.make_app(self.gate, lambda req: req.host_url)

        def routes(path, query, headers):
            if path.startswith("/agent/"):
                return agent_api.websocket_route(self.gate, path[len("/agent"):], query)
            return None

        self.server = HTTPServer(mount("/agent", app), [Endpoint("test", "127.0.0.1:0")], routes, threads=8)
        self.server.start()
        address = self.server.addresses[0]
        self.root = f"http://{address.host}:{address.port}/agent"

    def stop(self):
        self.server.stop()
        self.gate.close()


class Files:
    """A local http.server on 127.0.0.1 serving a folder of archives."""

    def __init__(self, folder):
        handler = functools.partial(Quiet, directory=str(folder))
        self.httpd = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Quiet(httpserver.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Console(WebSocketClient):
    def __init__(self, url):
        super().__init__(url)
        self.lines = queue.Queue()

    def received_message(self, message):
        self.lines.put(message.data.decode())


@pytest.fixture
def setup(tmp_path, zsupd_factory):
    zsupd = zsupd_factory(CONFIG)
    www = tmp_path / "www"
    www.mkdir()
    files = Files(www)
    gw = Gateway(zsupd)
    consoles = []
    try:
        yield zsupd, gw, files, www, consoles
    finally:
        for ws in consoles:
            try:
                ws.close()
            except Exception:
                pass
        gw.stop()
        files.stop()


def http(method, url, body=None, timeout=15):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def add(tf, name, data=b"", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def app_files(top=""):
    return {f"{top}Procfile": f"web: exec {PYTHON} -u app.py\nworker: {PYTHON} -c 'print(1)'\n".encode(),
            f"{top}app.py": APP_PY.encode(), f"{top}.env": b"FROM_DOTENV=dotenv-value\n"}


def make_tar(path, members=None, extra=None, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for name, data in (app_files() if members is None else members).items():
            add(tf, name, data)
        for name, data, attrs in extra or []:
            add(tf, name, data, **attrs)


def make_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def status_of(gw, doc):
    code, body = http("GET", doc["details"])
    assert code == 200, body
    return body


def wait_state(gw, doc, states, timeout=15):
    return wait_for(lambda: (s := status_of(gw, doc))["state"] in states and s, timeout=timeout,
                    message=f"{doc['slug']} in {states}")


def test_walk_through(setup):
    zsupd, gw, files, www, consoles = setup
    # a link that stays inside is fine
    make_tar(www / "app.tar.gz", extra=[("sub/app-link.py", b"", {"type": tarfile.SYMTYPE, "linkname": "../app.py"})])

    # index, then the listing (all links absolute)
    code, index = http("GET", gw.root)
    assert code == 200 and index == {"create": f"{gw.root}/create-process", "list": f"{gw.root}/list-processes"}
    assert http("GET", gw.root + "/")[1] == index
    assert http("GET", index["list"]) == (200, {"processes": []})

    # create
    code, process = http("POST", index["create"], {"app": "myapp", "source_url": f"{files.url}/app.tar.gz",
                                                   "process_type": "web", "node": "web.0",
                                                   "env": {"EXTRA": "extra-value"}})
    assert code == 201, process
    ws_root = "ws" + gw.root[4:]
    assert process["slug"] == "myapp.web.0" and process["app"] == "myapp" and process["node"] == "web.0"
    assert process["attach"] == f"{ws_root}/attach-console/myapp.web.0"
    assert process["details"] == process["status"] == f"{gw.root}/process-status/myapp.web.0"
    assert process["delete"] == f"{gw.root}/delete-process/myapp.web.0"
    assert process["state"] in ("pending", "downloading", "unpacking", "starting", "running")
    code, listing = http("GET", index["list"])
    assert [p["slug"] for p in listing["processes"]] == ["myapp.web.0"]
    assert listing["processes"][0]["details"] == process["details"]
    assert http("POST", index["create"], {"app": "myapp", "source_url": f"{files.url}/app.tar.gz",
                                          "process_type": "web", "node": "web.0"})[0] == 409

    running = wait_state(gw, process, ("running", "failed"))
    assert running["state"] == "running", running
    pid = wait_for(lambda: status_of(gw, process)["pids"], message="a pid")[0]
    # the Procfile's .env and the request's env are both there
    out = wait_for(lambda: zsupd.call("read_output", pid=pid, label="stdout")["lines"], message="output")
    assert out[0]["data"] == "hello web.0 extra-value dotenv-value\n"

    # attach-console: each line a text frame
    ws = Console(process["attach"])
    consoles.append(ws)
    ws.connect()
    first = ws.lines.get(timeout=10)
    assert first.startswith("tick ") and "\n" not in first

    # restarted until deleted: kill the child, another comes
    os_pid = zsupd.call("get_process", pid=pid)["os_pid"]
    os.killpg(os_pid, signal.SIGKILL)
    new_pid = wait_for(lambda: [p for p in status_of(gw, process)["pids"] if p != pid], message="a new pid")[0]
    assert new_pid > pid
    # the console follows the new process too
    wait_for(lambda: ws.lines.get(timeout=5) == "hello web.0 extra-value dotenv-value", timeout=10,
             message="the new process's first line on the console")
    new_os_pid = zsupd.call("get_process", pid=new_pid)["os_pid"]

    # delete: the process stops, its job and files go
    folder = os.path.join(zsupd.state_dir, "agent", "myapp.web.0")
    assert os.path.isfile(os.path.join(folder, "app", "app.py"))
    assert os.readlink(os.path.join(folder, "app", "sub", "app-link.py")) == "../app.py"
    code, body = http("POST", process["delete"], {})
    assert code == 200 and body["state"] == "deleted"
    assert not os.path.exists(folder)
    assert http("GET", process["details"])[0] == 404
    assert http("GET", index["list"])[1] == {"processes": []}
    assert not [j for j in zsupd.call("jobs") if j.startswith("agent.")]
    wait_for(lambda: not alive(new_os_pid), message="the process to stop")
    assert http("POST", process["delete"], {})[0] == 404


def test_zip_and_survives_restarts(setup):
    zsupd, gw, files, www, consoles = setup
    make_zip(www / "app.zip", app_files("myapp-1.0/"))  # one top folder: it is the app's root
    code, process = http("POST", f"{gw.root}/create-process",
                         {"app": "zipped", "source_url": f"{files.url}/app.zip", "process_type": "web",
                          "node": "web.1"})
    assert code == 201
    assert wait_state(gw, process, ("running", "failed"))["state"] == "running"
    pid = wait_for(lambda: status_of(gw, process)["pids"], message="a pid")[0]
    assert wait_for(lambda: zsupd.call("read_output", pid=pid)["lines"])[0]["data"].startswith("hello web.1 None")

    # a gateway restart changes nothing; a zsupd restart brings the process back
    gw.stop()
    gw2 = Gateway(zsupd)
    try:
        process = {**process, "details": process["details"].replace(gw.root, gw2.root)}
        assert status_of(gw2, process)["state"] == "running"
        zsupd.stop()
        zsupd.start()
        assert wait_for(lambda: status_of(gw2, process)["pids"], message="restored")
        assert status_of(gw2, process)["state"] == "running"
        assert http("POST", f"{gw2.root}/delete-process/zipped.web.1", {})[0] == 200
    finally:
        gw2.stop()


BAD = "../../evil.txt"


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink_out", "symlink_chain", "write_through_link",
                                  "hardlink_out", "device", "huge", "not_archive", "missing_url", "zip_dotdot",
                                  "no_procfile", "unknown_type", "bad_scheme"])
def test_bad_archives_fail_safely(setup, tmp_path, case):
    zsupd, gw, files, www, consoles = setup
    outside = tmp_path / "outside"
    outside.mkdir()
    url = f"{files.url}/bad.tar.gz"
    expect = "archive"
    if case == "dotdot":
        make_tar(www / "bad.tar.gz", extra=[(BAD, b"x", {})])
    elif case == "absolute":
        make_tar(www / "bad.tar.gz", extra=[(str(outside / "evil.txt"), b"x", {})])
    elif case == "symlink_out":
        make_tar(www / "bad.tar.gz", extra=[("link", b"", {"type": tarfile.SYMTYPE, "linkname": str(outside)})])
    elif case == "symlink_chain":
        # 'a' looks inside while 'b' does not exist; 'b' -> '.' then makes 'a' resolve outside
        make_tar(www / "bad.tar.gz", extra=[("a", b"", {"type": tarfile.SYMTYPE, "linkname": "b/../outside"}),
                                            ("b", b"", {"type": tarfile.SYMTYPE, "linkname": "."})])
    elif case == "write_through_link":
        make_tar(www / "bad.tar.gz", extra=[("sub/up", b"", {"type": tarfile.SYMTYPE, "linkname": ".."}),
                                            ("sub/up/up/evil.txt", b"x", {})])
    elif case == "hardlink_out":
        make_tar(www / "bad.tar.gz", extra=[("h", b"", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"})])
    elif case == "device":
        make_tar(www / "bad.tar.gz", extra=[("dev", b"", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})])
    elif case == "huge":
        make_tar(www / "bad.tar.gz", extra=[("big.bin", b"\0" * (2 * 1024 * 1024), {})])
    elif case == "not_archive":
        (www / "bad.tar.gz").write_bytes(b"this is not an archive\n" * 10)
    elif case == "missing_url":
        url, expect = f"{files.url}/nothing-here.tar.gz", "404"
    elif case == "zip_dotdot":
        url = f"{files.url}/bad.zip"
        make_zip(www / "bad.zip", {**app_files(), BAD: b"x"})
    elif case == "no_procfile":
        make_tar(www / "bad.tar.gz", members={"app.py": b"print(1)\n"})
        expect = "Procfile"
    elif case == "unknown_type":
        make_tar(www / "bad.tar.gz")
        expect = "no process type"
    elif case == "bad_scheme":
        url, expect = f"file://{tmp_path}/www/bad.tar.gz", "http"
    process_type = "nope" if case == "unknown_type" else "web"
    code, process = http("POST", f"{gw.root}/create-process",
                         {"app": "bad", "source_url": url, "process_type": process_type, "node": "web.0"})
    assert code == 201, process
    failed = wait_state(gw, process, ("failed", "running"))
    assert failed["state"] == "failed" and expect in failed["reason"], failed
    assert failed["pids"] == []
    # nothing outside the app's folder, and the app's unpacked tree is gone
    assert not list(outside.iterdir())
    assert not [p for p in tmp_path.rglob("evil.txt")]
    assert not os.path.lexists(os.path.join(zsupd.state_dir, "agent", "bad.web.0", "app"))
    assert not [j for j in zsupd.call("jobs") if j.startswith("agent.")]
    assert http("POST", failed["delete"], {})[0] == 200
    assert not os.path.exists(os.path.join(zsupd.state_dir, "agent", "bad.web.0"))


def test_bad_requests(setup):
    zsupd, gw, files, www, consoles = setup
    code, body = http("POST", f"{gw.root}/create-process", {"app": "a"})
    assert code == 400 and body["error"]["code"] == "bad_request"
    code, body = http("POST", f"{gw.root}/create-process", {"app": "../x", "node": "n", "process_type": "web",
                                                            "source_url": "http://x/"})
    assert code == 400
    code, body = http("POST", f"{gw.root}/create-process", {"app": "a", "node": "n", "process_type": "web",
                                                            "source_url": "http://x/", "env": ["no"]})
    assert code == 400
    req = urllib.request.Request(f"{gw.root}/create-process", data=b"{not json", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    assert http("GET", f"{gw.root}/process-status/nobody")[0] == 404
    assert http("GET", f"{gw.root}/create-process")[0] == 405
    assert http("GET", f"{gw.root}/elsewhere")[0] == 404
