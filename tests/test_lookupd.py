"""zsup-lookupd with real zsupd nodes: registration, discovery, heartbeats, expiry, auth."""

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import PYTHON, ROOT, wait_for

from zsup.http.server import Endpoint, HTTPServer
from zsup.lookup.lookupd import LookupApp, Registry, TokenFile

TOKEN = "s3cret-token"


def http(method, url, body=None, token=None, raw=None):
    """(status, JSON answer) of one request; HTTP errors are answers too."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class LookupdProcess:
    """The real `zsup-lookupd` command in a subprocess, on a port the kernel picks."""

    def __init__(self, tmp_path, *args):
        self.log_path = str(tmp_path / "lookupd.log")
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.lookupd", "-v", "--bind", "127.0.0.1:0", *args],
                                     stdout=self._log, stderr=self._log, env=env)
        port = wait_for(self._port, timeout=10, interval=0.02, message="zsup-lookupd to listen")
        self.url = f"http://127.0.0.1:{port}"

    def _port(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"zsup-lookupd exited with {self.proc.returncode}: {self.log()}")
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log())
        return m and int(m.group(1))

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def get(self, path):
        status, answer = http("GET", self.url + path)
        assert status == 200, answer
        return answer

    def node_ids(self):
        return {n["node_id"] for n in self.get("/nodes")["nodes"]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def app_server():
    """The WSGI app in-process on HTTPServer: `app_server(tokens_file=None, protect_reads=False)`."""
    servers = []

    def make(tokens_file=None, protect_reads=False, ttl=30.0):
        tokens = TokenFile(tokens_file) if tokens_file else None
        app = LookupApp(Registry(default_ttl=ttl), tokens, protect_reads=protect_reads)
        server = HTTPServer(app, [Endpoint(name="lookupd", bind="127.0.0.1:0")], websocket_routes=None, threads=2)
        servers.append(server)
        server.start()
        return f"http://127.0.0.1:{server.addresses[0].port}"

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


def node_id_of(path):
    """The id a node keeps in its state dir (written when it starts registering, after the bus)."""
    file = path / "state" / "node_id"
    return wait_for(lambda: file.exists() and file.read_text().strip(), timeout=10, message=f"{file}")


def node_config(url, token_file, name, jobs):
    return (f"[zsup]\nlookupd_addresses = {url}\nlookupd_token_file = {token_file}\nnode_name = {name}\n"
            + (f"public_url = http://{name}.example:5000\n" if name == "node-a" else "")
            + "".join(f"[process:{job}]\ncmd = sleep 300\n" for job in jobs))


def test_nodes_register_are_found_follow_job_changes_and_leave(tmp_path, zsupd_factory):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# who may register\n{TOKEN}\n")
    token_file.chmod(0o600)  # a tokens file others can read is refused
    lookupd = LookupdProcess(tmp_path, "--ttl", "2", "--tokens-file", str(token_file))
    try:
        a = zsupd_factory(node_config(lookupd.url, token_file, "node-a", ["web"]), path=tmp_path / "a")
        b = zsupd_factory(node_config(lookupd.url, token_file, "node-b", ["worker", "batch:cruncher"]),
                          path=tmp_path / "b")
        id_a, id_b = node_id_of(tmp_path / "a"), node_id_of(tmp_path / "b")
        assert id_a != id_b

        wait_for(lambda: lookupd.node_ids() == {id_a, id_b}, timeout=10, message="both nodes registered")
        nodes = {n["node_id"]: n for n in lookupd.get("/nodes")["nodes"]}
        assert nodes[id_a]["name"] == "node-a" and nodes[id_b]["name"] == "node-b"
        assert nodes[id_a]["urls"]["http"] == "http://node-a.example:5000"
        assert nodes[id_a]["jobs"] == ["default.web"]
        assert nodes[id_b]["jobs"] == ["batch.cruncher", "default.worker"]
        assert nodes[id_b]["sessions"] == ["batch", "default"]
        assert 0 < nodes[id_a]["expires_in"] <= 2 and nodes[id_a]["ttl"] == 2
        assert nodes[id_a]["version"]

        found = lookupd.get("/findJob?name=web")
        assert found["job"] == "default.web" and [n["node_id"] for n in found["nodes"]] == [id_a]
        assert [n["node_id"] for n in lookupd.get("/findJob?name=batch.cruncher")["nodes"]] == [id_b]
        assert [n["node_id"] for n in lookupd.get("/findSession?session=batch")["nodes"]] == [id_b]
        assert lookupd.get("/findJob?name=nobody")["nodes"] == []
        assert lookupd.get("/jobs")["jobs"]["default.web"] == [id_a]
        assert sorted(lookupd.get("/sessions")["sessions"]["default"]) == sorted([id_a, id_b])

        # a job loaded at run time over the bus shows up; an unloaded one goes away
        b.call("load", config={"name": "cron", "cmd": "sleep", "args": ["300"]})
        wait_for(lambda: [n["node_id"] for n in lookupd.get("/findJob?name=cron")["nodes"]] == [id_b],
                 timeout=15, message="run-time job announced")
        a.call("unload", name="web")
        wait_for(lambda: lookupd.get("/findJob?name=web")["nodes"] == [], timeout=15, message="unload announced")

        # heartbeats keep a node beyond its ttl (2 s)
        first_seen = lookupd.get(f"/nodes/{id_b}")["node"]["last_seen"]
        wait_for(lambda: lookupd.get(f"/nodes/{id_b}")["node"]["last_seen"] > first_seen, timeout=15,
                 message="a heartbeat")

        # a node that stops says goodbye (DELETE), one that is SIGKILLed expires after the ttl
        a.stop()
        wait_for(lambda: id_a not in lookupd.node_ids(), timeout=15, message="stopped node removed")
        assert re.search(rf"node {id_a} \(node-a\) unregistered", lookupd.log())
        b.proc.kill()
        b.proc.wait(5)
        wait_for(lambda: lookupd.node_ids() == set(), timeout=15, message="killed node expired")
        assert re.search(rf"node {id_b} \(node-b\) expired", lookupd.log())

        # registration needs the token; reads do not (no --protect-reads)
        doc = {"node_id": "intruder", "jobs": ["web"]}
        status, answer = http("POST", lookupd.url + "/nodes", doc, token="wrong")
        assert status == 401 and answer["error"]["code"] == "forbidden"  # the bus's codes only: issue 19
        assert http("POST", lookupd.url + "/nodes", doc)[0] == 401
        assert http("POST", lookupd.url + "/nodes", doc, token=TOKEN)[0] == 201
        assert http("DELETE", lookupd.url + "/nodes/intruder", token="wrong")[0] == 401
    finally:
        rc = lookupd.stop()
    assert rc == 0, lookupd.log()
    assert "Traceback" not in lookupd.log()


def test_a_node_stays_the_same_node_and_survives_an_absent_lookupd(tmp_path, zsupd_factory, app_server):
    # Nothing listens on the first address: the node logs it once and still registers elsewhere.
    url = app_server()
    dead = "http://127.0.0.1:9"  # discard port: refused on loopback
    token_file = tmp_path / "token"
    token_file.write_text("unused\n")
    config = node_config(f"{dead}, {url}", token_file, "node-c", ["web"])
    d = zsupd_factory(config, path=tmp_path / "c")
    node_id = node_id_of(tmp_path / "c")
    wait_for(lambda: http("GET", f"{url}/nodes/{node_id}")[0] == 200, timeout=10, message="registered")
    assert d.call("ping") == "pong"
    d.stop()
    with open(d.log_path, errors="replace") as f:
        assert f.read().count("lookupd http://127.0.0.1:9: cannot register") == 1
    assert http("GET", f"{url}/nodes/{node_id}")[0] == 404
    d2 = zsupd_factory(config, path=tmp_path / "c")
    wait_for(lambda: http("GET", f"{url}/nodes/{node_id}")[0] == 200, timeout=10, message="same id again")
    d2.stop()


def test_bad_input_gets_4xx_json(app_server):
    url = app_server()
    cases = [
        ("POST", "/nodes", b"{not json"),
        ("POST", "/nodes", b""),
        ("POST", "/nodes", b"[1, 2]"),
        ("POST", "/nodes", json.dumps({"name": "no id"}).encode()),
        ("POST", "/nodes", json.dumps({"node_id": "../etc"}).encode()),
        ("POST", "/nodes", json.dumps({"node_id": "n", "jobs": "web"}).encode()),
        ("POST", "/nodes", json.dumps({"node_id": "n", "jobs": ["a.b.c"]}).encode()),
        ("POST", "/nodes", json.dumps({"node_id": "n", "ttl": -1}).encode()),
        ("POST", "/nodes", json.dumps({"node_id": "n", "urls": ["x"]}).encode()),
        ("POST", "/nodes", json.dumps({"node_id": "n", "colour": "red"}).encode()),
        ("PUT", "/nodes/n1", json.dumps({"node_id": "n2"}).encode()),
        ("GET", "/nodes/unknown", None),
        ("DELETE", "/nodes/unknown", None),
        ("GET", "/findJob", None),
        ("GET", "/findJob?name=a.b.c", None),
        ("GET", "/findSession?session=", None),
        ("GET", "/nowhere", None),
        ("PATCH", "/nodes", None),
        ("POST", "/nodes", b"x" * (1024 * 1024 + 10)),
    ]
    for method, path, raw in cases:
        status, answer = http(method, url + path, raw=raw)
        assert 400 <= status < 500, (method, path, status, answer)
        assert set(answer["error"]) == {"code", "message"}, (method, path, answer)
    assert http("GET", url + "/nodes")[1] == {"nodes": []}  # nothing was registered by the above
    assert http("GET", url + "/ping") == (200, {"ping": "pong"})
    assert http("GET", url + "/version")[1]["name"] == "zsup-lookupd"

    # a bare PUT is a heartbeat of a known node; a new node needs only its id; ttl is per node
    # (2 s: the bare PUT must come before it expires, even on a loaded machine)
    assert http("PUT", url + "/nodes/n1", {"jobs": ["web"], "ttl": 2})[0] == 201
    status, answer = http("PUT", url + "/nodes/n1", raw=b"")
    assert status == 200 and answer["node"]["jobs"] == ["default.web"] and answer["node"]["ttl"] == 2
    wait_for(lambda: http("GET", url + "/nodes/n1")[0] == 404, timeout=15, message="n1 expired")


def test_tokens_guard_writes_and_optionally_reads(tmp_path, app_server):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n# old-token\n")
    tokens.chmod(0o600)  # a tokens file others can read is refused
    url = app_server(tokens_file=str(tokens), protect_reads=True)
    assert http("POST", url + "/nodes", {"node_id": "n"}, token="old-token")[0] == 401
    assert http("POST", url + "/nodes", {"node_id": "n"}, token=TOKEN)[0] == 201
    assert http("GET", url + "/nodes")[0] == 401
    assert http("GET", url + "/findJob?name=web", token="nope")[0] == 401
    assert http("GET", url + "/nodes", token=TOKEN)[0] == 200
    assert http("GET", url + "/ping")[0] == 200  # health checks need no token
    tokens.write_text("rotated-token-with-another-size\n")  # re-read on change, no restart
    assert http("GET", url + "/nodes", token=TOKEN)[0] == 401
    assert http("GET", url + "/nodes", token="rotated-token-with-another-size")[0] == 200


def test_cli_errors_are_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)

    def run(*args):
        proc = subprocess.run([PYTHON, "-m", "zsup.cli.lookupd", *args], capture_output=True, text=True,
                              env=env, timeout=20)
        return proc.returncode, proc.stdout + proc.stderr

    code, out = run("--version")
    assert code == 0 and out.startswith("zsup-lookupd ")
    for args in (["--tokens-file", str(tmp_path / "missing")], ["--bind", "nonsense"], ["--ttl", "0"],
                 ["--cacert", str(tmp_path / "ca.pem")], ["--protect-reads"]):
        code, out = run("--bind", "127.0.0.1:0", *args)
        assert code == 2 and out.startswith("zsup-lookupd: error: ") and out.count("\n") == 1, (args, out)
    holder = LookupdProcess(tmp_path)
    try:
        code, out = run("--bind", holder.url[len("http://"):])
        assert code == 1 and out.startswith("zsup-lookupd: error: ") and out.count("\n") == 1, out
    finally:
        assert holder.stop() == 0
