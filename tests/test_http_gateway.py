"""The gateway's REST routes, stream feeds and errors: real zsupd, real HTTP clients."""

import json
import subprocess
import threading

from conftest import wait_for
from test_http_support import (  # noqa: F401
    GW,
    LineReader,
    echo_job,
    gw,
    read_until,
    sse_blocks,
    start_gateway,
    ticker_job,
    until_job_event,
)

from zsup.http.routes_api import api


def test_every_route_answers_and_is_in_openapi(gw):
    """Each route of the table is called once here, and described in /openapi.json."""
    seen = set()

    def call(method, template, path, body=None, expect=200, **kw):
        a = gw.request(method, path, body, **kw)
        assert a.status == expect, (method, path, a)
        seen.add((method, template))
        return a

    assert call("GET", "/", "/").json["links"]["jobs"].endswith("/jobs")
    assert call("GET", "/ping", "/ping").json == {"ok": True}
    assert call("GET", "/version", "/version").json["zsupd"]["protocol"] == 1
    doc = call("GET", "/openapi.json", "/openapi.json").json
    assert "ping" in call("GET", "/bus", "/bus").json["commands"]
    assert call("POST", "/bus/{cmd}", "/bus/ping").json == {"result": "pong"}

    info = call("POST", "/jobs/{session}", "/jobs/web", echo_job(), expect=201).json
    assert info["job"] == "web.echo"
    call("POST", "/jobs/{session}", "/jobs/web", ticker_job(), expect=201)
    assert call("GET", "/sessions", "/sessions").json["sessions"] == ["web"]
    assert sorted(call("GET", "/jobs", "/jobs").json["jobs"]) == ["web.echo", "web.ticker"]
    assert len(call("GET", "/jobs/{session}", "/jobs/web").json["jobs"]) == 2
    assert call("GET", "/jobs/{session}/{name}", "/jobs/web/echo").json["active"] is True
    assert call("GET", "/jobs/{session}/{name}/config", "/jobs/web/echo/config").json["redirect_input"]
    assert call("GET", "/jobs/{session}/{name}/state", "/jobs/web/echo/state").json["active"] is True
    pid = wait_for(lambda: call("GET", "/jobs/{session}/{name}/pids", "/jobs/web/echo/pids").json["pids"])[0]
    assert call("GET", "/processes/{name}/_pids", "/processes/web.echo/_pids").json == {"pids": [pid]}
    assert pid in call("GET", "/pids", "/pids").json["pids"]
    assert {p["job"] for p in call("GET", "/processes", "/processes").json["processes"]} == {"web.echo", "web.ticker"}
    assert call("GET", "/processes/{pid:int}", f"/processes/{pid}").json["job"] == "web.echo"
    assert call("GET", "/{pid:int}", f"/{pid}").json["pid"] == pid
    assert "cpu" in json.dumps(call("GET", "/processes/{pid:int}/stats", f"/processes/{pid}/stats").json)
    assert "web.echo" in json.dumps(call("GET", "/jobs/{session}/{name}/stats", "/jobs/web/echo/stats").json)

    # stdin, then the three ways to read output (feeds are tested in depth below)
    assert call("POST", "/streams/{pid:int}/stdin", f"/streams/{pid}/stdin", b"hello\n").json == {"ok": True}
    assert call("POST", "/streams/{pid:int}/ttin", f"/streams/{pid}/ttin", b"again\n").json == {"ok": True}
    wait_for(lambda: gw.get(f"/streams/{pid}/stdout").body == b"hello\nagain\n")
    seen.add(("GET", "/streams/{pid:int}/{label}"))

    assert call("POST", "/jobs/{session}/{name}/numprocesses", "/jobs/web/echo/numprocesses",
                {"scale": 2}).json["numprocesses"] == 3
    assert call("POST", "/jobs/{session}/{name}/numprocesses", "/jobs/web/echo/numprocesses",
                "=1").json["numprocesses"] == 1
    assert call("GET", "/jobs/{session}/{name}/numprocesses", "/jobs/web/echo/numprocesses").json["numprocesses"] == 1
    signalled = call("POST", "/jobs/{session}/{name}/signal", "/jobs/web/ticker/signal", {"signal": "CONT"}).json
    assert signalled["signal"] == 18
    tpid = gw.pid_of("web.ticker")[0]
    assert call("POST", "/processes/{pid:int}/signal", f"/processes/{tpid}/signal", "CONT").json["pid"] == tpid
    committed = call("POST", "/jobs/{session}/{name}/commit", "/jobs/web/echo/commit", {}, expect=201).json
    assert isinstance(committed["pid"], int)
    assert call("DELETE", "/processes/{pid:int}", f"/processes/{committed['pid']}").json["stopping"] is True
    assert call("POST", "/jobs/{session}/{name}/state", "/jobs/web/echo/state", "stop").json["active"] is False
    assert call("POST", "/jobs/{session}/{name}/state", "/jobs/web/echo/state", 1).json["active"] is True
    call("POST", "/jobs/{session}/{name}/state", "/jobs/web/echo/state", b"restart")
    updated = call("PUT", "/jobs/{session}/{name}", "/jobs/web/echo", echo_job(env={"A": "1"})).json
    assert updated["config"]["env"] == {"A": "1"}
    assert call("DELETE", "/jobs/{session}/{name}", "/jobs/web/echo").status == 200
    assert call("DELETE", "/jobs/{session}", "/jobs/web").json["unloaded"] == ["web.ticker"]

    # listening sockets (tests/test_socket_runtime.py tests them in depth)
    added = call("POST", "/sockets", "/sockets", {"name": "s", "bind": "127.0.0.1:0"}, expect=201).json
    assert added["origin"] == "runtime"
    assert [r["name"] for r in call("GET", "/sockets", "/sockets").json["sockets"]] == ["s"]
    assert call("DELETE", "/sockets/{name}", "/sockets/s").json["ok"] is True

    # watch and plugins
    conn = gw.connection()
    conn.request("GET", "/watch/job.x.y?heartbeat=0.05")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline() == b"\n"
    conn.close()
    seen.add(("GET", "/watch/{pattern}"))
    conn = gw.connection()
    conn.request("GET", "/watch?heartbeat=0.05")
    assert conn.getresponse().status == 200
    conn.close()
    seen.add(("GET", "/watch"))
    site = gw.tmp_path / "plugins" / "ui" / "_site"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<h1>ui</h1>")
    (gw.tmp_path / "plugins" / "ui" / "plugin.py").write_text("")
    assert call("GET", "/_plugin", "/_plugin").json["plugins"][0]["name"] == "ui"
    assert call("GET", "/_plugin/{name}", "/_plugin/ui", expect=301).headers["Location"].endswith("/_plugin/ui/")
    assert call("GET", "/_plugin/{name}/{path:path}", "/_plugin/ui/").body == b"<h1>ui</h1>"

    routes = {(r.method, r.path) for r in api.routes}
    assert seen == routes, routes ^ seen
    # The route table's operations (gaffer's, the mounts' and the websockets' are marked:
    # tests/test_http_openapi.py checks those).
    operations = {(m.upper(), p) for p, ops in doc["paths"].items() for m, op in ops.items()
                  if not {"x-gaffer", "x-mount", "x-websocket"} & set(op)}
    assert operations == {(r.method, r.openapi_path) for r in api.routes}
    assert doc["openapi"].startswith("3.")


