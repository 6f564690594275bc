"""One gateway's fleet view: /cluster/nodes, /cluster/jobs, and a job's output stream on
another node tailed through this gateway."""

import json
import threading
import urllib.error
import urllib.request

from conftest import PYTHON, wait_for
from fleet_helpers import etcd  # noqa: F401
from test_fleet import gateway_up, registered, start_fleet

from zsup.lookup.etcd import EtcdClient, parse_etcd_urls

TICKER = ("import itertools, time\n"
          "for i in itertools.count(1):\n    print('tick', i, flush=True)\n    time.sleep(0.05)\n")


def get(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_gateway_shows_the_fleet_and_relays_a_remote_stream(etcd, zsupd_factory, tmp_path):
    ticker = tmp_path / "ticker.py"
    ticker.write_text(TICKER)
    nodes = start_fleet(etcd, zsupd_factory, tmp_path, {
        "node-a": {"web": "sleep 300"},
        "node-b": {"web": "sleep 300"},
        "node-c": {"ticker": f"{PYTHON} -u {ticker}"},
    })
    client = EtcdClient(parse_etcd_urls(etcd.etcd_url))
    wait_for(lambda: len(registered(client)) == 3, timeout=15, message="three nodes in etcd")
    for d in nodes.values():
        wait_for(lambda: gateway_up(d), timeout=20, interval=0.1, message="the node's gateway")
    gw = nodes["node-a"].http_url  # its gateway knows the fleet from the config's registry

    assert [n["name"] for n in get(gw + "/cluster/nodes")["nodes"]] == ["node-a", "node-b", "node-c"]
    jobs = get(gw + "/cluster/jobs")["jobs"]
    assert sorted(jobs) == ["default.ticker", "default.web"]
    assert [(j["node"], j["state"]) for j in jobs["default.web"]] == [("node-a", "running"), ("node-b", "running")]
    assert jobs["default.ticker"][0]["node"] == "node-c"

    # node-c's ticker, tailed through node-a's gateway
    pids = get(gw + "/cluster/nodes/node-c/processes/ticker/_pids")["pids"]
    assert len(pids) == 1
    resp = urllib.request.urlopen(f"{gw}/cluster/nodes/node-c/streams/{pids[0]}/stdout?feed=continuous",
                                  timeout=10)
    assert resp.headers["X-Zsup-Node"] == "node-c"
    lines = []

    def read():
        try:
            for line in resp:
                lines.append(line.decode())
        except (OSError, ValueError, AttributeError):
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 5, timeout=10, message="live lines from node-c")
        numbers = [int(line.split()[1]) for line in lines[:5]]
        assert numbers == list(range(numbers[0], numbers[0] + 5))  # in order, none lost
    finally:
        resp.close()
    reader.join(5)

    # an unknown node, and a node-c route that does not exist: clear JSON errors
    try:
        get(gw + "/cluster/nodes/nobody/jobs")
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404 and "no node 'nobody'" in json.loads(exc.read())["error"]["message"]


def test_without_a_fleet_cluster_routes_say_how_to_get_one(zsupd_factory, tmp_path):
    from fleet_helpers import free_port

    port = free_port()
    d = zsupd_factory(f"[zsup]\nhttp_endpoints = web\n[endpoint:web]\nbind = 127.0.0.1:{port}\n")
    d.http_url = f"http://127.0.0.1:{port}"
    wait_for(lambda: gateway_up(d), timeout=20, interval=0.1, message="the gateway")
    try:
        get(d.http_url + "/cluster/nodes")
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404 and "--cluster" in json.loads(exc.read())["error"]["message"]
