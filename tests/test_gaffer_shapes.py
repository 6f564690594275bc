"""gaffer's shapes on zsup's REST routes, chosen per request (docs/http.md, "gaffer
compatibility"), and gaffer's per-pid routes; plain HTTP clients, real zsupd."""

from conftest import wait_for
from test_http_support import echo_job, gw  # noqa: F401

GAFFER = {"Accept": "application/json"}  # and no User-Agent: what gaffer's client sends


def test_clashing_shapes_follow_the_request(gw):
    gw.load(echo_job(), session="s")
    pid = gw.pid_of("s.echo")[0]
    assert gw.get("/ping").json == {"ok": True}
    assert gw.get("/ping", headers=GAFFER).body == b"OK"
    assert gw.get("/ping?format=gaffer").body == b"OK"
    assert gw.get("/ping?format=zsup", headers=GAFFER).json == {"ok": True}
    assert gw.get("/ping", headers=dict(GAFFER, **{"User-Agent": "curl/8"})).json == {"ok": True}

    assert gw.get("/jobs/s/echo/state").json["active"] is True
    assert gw.get("/jobs/s/echo/state", headers=GAFFER).body == b"1"
    gw.post("/jobs/s/echo/state", "0")
    assert gw.get("/jobs/s/echo/state?format=gaffer").body == b"0"
    gw.post("/jobs/s/echo/state", "1")
    # the stopped process may still be on its way out: wait for the new one alone
    pid = wait_for(lambda: (p := gw.pid_of("s.echo")) and len(p) == 1 and p, timeout=10)[0]

    zsup, gaffer = gw.get("/jobs/s/echo").json, gw.get("/jobs/s/echo", headers=GAFFER).json
    assert zsup["name"] == "echo" and zsup["processes"][0]["pid"] == pid
    assert gaffer["name"] == "s.echo" and gaffer["processes"] == [pid]
    for info in (zsup, gaffer):
        assert info["max_processes"] == 1 and info["running"] == 1 and info["running_out"] == 0
    assert gw.get(f"/{pid}").json["name"] == "echo"
    assert gw.get(f"/{pid}", headers=GAFFER).json["name"] == "s.echo"
    assert gw.get(f"/processes/{pid}?format=gaffer").json["commited"] is False


def test_job_bodies_with_start_and_conflicts(gw):
    a = gw.post("/jobs/s", echo_job(start=False))
    assert a.status == 201 and a.json["active"] is False
    assert gw.post("/jobs/s", echo_job(start=False)).status == 409
    assert gw.post("/jobs/s", echo_job("x", start="yes")).status == 400
    assert gw.post("/jobs/s", echo_job("x", custom_streams=["ctl"])).status == 400
    assert gw.post("/jobs/s", echo_job("y", custom_streams=[], custom_channels=[])).status == 201
    a = gw.request("PUT", "/jobs/s/echo", echo_job(start=True))
    assert a.status == 200 and a.json["active"] is True
    assert gw.request("PUT", "/jobs/s/echo?start=false", echo_job(start=True)).json["active"] is False
    assert gw.get("/jobs").json["jobs"] == ["s.echo", "s.y"]


def test_per_pid_routes(gw):
    gw.load(echo_job())
    pid = gw.pid_of("default.echo")[0]
    assert gw.request("HEAD", f"/{pid}").status == 200
    assert gw.request("HEAD", "/999999").status == 404
    stats = gw.get(f"/{pid}/stats").json["stats"]
    assert stats["pid"] == pid and "cpu" in stats
    assert gw.get("/999999/stats").status == 404
    assert gw.post(f"/{pid}/signal", {"signal": "CONT"}).status == 202
    assert gw.post(f"/{pid}/signal", {"signal": "NOPE"}).status == 400
    assert gw.request("DELETE", f"/{pid}").status == 202
    wait_for(lambda: gw.request("HEAD", f"/{pid}").status == 404, message="the stopped pid")
    assert gw.request("PUT", f"/{pid}").status == 405