def test_bad_input_gets_json_errors(gw):
    gw.load(echo_job())

    def error(a, status, code):
        assert a.status == status, a
        assert a.headers["Content-Type"].startswith("application/json")
        err = a.json["error"]
        assert err["code"] == code and err["message"] and "Traceback" not in a.body.decode()

    error(gw.get("/no/such/route"), 404, "not_found")
    error(gw.request("PATCH", "/jobs"), 405, "bad_request")
    error(gw.post("/jobs/default", b"{not json"), 400, "bad_request")
    error(gw.post("/jobs/default", b"[1, 2]"), 400, "bad_request")
    error(gw.post("/jobs/default", b"\xff\xfe"), 400, "bad_request")
    error(gw.post("/jobs/default", echo_job()), 409, "conflict")
    error(gw.post("/jobs/default", {"name": "x"}), 400, "bad_request")
    error(gw.get("/jobs/default/nope"), 404, "not_found")
    error(gw.get("/jobs/nosession"), 404, "not_found")
    error(gw.get("/processes/999999"), 404, "not_found")
    error(gw.get("/999999"), 404, "not_found")
    error(gw.get("/streams/999999/stdout?feed=continuous"), 404, "not_found")
    error(gw.post("/streams/999999/stdin", b"x"), 404, "not_found")
    for bad in ({"scale": "many"}, {"scale": True}, b"1.5", {"scale": None}):
        error(gw.post("/jobs/default/echo/numprocesses", bad), 400, "bad_request")
    error(gw.post("/jobs/default/echo/state", "dance"), 400, "bad_request")
    error(gw.post("/jobs/default/echo/signal", {"signal": "NOPE"}), 400, "bad_request")
    error(gw.post("/jobs/default/echo/commit", {"bogus": 1}), 400, "bad_request")
    error(gw.request("PUT", "/jobs/default/echo", echo_job(name="other")), 400, "bad_request")
    error(gw.post("/bus/no_such_command", {}), 400, "bad_request")
    error(gw.post("/bus/scale", {"name": "echo"}), 400, "bad_request")
    error(gw.post("/jobs/default", b"x" * ((1 << 20) + 10)), 413, "bad_request")
    pid = gw.pid_of("echo")[0]
    error(gw.get(f"/streams/{pid}/nope"), 404, "not_found")
    error(gw.get(f"/streams/{pid}/stdout?feed=sideways"), 400, "bad_request")
    error(gw.get(f"/streams/{pid}/stdout?feed=continuous&heartbeat=soon"), 400, "bad_request")
    error(gw.get("/_plugin/ui/../../etc/passwd"), 404, "not_found")
    error(gw.get("/_plugin/nope/"), 404, "not_found")
    # a process without stdin, and one that exited
    gw.load(ticker_job())
    tpid = gw.pid_of("ticker")[0]
    error(gw.post(f"/streams/{tpid}/stdin", b"x\n"), 409, "conflict")
    assert gw.request("DELETE", f"/processes/{pid}").status == 200
    wait_for(lambda: gw.get(f"/processes/{pid}").json["state"] == "exited")
    error(gw.post(f"/streams/{pid}/stdin", b"x\n"), 409, "conflict")


