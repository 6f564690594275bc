"""The dashboard's fleet view (docs/dashboard.md, "Fleet") in headless Chromium: a real etcd
and three zsupd nodes on loopback, the page opened on one node's gateway. It lists the nodes
and their jobs, follows changes, tails a job of another node through the gateway's relay, and
shows a killed node down; a gateway without a cluster hides the view."""

import json
import os
import signal
import sys

from conftest import kill_tree, wait_for
from fleet_helpers import etcd  # noqa: F401
from test_dashboard import ARTIFACTS, TICKER, browser  # noqa: F401
from test_fleet import gateway_up, registered, start_fleet
from test_http_support import gw  # noqa: F401

from zsup.lookup.etcd import EtcdClient, parse_etcd_urls

TTL = 6  # long enough to see a killed node unreachable before its lease expires


def node_state(b, node):
    return b.js(f"(document.querySelector('article.node[data-node={json.dumps(node)}]') || {{dataset: {{}}}})"
                ".dataset.state || null")


def job_row(b, node, job):
    """(state, count) of `job` in `node`'s card, or None."""
    return b.js(f"""(() => {{
        const row = document.querySelector('article.node[data-node={json.dumps(node)}] tr[data-job={json.dumps(job)}]');
        return row ? [row.dataset.state, row.children[2].textContent] : null; }})()""")


def log_lines(b):
    return b.js("[...document.querySelectorAll('#detail .log .line')].map(l => "
                "[Number(l.dataset.seq), l.querySelector('.ltext').textContent])")


def test_fleet_view_lists_nodes_tails_a_remote_job_and_shows_a_node_down(browser, etcd, zsupd_factory,  # noqa: F811
                                                                         tmp_path):
    ticker = tmp_path / "ticker.py"
    ticker.write_text(TICKER)
    nodes = start_fleet(etcd, zsupd_factory, tmp_path, {
        "node-a": {"web": "sleep 300"},
        "node-b": {"web": "sleep 300", "worker": "sleep 300"},
        "node-c": {"ticker": f"{sys.executable} -u {ticker}"},
    }, ttl=TTL)
    client = EtcdClient(parse_etcd_urls(etcd.etcd_url))
    wait_for(lambda: len(registered(client)) == 3, timeout=15, message="three nodes in etcd")
    for d in nodes.values():
        wait_for(lambda: gateway_up(d), timeout=20, interval=0.1, message="the node's gateway")

    b = browser
    b.goto(nodes["node-a"].http_url + "/ui/#fleet")
    try:
        wait_for(lambda: b.js("!document.getElementById('tab-fleet').hidden"), message="the fleet tab")
        assert b.js("document.getElementById('sessions').hidden")  # the fleet instead of the jobs
        for name in nodes:
            wait_for(lambda: node_state(b, name) == "up", timeout=15, message=f"{name} up")
        wait_for(lambda: job_row(b, "node-b", "default.worker") == ["running", "1/1"], message="node-b's worker")
        assert job_row(b, "node-a", "default.web") == ["running", "1/1"]
        assert job_row(b, "node-c", "default.ticker") == ["running", "1/1"]
        assert job_row(b, "node-a", "default.ticker") is None

        # live: a job loaded on node-b, then stopped, shows without reloading the page
        nodes["node-b"].call("load", config={"name": "extra", "cmd": "sleep 300", "numprocesses": 2})
        wait_for(lambda: job_row(b, "node-b", "default.extra") == ["running", "2/2"], timeout=10,
                 message="the new job on node-b")
        nodes["node-b"].call("stop_job", name="extra")
        wait_for(lambda: job_row(b, "node-b", "default.extra") == ["stopped", "0/2"], timeout=10,
                 message="the job stopped on node-b")

        # node-c's ticker, tailed through node-a's gateway: the ring's last lines, then live ones
        b.click('article.node[data-node="node-c"] tr[data-job="default.ticker"] button.tail')
        wait_for(lambda: b.text("#detail h3") == "output of default.ticker on node-c", message="the log view")
        wait_for(lambda: b.js("document.querySelector('#detail .log').dataset.loaded === 'true'"),
                 message="the ring's lines read")
        first = wait_for(lambda: (lines := log_lines(b)) and lines, message="lines from node-c")
        wait_for(lambda: len(log_lines(b)) >= len(first) + 5, timeout=10, message="live lines from node-c")
        lines = log_lines(b)
        assert [seq for seq, _ in lines] == list(range(lines[0][0], lines[0][0] + len(lines)))  # none lost
        assert all(text == f"tick {seq}" for seq, text in lines)  # each numbered as the node numbers it

        # node-b killed: unreachable at once, then down once its lease expired
        kids = nodes["node-b"].children()
        nodes["node-b"].proc.send_signal(signal.SIGKILL)
        nodes["node-b"].proc.wait(5)
        kill_tree(kids)
        wait_for(lambda: node_state(b, "node-b") == "unreachable", timeout=TTL, message="node-b unreachable")
        assert "2 of 3 nodes up" in b.text("#fleet .fleet-head")
        assert "127.0.0.1" in b.text('article.node[data-node="node-b"] header .last-error')  # why
        wait_for(lambda: node_state(b, "node-b") == "down", timeout=TTL + 10, message="node-b down")
        assert "gone from the registry" in b.text('article.node[data-node="node-b"] header')
        assert job_row(b, "node-b", "default.web") == ["unknown", ""]  # what it had, greyed
        assert node_state(b, "node-a") == "up" and node_state(b, "node-c") == "up"
        assert "2 of 3 nodes up" in b.text("#fleet .fleet-head")
        # the tail goes on meanwhile
        seen = len(log_lines(b))
        wait_for(lambda: len(log_lines(b)) > seen, timeout=10, message="more lines from node-c")
    finally:
        b.screenshot(os.path.join(ARTIFACTS, "dashboard-fleet.png"))
    assert b.cdp.errors == []


def test_without_a_cluster_the_fleet_view_is_hidden(browser, gw):  # noqa: F811
    b = browser
    b.goto(f"{gw.base}/ui/")
    wait_for(lambda: b.js("!document.getElementById('main').hidden && "
                          "document.getElementById('tab-jobs').classList.contains('current')"),
             message="the page ready")
    assert b.js("document.getElementById('tab-fleet').hidden")
    b.js("location.hash = '#fleet'")
    wait_for(lambda: "No fleet configured" in (b.text("#fleet") or ""), message="no fleet configured")
    assert "--cluster" in b.text("#fleet")
    b.js("location.hash = '#jobs'")
    wait_for(lambda: b.js("document.getElementById('fleet').hidden && !document.getElementById('sessions').hidden"),
             message="back to the jobs")
    assert b.cdp.errors == []
