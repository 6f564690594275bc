"""gaffer's channels over SockJS (zsup.http.sockjs), driven by the real sockjs-client (npm,
installed by ``make sockjs-client`` into .cache/sockjs) in headless Chromium. The page is a
site plugin of the gateway, so the browser talks to it same-origin. Without chromium or the
npm package the tests skip, saying which; under CI=true they fail instead."""

import base64
import json
import os
import threading

import pytest
from browser import Browser, chromium_or_skip, need
from conftest import ROOT, wait_for
from test_gaffer_keys import keyed  # noqa: F401
from test_http_support import echo_job, gw  # noqa: F401

from zsup.http import sockjs

SOCKJS_JS = os.path.join(ROOT, ".cache", "sockjs", "node_modules", "sockjs-client", "dist",
                         "sockjs.min.js")

# run(prefix, transport, frames): opens a SockJS connection with only that transport, sends
# each of `frames` in turn, each after the previous answer; resolves to what it saw.
PAGE = """<!doctype html><html><head><script src="sockjs.min.js"></script><script>
function run(url, transport, frames, want) {
  return new Promise(function (resolve) {
    var seen = [], sock = new SockJS(url, null, {transports: [transport]}), i = 0, over = false;
    function finish(why) {
      if (over) return; over = true;
      resolve(JSON.stringify({why: why, transport: sock.transport, seen: seen}));
      try { sock.close(); } catch (e) {}
    }
    function next() { if (i < frames.length) sock.send(frames[i++]); }
    sock.onopen = function () { next(); };
    sock.onmessage = function (e) {
      seen.push(e.data);
      if (seen.length >= want) finish("enough"); else next();
    };
    sock.onclose = function (e) { finish("closed " + e.code); };
    setTimeout(function () { finish("timeout"); }, 20000);
  });
}
</script></head><body>sockjs</body></html>"""

TRANSPORTS = ["websocket", "xhr-streaming", "xhr-polling", "eventsource"]


@pytest.fixture(scope="module")
def browser():
    binary = chromium_or_skip()
    need("sockjs-client", os.path.exists(SOCKJS_JS), "make sockjs-client")
    b = Browser(binary)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def page(gw, browser):  # noqa: F811
    site = gw.tmp_path / "plugins" / "sockjs"
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text(PAGE)
    (site / "sockjs.min.js").write_bytes(open(SOCKJS_JS, "rb").read())
    browser.goto(f"{gw.base}/_plugin/sockjs/index.html")

    def run(prefix, transport, frames, want):
        out = browser.evaluate(f"run({json.dumps(gw.base + prefix)}, {json.dumps(transport)}, "
                               f"{json.dumps(frames)}, {want})")
        return json.loads(out)
    return run


def test_info(gw):  # noqa: F811
    info = gw.get("/channel/info")
    assert info.status == 200 and info.json["websocket"] is True
    assert info.json["cookie_needed"] is False
    assert gw.get("/channel/a/b/jsonp").status == 404
    assert gw.post("/channel/a/b/xhr_send", "[\"x\"]").status == 404  # no such session


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_event_channel(gw, page, transport):  # noqa: F811
    gw.load(echo_job())
    frames = [json.dumps({"event": "SUB", "data": {"topic": "EVENTS"}}),
              json.dumps({"event": "CMD", "data": {"identity": "1", "name": "jobs"}}),
              json.dumps({"event": "CMD", "data": {"identity": "2", "name": "scale",
                                                   "args": ["default.echo", "+1"]}})]
    # 8: the subscription, two answers, the scale's update (2 names) and spawn (3) events
    out = page("/channel", transport, frames, 8)
    assert out["transport"] == transport, out
    seen = [json.loads(m) for m in out["seen"]]
    assert seen[0] == {"event": "gaffer:subscription_success", "topic": "EVENTS"}, out
    assert seen[1] == {"event": "gaffer:command_success",
                       "data": {"id": "1", "result": {"jobs": ["default.echo"]}}}, out
    answers = [m for m in seen if m["event"] == "gaffer:command_success"]
    assert answers[1]["data"] == {"id": "2", "result": {"numprocesses": 2}}, out
    events = [m["data"]["event"] for m in seen if m["event"] == "gaffer:event"]
    assert "spawn" in events, out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_io_channel(gw, page, transport):  # noqa: F811
    gw.load(echo_job())
    pid = gw.pid_of("default.echo")[0]
    out = page(f"/{pid}/channel?mode=3", transport, ["V1 message m1\u0000hello sockjs\n"], 2)
    assert out["transport"] == transport, out
    kinds = sorted(m.split("\u0000")[0].split(" ")[1] for m in out["seen"])
    assert kinds == ["message", "response"], out
    assert "V1 response m1\u0000OK" in out["seen"], out
    assert any(m.endswith("\u0000hello sockjs\n") for m in out["seen"]), out


