"""A fleet on loopback: a real etcd and three zsupd nodes, each with its own HTTP gateway.

Registration under a lease, a SIGKILLed node gone within one lease TTL, a clean stop leaving
at once, job changes followed.
"""

import json
import signal
import time

import pytest
from conftest import wait_for
from fleet_helpers import etcd, free_port  # noqa: F401

from zsup.lookup.etcd import EtcdClient, parse_etcd_urls

TTL = 2


def node_config(etcd_url, name, port, jobs, ttl=TTL):
    return (f"[zsup]\nregistry = {etcd_url}\nregistry_ttl = {ttl}\nnode_name = {name}\n"
            f"http_endpoints = web\n[endpoint:web]\nbind = 127.0.0.1:{port}\n"
            + "".join(f"[process:{job}]\ncmd = {cmd}\n" for job, cmd in jobs.items()))


def start_fleet(etcd, zsupd_factory, tmp_path, jobs_by_node, ttl=TTL):
    nodes = {}
    for name, jobs in jobs_by_node.items():
        port = free_port()
        d = zsupd_factory(node_config(etcd.etcd_url, name, port, jobs, ttl), path=tmp_path / name)
        d.http_url = f"http://127.0.0.1:{port}"
        nodes[name] = d
    return nodes


def registered(client):
    """{name: node document} as etcd holds them."""
    _, kvs = client.get_prefix("/zsup/nodes/")
    docs = [json.loads(v) for v in kvs.values()]
    return {d["name"]: d for d in docs}


def gateway_up(d):
    import urllib.request

    try:
        with urllib.request.urlopen(d.http_url + "/ping", timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def fleet(etcd, zsupd_factory, tmp_path):
    nodes = start_fleet(etcd, zsupd_factory, tmp_path, {
        "node-a": {"web": "sleep 300"},
        "node-b": {"web": "sleep 300", "worker": "sleep 300"},
        "node-c": {"batch": "sleep 300"},
    })
    client = EtcdClient(parse_etcd_urls(etcd.etcd_url))
    wait_for(lambda: len(registered(client)) == 3, timeout=15, message="three nodes in etcd")
    for d in nodes.values():
        wait_for(lambda: gateway_up(d), timeout=20, interval=0.1, message="the node's gateway")
    return nodes, client


def test_nodes_register_with_jobs_and_urls_and_follow_changes(fleet):
    nodes, client = fleet
    docs = registered(client)
    assert docs["node-a"]["jobs"] == ["default.web"]
    assert docs["node-b"]["jobs"] == ["default.web", "default.worker"]
    assert docs["node-c"]["jobs"] == ["default.batch"]
    assert docs["node-b"]["urls"]["http"] == nodes["node-b"].http_url
    assert docs["node-a"]["ttl"] == TTL
    # a job loaded at run time shows within a fraction of a second, and leaves with unload
    nodes["node-c"].call("load", config={"name": "extra", "cmd": "sleep 300"})
    wait_for(lambda: "default.extra" in registered(client)["node-c"]["jobs"], timeout=5, message="extra in etcd")
    nodes["node-c"].call("unload", name="extra")
    wait_for(lambda: "default.extra" not in registered(client)["node-c"]["jobs"], timeout=5,
             message="extra gone from etcd")
    # the lease is kept alive: still there after several TTLs
    deadline = time.monotonic() + 3 * TTL
    while time.monotonic() < deadline:
        assert set(registered(client)) == {"node-a", "node-b", "node-c"}
        time.sleep(0.2)


def test_a_killed_node_is_gone_within_one_ttl_and_a_stopped_one_at_once(fleet):
    nodes, client = fleet
    kids = nodes["node-a"].children()
    nodes["node-a"].proc.send_signal(signal.SIGKILL)
    nodes["node-a"].proc.wait(5)
    killed_at = time.monotonic()
    wait_for(lambda: "node-a" not in registered(client), timeout=TTL + 3, interval=0.05,
             message="the killed node to leave etcd")
    # one lease TTL (plus etcd's expiry tick and the time of one read)
    assert time.monotonic() - killed_at <= TTL + 2
    from conftest import kill_tree
    kill_tree(kids)
    nodes["node-b"].stop()
    # revoked on a clean stop: the key is gone already, no TTL to wait
    assert set(registered(client)) == {"node-c"}


def test_zsupd_runs_without_etcd_and_registers_once_it_comes(zsupd_factory, tmp_path):
    from fleet_helpers import Etcd

    port = free_port()
    d = zsupd_factory(f"[zsup]\nregistry = etcd://127.0.0.1:{port}\nregistry_ttl = 2\nnode_name = lonely\n"
                      "[process:web]\ncmd = sleep 300\n", path=tmp_path / "n")
    # no etcd: zsupd answers and works all the same
    assert d.call("load", config={"name": "extra", "cmd": "sleep 300"})["job"] == "default.extra"
    server = Etcd(tmp_path, port=port)
    try:
        client = EtcdClient(parse_etcd_urls(server.etcd_url))
        wait_for(lambda: "lonely" in registered(client), timeout=15, message="the node once etcd is up")
        assert registered(client)["lonely"]["jobs"] == ["default.extra", "default.web"]
    finally:
        server.stop()
    assert "cannot reach etcd" in d.log()


def test_a_registry_certificate_that_cannot_be_loaded_is_one_clear_error(tmp_path):
    import subprocess

    from conftest import PYTHON, ROOT

    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    (tmp_path / "zsup.ini").write_text(f"[zsup]\nregistry = etcd://127.0.0.1:{free_port()}\n"
                                       f"registry_cacert = {bad}\n")
    out = subprocess.run([PYTHON, "-m", "zsup.cli.zsupd", "-c", str(tmp_path / "zsup.ini"), "--state-dir",
                          str(tmp_path / "state")], capture_output=True, text=True, timeout=30,
                         env=dict(__import__("os").environ, PYTHONPATH=ROOT))
    assert out.returncode == 1
    assert "zsupd: error: registry:" in out.stderr and "Traceback" not in out.stderr