def test_cors_preflight_and_headers(gw):
    a = gw.request("OPTIONS", "/jobs/default", headers={
        "Origin": "http://example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type, Authorization"})
    assert a.status == 204
    assert a.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in a.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in a.headers["Access-Control-Allow-Headers"]
    a = gw.get("/sessions", headers={"Origin": "http://example.org"})
    assert a.headers["Access-Control-Allow-Origin"] == "*"
    assert gw.get("/nope").headers["Access-Control-Allow-Origin"] == "*"


def test_seed_examples_with_curl(gw):
    """gaffer's HTTP examples, with curl: stdin then longpoll, _pids, continuous, eventsource."""
    gw.load(echo_job())
    pid = gw.pid_of("echo")[0]

    def curl(*args):
        return subprocess.run(["curl", "-s", "-m", "10", *args], capture_output=True, timeout=20).stdout

    assert json.loads(curl(f"{gw.base}/processes/echo/_pids")) == {"pids": [pid]}
    assert json.loads(curl("-XPOST", "-d", "ECHO\n", f"{gw.base}/streams/{pid}/stdin")) == {"ok": True}
    assert curl(f"{gw.base}/streams/{pid}/stdout?feed=longpoll") == b"ECHO\n"
    # a second longpoll waits for what comes next
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("out", curl(f"{gw.base}/streams/{pid}/stdout?feed=longpoll")))
    t.start()
    wait_for(lambda: gw.g.apps[0].open_streams == 1, message="the longpoll to wait")
    curl("-XPOST", "--data-binary", "NEXT\n", f"{gw.base}/streams/{pid}/stdin")
    t.join(15)
    assert result["out"] in (b"NEXT\n",)
    gw.load(ticker_job())
    tpid = gw.pid_of("ticker")[0]
    out = curl("-m", "1", f"{gw.base}/streams/{tpid}/stdout?feed=continuous")
    assert out.startswith(b"line ") and len(out.splitlines()) >= 5
    out = curl("-m", "1", f"{gw.base}/streams/{tpid}/stdout?feed=eventsource")
    assert b"event: stdout\n" in out and b"data: line " in out


