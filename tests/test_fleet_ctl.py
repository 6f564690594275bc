"""zsupctl --cluster: one table of the fleet, and commands fanned out to the nodes that run a
job, with a dead node reported as such (exit status 1), never hidden."""

import json
import os
import signal
import subprocess

import pytest
from conftest import PYTHON, ROOT, kill_tree, wait_for
from fleet_helpers import etcd  # noqa: F401
from test_fleet import gateway_up, registered, start_fleet

from zsup.cli.zsupctl.cluster import spread
from zsup.lookup.etcd import EtcdClient, parse_etcd_urls


def zsupctl(*args):
    out = subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", *args], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    return out.returncode, out.stdout, out.stderr


def test_spread_is_as_even_as_can_be():
    assert spread(12, 5) == [3, 3, 2, 2, 2]
    assert spread(12, 3) == [4, 4, 4]
    assert spread(1, 3) == [1, 0, 0]


@pytest.fixture
def long_lease_fleet(etcd, zsupd_factory, tmp_path):
    # a long lease: a killed node stays registered, and must be reported unreachable
    nodes = start_fleet(etcd, zsupd_factory, tmp_path, {
        "node-a": {"web": "sleep 300"},
        "node-b": {"web": "sleep 300", "worker": "sleep 300"},
        "node-c": {"web": "sleep 300", "batch": "sleep 300"},
    }, ttl=30)
    client = EtcdClient(parse_etcd_urls(etcd.etcd_url))
    wait_for(lambda: len(registered(client)) == 3, timeout=15, message="three nodes in etcd")
    for d in nodes.values():
        wait_for(lambda: gateway_up(d), timeout=20, interval=0.1, message="the node's gateway")
    return nodes


def numprocesses(d, job="web"):
    return d.call("info", name=job)["numprocesses"]


def test_cluster_status_and_commands_fan_out(long_lease_fleet, etcd):
    nodes = long_lease_fleet
    cluster = ["--cluster", etcd.etcd_url]
    code, out, err = zsupctl(*cluster, "status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "JOB", "STATE", "PROCS", "UPTIME"]
    rows = {(line.split()[0], line.split()[1]) for line in lines[1:]}
    assert rows == {("node-a", "default.web"), ("node-b", "default.web"), ("node-b", "default.worker"),
                    ("node-c", "default.web"), ("node-c", "default.batch")}

    # scale web 2 on every node that runs it
    code, out, err = zsupctl(*cluster, "scale", "web", "2")
    assert code == 0, err
    assert all(numprocesses(d) == 2 for d in nodes.values())
    # --total spreads: 7 over three nodes is 3, 2, 2 (by name)
    code, out, err = zsupctl(*cluster, "--total", "7", "scale", "web")
    assert code == 0, err
    assert [numprocesses(nodes[n]) for n in ("node-a", "node-b", "node-c")] == [3, 2, 2]
    # --node: one node only; a job only one node runs goes there alone
    code, out, err = zsupctl(*cluster, "--node", "node-c", "scale", "web", "1")
    assert code == 0 and numprocesses(nodes["node-c"]) == 1 and numprocesses(nodes["node-a"]) == 3
    code, out, err = zsupctl(*cluster, "--json", "stop", "worker")
    assert code == 0, err
    assert [r["node"] for r in json.loads(out)] == ["node-b"]

    # node-b dies; its lease (30 s) keeps it registered: it must show as failed, not vanish
    kids = nodes["node-b"].children()
    nodes["node-b"].proc.send_signal(signal.SIGKILL)
    nodes["node-b"].proc.wait(5)
    kill_tree(kids)
    code, out, err = zsupctl(*cluster, "scale", "web", "4")
    assert code == 1
    result = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert result == {"node-a": "ok", "node-b": "FAILED", "node-c": "ok"}
    assert "1 of 3 node(s) failed: node-b" in err
    assert numprocesses(nodes["node-a"]) == 4 == numprocesses(nodes["node-c"])
    code, out, err = zsupctl(*cluster, "status")
    assert code == 1
    assert any(line.startswith("node-b") and "unreachable" in line for line in out.splitlines())
    assert "node-a" in out and "node-c" in out

    # a node's own refusal is a failure too, with its reason
    code, out, err = zsupctl(*cluster, "--node", "node-a", "scale", "nosuchjob", "2")
    assert code == 1 and "no job" in out


def test_cluster_usage_errors(etcd):
    code, out, err = zsupctl("--cluster", etcd.etcd_url, "scale", "web", "2")
    assert code == 1 and "no registered node runs default.web" in err
    code, out, err = zsupctl("--cluster", "ftp://nowhere", "status")
    assert code == 2 and "--cluster" in err
    code, out, err = zsupctl("scale", "web")
    assert code == 2 and "required: N" in err