def test_xhr_protocol_edges(gw):  # noqa: F811
    """Plain HTTP, no browser: framing, a second receiver, bad payloads, the reaper."""
    base = "/channel/000/sess1"
    assert gw.post(f"{base}/xhr", "").body == b"o\n"
    sub = json.dumps([json.dumps({"event": "SUB", "data": {"topic": "EVENTS"}})])
    assert gw.post(f"{base}/xhr_send", sub).status == 204
    first = gw.post(f"{base}/xhr", "").body
    assert first.startswith(b"a[") and b"subscription_success" in first
    # a receiver waits (a long poll); a second one is turned away meanwhile
    held = {}
    waiter = threading.Thread(target=lambda: held.update(a=gw.post(f"{base}/xhr", "", timeout=40)))
    waiter.start()
    cmd = json.dumps([json.dumps({"event": "CMD", "data": {"identity": "x", "name": "sessions"}})])
    try:
        table = gw.g.apps[0].sockjs_sessions
        wait_for(lambda: table.get(("/channel", "sess1")).receiving, message="a receiver")
        second = gw.post(f"{base}/xhr", "")
        assert second.body == b'c[2010, "Another connection still open"]\n', second
        assert gw.post(f"{base}/xhr_send", "not json").body == b"Broken JSON encoding."
        assert gw.post(f"{base}/xhr_send", "").body == b"Payload expected."
        assert gw.post(f"{base}/xhr_send", cmd).status == 204
    finally:
        waiter.join(40)
    assert b"command_success" in held["a"].body
    # without a receiver, the session is closed (its subscription ends) after DISCONNECT_DELAY
    wait_for(lambda: gw.post(f"{base}/xhr_send", cmd).status == 404,
             timeout=sockjs.DISCONNECT_DELAY + 5, message="the session reaped")
    # an IO channel of a pid that does not exist: 404
    assert gw.post("/999999/channel/000/s/xhr", "").status == 404


def test_keys_over_sockjs(keyed):  # noqa: F811
    """With require_key, SockJS paths need no X-Api-Key header; the first frame must be
    AUTH:<key> that may manage everything, as on gaffer's websocket."""
    gw = keyed
    basic = "Basic " + base64.b64encode(b"root:pw").decode()
    admin = gw.get("/auth", headers={"Authorization": basic}).json["api_key"]
    reader = gw.post("/keys", {"permissions": {"read": ["*"]}},
                     headers={"X-Api-Key": admin}).json["api_key"]
    assert gw.get("/channel/info").status == 200
    sessions = json.dumps({"event": "CMD", "data": {"identity": "1", "name": "sessions"}})

    def session(sid, frames):
        base = f"/channel/000/{sid}"
        assert gw.post(f"{base}/xhr", "").body == b"o\n"
        assert gw.post(f"{base}/xhr_send", json.dumps(frames)).status == 204
        return gw.post(f"{base}/xhr", "").body

    refused = session("noauth", [sessions])
    assert b"AUTH_REQUIRED" in refused, refused
    assert session("reader", [f"AUTH:{reader}", sessions]).count(b"forbidden") >= 1
    ok = session("admin", [f"AUTH:{admin}", sessions])
    assert b"command_success" in ok, ok
