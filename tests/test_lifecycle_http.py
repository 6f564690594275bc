"""The lifecycle over HTTP: readiness in the job and process documents, and a rolling
restart through the gateway's `POST /bus/rolling_restart`."""

from conftest import wait_for
from test_http_support import gw  # noqa: F401


def test_rolling_restart_and_readiness_over_http(gw):  # noqa: F811
    job = {"name": "w", "cmd": "sleep", "args": ["300"], "numprocesses": 2, "ready": "delay:0.2"}
    assert gw.request("POST", "/jobs/web", job).status == 201
    info = wait_for(lambda: (i := gw.request("GET", "/jobs/web/w").json)["ready"] == 2 and i)
    assert info["config"]["ready"] == "delay:0.2" and info["processes"][0]["readiness"] == "ready"
    before = set(info["pids"])
    reply = gw.request("POST", "/bus/rolling_restart", {"name": "web.w"})
    assert reply.status == 200 and reply.json["result"]["roll"]["phase"] == "rolling"
    done = wait_for(lambda: (i := gw.request("GET", "/jobs/web/w").json)["roll"]["phase"] == "done"
                    and len(i["pids"]) == 2 and i, timeout=20, message="the roll to end, the old ones gone")
    assert len(done["pids"]) == 2 and not set(done["pids"]) & before
    proc = gw.request("GET", f"/processes/{done['pids'][0]}").json
    assert proc["readiness"] in ("starting", "ready")


def test_rolling_through_the_state_route(gw):  # noqa: F811
    job = {"name": "w", "cmd": "sleep", "args": ["300"], "numprocesses": 2, "ready": "delay:0.2"}
    assert gw.request("POST", "/jobs/web", job).status == 201

    def rolled(body, headers=None):
        before = set(wait_for(lambda: (i := gw.get("/jobs/web/w").json)["ready"] == 2 and i)["pids"])
        reply = gw.post("/jobs/web/w/state", body, headers=headers)
        assert reply.status == 200, reply
        assert reply.json["roll"]["phase"] == "rolling"
        done = wait_for(lambda: (i := gw.get("/jobs/web/w").json)["roll"]["phase"] == "done"
                        and len(i["pids"]) == 2 and i, timeout=20, message="the roll to end")
        assert not set(done["pids"]) & before and done["roll"]["replaced"] == 2
        return reply.json

    rolled(b"rolling", {"Content-Type": "text/plain"})  # a bare word
    rolled("\"rolling\"")  # JSON
    assert rolled({"state": "rolling", "max_surge": 2})["roll"]["pending"] == 2
    assert rolled(b"rolling", {"Accept": "application/json"})  # gaffer's client's form too
    bad = gw.post("/jobs/web/w/state", {"state": "rolling", "max_surge": 0})
    assert bad.status == 400 and "max_surge" in bad.body.decode()
    assert gw.post("/jobs/web/w/state", {"state": "restart", "max_surge": 2}).status == 400
    assert gw.post("/jobs/web/w/state", b"roll").status == 400
    doc = gw.get("/openapi.json").json
    assert "rolling" in doc["paths"]["/jobs/{session}/{name}/state"]["post"]["requestBody"]["description"]
