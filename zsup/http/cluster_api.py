"""The gateway's fleet view: ``/cluster/nodes``, ``/cluster/jobs``, and any node's gateway
reached through this one (``/cluster/nodes/<node>/<path>``), streams included, so a browser
can tail a job on any node through one gateway (docs/fleet.md).

The fleet comes from ``ctx.fleet``, set by zsup-http when it is given ``--cluster`` (or its
config's ``registry``): an object with ``nodes()``, ``call(node, cmd, args)`` and
``open(node, path, timeout)`` (zsup.lookup.fleet.Fleet). This module only knows that shape:
the gateway speaks to its own zsupd over the bus and to other nodes over their HTTP gateways.
Errors of the fleet are ZsupErrors with a bus code, answered as JSON like every other.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from zsup.bus.topics import is_internal
from zsup.errors import ZsupError
from zsup.http.routing import RouteTable
from zsup.http.web import HTTPError, StreamResponse

#: A table of its own, consulted by the gateway for paths under /cluster: the fleet view is an
#: add-on of zsup-http, not part of zsupd's API (nor of its /openapi.json).
cluster = RouteTable()
route = cluster.route

#: a proxied stream ends when the node sends nothing for this long (ask for ?heartbeat=)
PROXY_IDLE = 300.0
CHUNK = 65536
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authenticate", "proxy-authorization", "content-length"}


def _fleet(ctx):
    fleet = getattr(ctx, "fleet", None)
    if fleet is None:
        raise HTTPError(404, "no fleet view: start zsup-http with --cluster URL (or set [zsup] registry)")
    return fleet


def _node(fleet, name: str) -> dict:
    for node in fleet.nodes():
        if name in (node.get("name"), node.get("node_id")):
            return node
    raise HTTPError(404, f"no node {name!r} is registered")


@route("GET", "/cluster/nodes", "Every registered node: name, urls, jobs (the fleet registry)", tag="cluster")
def cluster_nodes(ctx, req):
    return {"nodes": _fleet(ctx).nodes()}


@route("GET", "/cluster/jobs", "Every job of the fleet, with its state on each node that runs it",
       tag="cluster")
def cluster_jobs(ctx, req):
    fleet = _fleet(ctx)
    nodes = fleet.nodes()

    def status(node):
        try:
            return node, fleet.call(node, "status", {}), None
        except ZsupError as exc:
            return node, None, exc.to_dict()

    jobs: dict[str, list[dict]] = {}
    unreachable: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(nodes)))) as pool:
        for node, rows, error in pool.map(status, nodes):
            name = node.get("name") or node.get("node_id")
            if error is not None:  # the registry says it runs these; it does not answer
                unreachable[name] = error
                for job in node.get("jobs") or []:
                    jobs.setdefault(job, []).append({"node": name, "error": error})
                continue
            for row in rows or []:
                if not is_internal(row["job"]):
                    jobs.setdefault(row["job"], []).append(
                        {"node": name, "state": row.get("state"), "running": row.get("running"),
                         "numprocesses": row.get("numprocesses")})
    # sorted (session, name), as zsupd lists jobs: not the dotted string's order
    return {"jobs": dict(sorted(jobs.items(), key=lambda item: item[0].partition(".")[::2])),
            "unreachable": dict(sorted(unreachable.items()))}


@route("GET", "/cluster/nodes/{node}", "One registered node", tag="cluster")
def cluster_node(ctx, req, node):
    return {"node": _node(_fleet(ctx), node)}


@route("GET", "/cluster/nodes/{node}/{path:path}", "GET any route of a node's own gateway through this "
       "one, streams included (/streams/{pid}/{label}?feed=continuous, /watch, ...)", tag="cluster",
       stream=True)
def cluster_proxy(ctx, req, node, path):
    fleet = _fleet(ctx)
    target = _node(fleet, node)
    release = ctx.acquire_stream()  # a proxied feed holds a worker thread like a local one
    try:
        query = req.environ.get("QUERY_STRING")
        upstream = fleet.open(target, "/" + path + (f"?{query}" if query else ""), timeout=PROXY_IDLE)
    except BaseException:
        release()
        raise
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    headers["X-Zsup-Node"] = target.get("name") or target.get("node_id")
    content_type = headers.pop("Content-Type", "application/octet-stream")
    return StreamResponse(_Relay(upstream, release), content_type, status=upstream.status, headers=headers)


class _Relay:
    """The node's answer, passed on as it comes; close() (the client left, or the end) closes
    the upstream connection and frees the stream slot."""

    def __init__(self, upstream, release):
        self.upstream = upstream
        self.release = release

    def __iter__(self):
        try:
            while True:
                data = self.upstream.read1(CHUNK)
                if not data:
                    return
                yield data
        except OSError:
            return  # the node went away or stayed silent past PROXY_IDLE: the stream ends

    def close(self):
        try:
            self.upstream.close()
        finally:
            self.release()
