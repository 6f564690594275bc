"""zsupctl --cluster URL|etcd://...: one view and one control of every registered node.

- ``status``: one table of every node's jobs and their states, asked of each node at once;
  a node that does not answer is a row that says so.
- A command on a job (start, stop, scale, add, sub, reload, unload, kill, info) goes to every
  node whose registration lists the job, or to ``--node NAME`` only. ``scale web 3`` sets 3
  on each node; ``scale web --total 12`` spreads 12 over them (the first nodes by name take
  the remainder).
- Every node's result is printed, one line each (``--json``: a list of
  ``{"node", "ok", "result" | "error"}``); the exit status is 1 when any node failed.

Nodes are reached over their HTTP gateway (``POST /bus/<cmd>``), else their TCP bus with
``--curve-key``/``--server-key``. zsup does not place jobs: a job runs where it is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from zsup.bus.parse import scale_order
from zsup.bus.topics import is_internal
from zsup.cli.zsupctl.context import PROG, UsageError
from zsup.cli.zsupctl.format import _plural, format_table, human_duration, job_state
from zsup.lookup.fleet import Fleet, FleetError, node_label

__all__ = ["add_options", "run", "spread"]

#: zsupctl command -> the bus command sent to each node
JOB_COMMANDS = {"start": "start_job", "stop": "stop_job", "scale": "scale", "add": "scale", "sub": "scale",
                "reload": "reload", "unload": "unload", "kill": "killall", "info": "info"}


def add_options(group: argparse._ArgumentGroup) -> None:
    sup = argparse.SUPPRESS
    group.add_argument("--cluster", metavar="URL", default=sup,
                       help="act on the fleet registered at URL: a lookupd (http://HOST:PORT) or etcd "
                            "(etcd://HOST:PORT[,...]); see docs/fleet.md")
    group.add_argument("--node", metavar="NAME", default=sup, help="with --cluster: only this node (name or id)")
    group.add_argument("--total", metavar="N", type=int, default=sup,
                       help="with --cluster scale: N processes in all, spread over the nodes running the job")
    group.add_argument("--cluster-cacert", metavar="FILE", default=sup, help="CA for https/TLS etcd and gateways")
    group.add_argument("--cluster-cert", metavar="FILE", default=sup, help="client certificate (mutual TLS)")
    group.add_argument("--cluster-key", metavar="FILE", default=sup, help="client key (mutual TLS)")


DEFAULTS = {"cluster": None, "node": None, "total": None, "cluster_cacert": None, "cluster_cert": None,
            "cluster_key": None}


def spread(total: int, count: int) -> list[int]:
    """``total`` processes over ``count`` nodes, as even as can be: 12 over 5 -> 3, 3, 2, 2, 2."""
    base, extra = divmod(total, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def run(args: argparse.Namespace, curve: dict | None) -> int:
    try:
        fleet = Fleet(args.cluster, args.cluster_cacert, args.cluster_cert, args.cluster_key,
                      timeout=args.timeout, curve=curve)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--cluster: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        nodes = fleet.nodes()
    except FleetError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 1
    if args.node:
        nodes = [n for n in nodes if args.node in (n.get("name"), n.get("node_id"))]
        if not nodes:
            print(f"{PROG}: no node {args.node!r} is registered at {args.cluster}", file=sys.stderr)
            return 1
    if args.command == "status":
        return _status(fleet, nodes, args.json)
    if args.command not in JOB_COMMANDS:
        raise UsageError(f"{args.command} does not work with --cluster (status, "
                         f"{', '.join(sorted(JOB_COMMANDS))} do)")
    name = getattr(args, "name", None) or getattr(args, "target", None)
    if not name or name.isdigit():
        raise UsageError(f"{args.command} with --cluster needs a job NAME")
    job = name if "." in name else f"{getattr(args, 'session', None) or 'default'}.{name}"
    if not args.node:
        nodes = [n for n in nodes if job in (n.get("jobs") or [])]
        if not nodes:
            print(f"{PROG}: no registered node runs {job}", file=sys.stderr)
            return 1
    orders = _orders(args, job, nodes)
    results = _fan_out(nodes, lambda node, args_: fleet.call(node, JOB_COMMANDS[args.command], args_), orders)
    return _report(results, args.json, _describe(args.command))


def _orders(args, job: str, nodes: list[dict]) -> list[dict]:
    base: dict[str, Any] = {"name": job}
    if args.command == "kill":
        base["sig"] = args.signal
    if args.command in ("add", "sub"):
        return [dict(base, n=f"{'+' if args.command == 'add' else '-'}{args.n}") for _ in nodes]
    if args.command != "scale":
        return [dict(base) for _ in nodes]
    if args.total is not None:
        if args.total < 0:
            raise UsageError("--total must be >= 0")
        return [dict(base, n=f"={n}") for n in spread(args.total, len(nodes))]
    if args.n is None:
        raise UsageError("scale: give N, or --total N with --cluster")
    order = scale_order(args.n)
    if order is None:
        raise UsageError(f"scale: bad count {args.n.strip()!r} (use 3, +2, -1 or =3)")
    return [dict(base, n=order) for _ in nodes]


def _fan_out(nodes: list[dict], call: Callable[[dict, dict], Any], orders: list[dict | None]) -> list[dict]:
    """Each node's answer, asked all at once: {"node", "ok", "result"|"error"}, in node order."""

    def one(pair):
        node, order = pair
        try:
            return {"node": node_label(node), "ok": True, "result": call(node, order)}
        except FleetError as exc:
            return {"node": node_label(node), "ok": False, "error": {"code": exc.code, "message": exc.message}}

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(nodes)))) as pool:
        return list(pool.map(one, zip(nodes, orders)))