def _sse_events(text):
    events = []
    for block in text.decode().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields.setdefault(key, []).append(value)
        if "data" in fields:
            events.append((int(fields["id"][0]), fields["event"][0], "\n".join(fields["data"])))
    return events


def test_feeds_heartbeat_last_event_id_and_exit(gw):
    gw.load(echo_job())
    pid = gw.pid_of("echo")[0]
    for i in range(1, 6):
        gw.post(f"/streams/{pid}/stdin", f"m{i}\n".encode())
    wait_for(lambda: gw.get(f"/streams/{pid}/stdout").body.count(b"\n") == 5)
    assert gw.get(f"/streams/{pid}/stdout?since=3").body == b"m4\nm5\n"

    # eventsource resumes after Last-Event-ID from the ring, then goes live; heartbeats comments
    conn = gw.connection()
    conn.request("GET", f"/streams/{pid}/stdout?feed=eventsource&heartbeat=0.1",
                 headers={"Last-Event-ID": "2"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    text = read_until(resp, lambda t: t.count(b"data: ") == 3)
    assert _sse_events(text) == [(3, "stdout", "m3"), (4, "stdout", "m4"), (5, "stdout", "m5")]
    assert read_until(resp, lambda t: b": heartbeat" in t)
    gw.post(f"/streams/{pid}/stdin", b"live\n")
    assert _sse_events(read_until(resp, lambda t: b"data: " in t)) == [(6, "stdout", "live")]
    conn.close()

    # continuous with a heartbeat: empty lines while idle, lines as they come
    conn = gw.connection()
    conn.request("GET", f"/streams/{pid}/stdout?feed=continuous&heartbeat=0.1")
    resp = conn.getresponse()
    assert resp.readline() == b"\n"
    gw.post(f"/streams/{pid}/stdin", b"seven\n")
    assert read_until(resp, lambda t: b"seven\n" in t).replace(b"\n", b"") == b"seven"

    # longpoll with since answers at once from the ring
    assert gw.get(f"/streams/{pid}/stdout?feed=longpoll&since=5").body == b"live\nseven\n"

    # the process exits: the open continuous stream ends after its last line
    gw.post(f"/streams/{pid}/stdin", b"last\n")
    # echo.py stops at once on SIGTERM: let it echo the line before it is stopped
    wait_for(lambda: gw.get(f"/streams/{pid}/stdout?since=7").body == b"last\n", message="'last' echoed")
    gw.request("DELETE", f"/processes/{pid}")
    rest = resp.read()  # returns only when the chunked answer ends
    assert rest.replace(b"\n", b"") in (b"last", b"")
    conn.close()
    # an eventsource of an exited process with nothing left: 204 (EventSource stops retrying)
    assert gw.get(f"/streams/{pid}/stdout?feed=eventsource",
                  headers={"Last-Event-ID": "8"}).status == 204
    assert gw.get(f"/streams/{pid}/stdout?feed=eventsource&since=6").body.count(b"data: ") == 2


def test_watch_streams_events(gw):
    conn = gw.connection()
    conn.request("GET", "/watch/job.default.echo?feed=eventsource")
    resp = conn.getresponse()
    assert resp.status == 200
    reader = LineReader(resp)

    def created(text):
        return [b for b in sse_blocks(text) if b.get("event") == "job.default.echo.create"]

    # the slow joiner: load (and unload) until the create event shows up
    until_job_event(gw, reader, created)
    block = created(reader.text)[0]
    assert json.loads(block["data"])["msg"]["event"] == "create"
    conn.close()


def test_zsupd_down_is_503_and_gateway_recovers(gw):
    assert gw.get("/ping").status == 200
    gw.d.stop()
    a = gw.get("/jobs")
    assert a.status == 503 and a.json["error"]["code"] == "unavailable"
    assert "zsupd" in a.json["error"]["message"]
    gw.d.start()
    assert wait_for(lambda: gw.get("/ping").status == 200, timeout=20)
    # events flow again through the same SUB socket
    conn = gw.connection()
    conn.request("GET", "/watch/job.")
    resp = conn.getresponse()
    assert resp.status == 200
    # the SUB socket reconnects (and the subscription reaches the new zsupd) a moment after
    # zsupd answers again: load (and unload) until the create event shows up
    until_job_event(gw, LineReader(resp), lambda t: b"job.default.echo.create" in t)
    conn.close()


def test_streams_beyond_the_cap_get_503(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, max_streams=2)
    try:
        g = GW(d, gateway, tmp_path)
        conns, responses = [], []  # a response dropped closes its connection: keep them
        for _ in range(2):
            c = g.connection()
            c.request("GET", "/watch/x.?heartbeat=0.1")
            responses.append(c.getresponse())
            assert responses[-1].status == 200
            conns.append(c)
        a = g.get("/watch/x.")
        assert a.status == 503 and "too many open streams" in a.json["error"]["message"]
        assert g.get("/sessions").status == 200
        conns.pop().close()
        responses.pop().close()
        # the heartbeat finds the client gone and frees its slot
        wait_for(lambda: gateway.apps[0].open_streams < 2, timeout=10)
        c = g.connection()
        c.request("GET", "/watch/x.")
        assert c.getresponse().status == 200
        conns.append(c)
        for c in conns:
            c.close()
    finally:
        gateway.stop()


def test_closing_the_gate_leaves_a_busy_client_to_its_thread(tmp_path):
    """BusGate.close at shutdown closes the idle clients' sockets, but not one a worker is
    waiting on (a zmq socket is one thread's; closing it under a blocked read aborts
    libzmq): that request ends as a timeout, and its thread closes the socket."""
    import zmq

    from zsup.errors import Unavailable
    from zsup.http.busgate import BusGate

    endpoint = f"ipc://{tmp_path}/mute.sock"
    ctx = zmq.Context()
    mute = ctx.socket(zmq.ROUTER)  # a bus that reads requests and never answers
    mute.bind(endpoint)
    gate = BusGate(endpoint, f"ipc://{tmp_path}/pub.sock", timeout=1.0)
    outcome = []

    def worker():
        try:
            gate.call("ping")
        except Exception as exc:  # noqa: BLE001 - the type is what the test checks
            outcome.append(exc)

    try:
        thread = threading.Thread(target=worker)
        thread.start()
        assert mute.poll(5000), "the request did not arrive"
        mute.recv_multipart()
        client = next(iter(gate._busy))
        gate.close()
        assert not client._socket.closed  # still the worker's
        thread.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
        assert client._socket is None  # closed by its own thread once the request ended
    finally:
        gate.close()
        mute.close(0)
        ctx.term()
