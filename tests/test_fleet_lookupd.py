"""zsup-lookupd --etcd: two lookupds answer the same fleet, a restart loses nothing, and
GET /watch streams node up/down and job loaded/unloaded as they happen."""

import json
import signal
import threading
import urllib.error
import urllib.request

from conftest import wait_for
from fleet_helpers import etcd, free_port  # noqa: F401
from test_fleet import TTL, fleet, registered  # noqa: F401
from test_lookupd import LookupdProcess


class Feed:
    """GET /watch read on a thread: every JSON line lands in ``events``."""

    def __init__(self, url):
        self.events = []
        self.resp = urllib.request.urlopen(url + "/watch", timeout=30)
        assert self.resp.headers["Content-Type"].startswith("application/x-ndjson")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for line in self.resp:
                if line.strip():
                    self.events.append(json.loads(line))
        except (OSError, ValueError, AttributeError):  # AttributeError: closed under our feet
            pass

    def kinds(self, name=None):
        return [(e["event"], e.get("job")) for e in self.events if name is None or e.get("name") == name]

    def close(self):
        self.resp.close()


def subdir(path, name):
    (path / name).mkdir()
    return path / name


def names(lookupd):
    return sorted(n["name"] for n in lookupd.get("/nodes")["nodes"])


def test_lookupds_on_etcd_answer_the_same_follow_changes_and_survive_a_restart(fleet, etcd, tmp_path):
    nodes, client = fleet
    one = LookupdProcess(subdir(tmp_path, "l1"), "--etcd", etcd.etcd_url)
    two = LookupdProcess(subdir(tmp_path, "l2"), "--etcd", etcd.etcd_url)
    feed = None
    try:
        everyone = ["node-a", "node-b", "node-c"]
        wait_for(lambda: names(one) == everyone == names(two), timeout=10, message="both lookupds see the fleet")
        assert one.get("/jobs")["jobs"] == two.get("/jobs")["jobs"]
        found = one.get("/findJob?name=web")["nodes"]
        assert sorted(n["name"] for n in found) == ["node-a", "node-b"]
        assert found[0]["urls"]["http"].startswith("http://127.0.0.1:")

        feed = Feed(one.url)
        wait_for(lambda: ("ready", None) in feed.kinds(), timeout=5, message="the feed's snapshot")
        assert sorted(e["name"] for e in feed.events if e["event"] == "node.up") == everyone
        # a job loaded and unloaded on one node
        nodes["node-c"].call("load", config={"name": "extra", "cmd": "sleep 300"})
        wait_for(lambda: ("job.loaded", "default.extra") in feed.kinds("node-c"), timeout=5,
                 message="job.loaded in the feed")
        nodes["node-c"].call("unload", name="extra")
        wait_for(lambda: ("job.unloaded", "default.extra") in feed.kinds("node-c"), timeout=5,
                 message="job.unloaded in the feed")
        # a clean stop: node.down, reason left, at once
        nodes["node-b"].stop()
        wait_for(lambda: ("node.down", None) in feed.kinds("node-b"), timeout=5, message="node-b down")
        down = [e for e in feed.events if e["event"] == "node.down" and e["name"] == "node-b"][0]
        assert down["reason"] == "left" and down["jobs"] == ["default.web", "default.worker"]
        # a killed node: node.down, reason expired, within a lease ttl
        nodes["node-a"].proc.send_signal(signal.SIGKILL)
        wait_for(lambda: ("node.down", None) in feed.kinds("node-a"), timeout=TTL + 3, message="node-a down")
        assert [e for e in feed.events if e.get("name") == "node-a" and e["event"] == "node.down"][0][
            "reason"] == "expired"
        # the other lookupd follows the same etcd watch, a moment apart
        wait_for(lambda: names(two) == ["node-c"], timeout=5, message="the second lookupd to see node-a go")

        # a lookupd restart loses nothing: the registry is etcd's
        one.stop()
        one = LookupdProcess(subdir(tmp_path, "l3"),
                             "--etcd", etcd.etcd_url)
        assert names(one) == ["node-c"]
        assert one.get("/nodes")["nodes"] == two.get("/nodes")["nodes"]
    finally:
        if feed is not None:
            feed.close()
        one.stop()
        two.stop()


def test_in_memory_lookupd_has_the_watch_feed_too(tmp_path):
    lookupd = LookupdProcess(tmp_path)
    feed = None
    try:
        feed = Feed(lookupd.url)
        wait_for(lambda: feed.kinds() == [("ready", None)], timeout=5, message="an empty snapshot")
        body = json.dumps({"node_id": "n1", "name": "one", "jobs": ["web"], "ttl": 1}).encode()
        urllib.request.urlopen(urllib.request.Request(lookupd.url + "/nodes", body, method="POST"), timeout=5)
        wait_for(lambda: ("job.loaded", "default.web") in feed.kinds("one"), timeout=5, message="job.loaded")
        assert ("node.up", None) in feed.kinds("one")
        # no heartbeat: expired, and the feed says so without anyone asking
        wait_for(lambda: ("node.down", None) in feed.kinds("one"), timeout=5, message="node.down on expiry")
    finally:
        if feed is not None:
            feed.close()
        lookupd.stop()


def test_etcd_lookupd_answers_503_while_etcd_is_away(tmp_path):
    lookupd = LookupdProcess(tmp_path, "--etcd", f"etcd://127.0.0.1:{free_port()}")
    try:
        req = urllib.request.Request(lookupd.url + "/nodes")
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert json.loads(exc.read())["error"]["code"] == "unavailable"
    finally:
        lookupd.stop()


def test_http_registration_through_an_etcd_lookupd_lands_in_etcd(etcd, tmp_path):
    from test_lookupd import http

    from zsup.lookup.etcd import EtcdClient, parse_etcd_urls

    one = LookupdProcess(subdir(tmp_path, "a"), "--etcd", etcd.etcd_url)
    two = LookupdProcess(subdir(tmp_path, "b"), "--etcd", etcd.etcd_url)
    feed = None
    try:
        wait_for(lambda: one.get("/nodes") == {"nodes": []}, timeout=10, message="the lookupd on etcd")
        feed = Feed(two.url)
        status, answer = http("POST", one.url + "/nodes", {"node_id": "n1", "name": "http-node", "jobs": ["web"],
                                                           "ttl": 2})
        assert status == 201, answer
        client = EtcdClient(parse_etcd_urls(etcd.etcd_url))
        assert registered(client)["http-node"]["jobs"] == ["default.web"]
        wait_for(lambda: names(two) == ["http-node"], timeout=5, message="the other lookupd to see it")
        status, answer = http("PUT", one.url + "/nodes/n1", {"jobs": ["web", "cron"]})
        assert status == 200 and answer["node"]["name"] == "http-node"  # a partial update keeps the rest
        wait_for(lambda: ("job.loaded", "default.cron") in feed.kinds("http-node"), timeout=5,
                 message="job.loaded through etcd")
        status, answer = http("DELETE", one.url + "/nodes/n1")
        assert status == 200
        wait_for(lambda: ("node.down", None) in feed.kinds("http-node"), timeout=5, message="node.down")
        assert [e["reason"] for e in feed.events if e["event"] == "node.down"] == ["left"]
        assert http("DELETE", one.url + "/nodes/n1")[0] == 404
        assert http("POST", one.url + "/nodes", {"node_id": "bad id!"})[0] == 400
    finally:
        if feed is not None:
            feed.close()
        one.stop()
        two.stop()