def _describe(command: str) -> Callable[[Any], str]:
    def text(r: Any) -> str:
        if not isinstance(r, dict):
            return json.dumps(r)
        if command in ("scale", "add", "sub", "start", "reload") and "numprocesses" in r:
            return f"{command} {r.get('job')}: {_plural(r['numprocesses'], 'process', 'processes')} wanted"
        if command == "kill" and "pids" in r:
            return f"signal {r.get('signal')} sent to {_plural(len(r['pids']), 'process', 'processes')}"
        if command == "info":
            return f"{r.get('job')}: {r.get('state')}, {r.get('running')}/{r.get('numprocesses')} running"
        return f"{command} {r.get('job', '')}: done".replace("  ", " ")
    return text


def _report(results: list[dict], as_json: bool, describe: Callable[[Any], str]) -> int:
    failed = [r for r in results if not r["ok"]]
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        rows = [[r["node"], "ok" if r["ok"] else "FAILED",
                 describe(r["result"]) if r["ok"] else r["error"]["message"]] for r in results]
        print(format_table(["NODE", "RESULT", "DETAIL"], rows, align="lll"))
        if failed:
            print(f"{PROG}: {len(failed)} of {len(results)} node(s) failed: "
                  f"{', '.join(r['node'] for r in failed)}", file=sys.stderr)
    return 1 if failed else 0


def _status(fleet: Fleet, nodes: list[dict], as_json: bool) -> int:
    results = _fan_out(nodes, lambda node, _: fleet.call(node, "status"), [None] * len(nodes))
    failed = [r for r in results if not r["ok"]]
    if as_json:
        print(json.dumps(results, indent=2))
        return 1 if failed else 0
    now = time.time()
    rows = []
    for r in results:
        if not r["ok"]:
            rows.append([r["node"], "-", f"unreachable: {r['error']['message']}", "-", "-"])
            continue
        jobs = [job for job in r["result"] or [] if not is_internal(job["job"])]  # not zsupd's own gateway
        for job in jobs:
            rows.append([r["node"], job["job"], job_state(job), f"{job['running']}/{job['numprocesses']}",
                         human_duration(now - job["started"]) if job.get("started") else "-"])
        if not jobs:
            rows.append([r["node"], "-", "no jobs loaded", "-", "-"])
    if not rows:
        print("no nodes registered")
    else:
        print(format_table(["NODE", "JOB", "STATE", "PROCS", "UPTIME"], rows, align="lllrl"))
    if failed:
        print(f"{PROG}: {len(failed)} of {len(results)} node(s) did not answer: "
              f"{', '.join(r['node'] for r in failed)}", file=sys.stderr)
    return 1 if failed else 0
