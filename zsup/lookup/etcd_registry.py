"""zsup-lookupd's registry kept in etcd (``zsup-lookupd --etcd URL``).

The nodes live in etcd under ``/zsup/nodes/<node_id>`` (zsup.lookup.etcd_registrar writes
them, each under its node's lease), so any number of lookupds answer the same and a restarted
one loses nothing. Each lookupd holds a copy in memory, filled by one listing and kept current
by an etcd watch that starts at the listing's revision: reads never go to etcd, and changes
reach ``GET /watch`` feeds as they happen. When the watch breaks (etcd restarts, a network
cut), the thread lists again, publishes the difference, and watches on; until the first
listing, and while etcd cannot be reached, reads answer 503 rather than old news.

Nodes that register over HTTP (``lookupd_addresses``) are written to etcd too, under a lease
of their ttl granted per write: their heartbeat (each PUT) is what keeps them there.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from zsup.lookup.changes import Changes, diff
from zsup.lookup.etcd import EtcdClient, EtcdError
from zsup.lookup.etcd_registrar import NODES
from zsup.lookup.registry import (
    DEFAULT_TTL,
    RegistryError,
    check_fields,
    check_node_id,
    job_name,
    session_name,
)

__all__ = ["EtcdRegistry"]

log = logging.getLogger("zsup.lookupd")

RETRY_MIN, RETRY_MAX = 0.2, 5.0


class EtcdRegistry:
    """The same methods as zsup.lookup.registry.Registry; thread-safe."""

    def __init__(self, client: EtcdClient, default_ttl: float = DEFAULT_TTL):
        self.client = client
        self.default_ttl = default_ttl
        self.changes = Changes()
        self._lock = threading.Lock()
        self._nodes: dict[str, dict] = {}
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._watch = None
        self._thread = threading.Thread(target=self._follow, name="zsup-lookupd-etcd", daemon=True)

    # -- following etcd

    def start(self, wait: float = 5.0) -> bool:
        """Start following etcd; True when the first listing came within ``wait`` seconds."""
        self._thread.start()
        return self._ready.wait(wait)

    def stop(self) -> None:
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        self.changes.close()
        self._thread.join(5)

    def _follow(self) -> None:
        retry = RETRY_MIN
        failing = False
        while not self._stopping.is_set():
            try:
                revision, kvs = self.client.get_prefix(NODES)
                self._resync(kvs)
                self._ready.set()
                if failing:
                    log.info("etcd answers again: %d node(s)", len(kvs))
                failing, retry = False, RETRY_MIN
                self._watch = self.client.watch_prefix(NODES, revision + 1)
                if self._stopping.is_set():
                    break
                for kind, key, value, _rev in self._watch:
                    self._apply(kind, key, value)
            except EtcdError as exc:
                if self._stopping.is_set():
                    break
                if not failing:
                    log.warning("etcd: %s (retrying)", exc)
                failing = True
                self._ready.clear()
                self._stopping.wait(retry)
                retry = min(retry * 2, RETRY_MAX)
            finally:
                if self._watch is not None:
                    self._watch.close()
                    self._watch = None

    @staticmethod
    def _parse(key: str, value: str) -> dict | None:
        try:
            doc = json.loads(value)
            node_id = key[len(NODES):]
            if isinstance(doc, dict) and doc.get("node_id") == node_id:
                return doc
        except ValueError:
            pass
        log.warning("ignoring a malformed node in etcd at %s", key)
        return None

    def _resync(self, kvs: dict[str, str]) -> None:
        fresh = {}
        for key, value in kvs.items():
            doc = self._parse(key, value)
            if doc is not None:
                fresh[doc["node_id"]] = doc
        with self._lock:
            old, self._nodes = self._nodes, fresh
        events = []
        for node_id in sorted(set(old) | set(fresh)):
            events += diff(old.get(node_id), fresh.get(node_id), "gone")
        self.changes.publish(events)

    def _apply(self, kind: str, key: str, value: str) -> None:
        node_id = key[len(NODES):]
        with self._lock:
            old = self._nodes.get(node_id)
            if kind == "delete":
                self._nodes.pop(node_id, None)
                new = None
            else:
                new = self._parse(key, value)
                if new is None:
                    return
                self._nodes[node_id] = new
        # A delete is a revoke (clean stop: "left") or an expired lease; etcd does not say
        # which, so a node that said goodbye is told apart by its last word, when it had one.
        self.changes.publish(diff(old, new, "left" if old and old.get("leaving") else "expired"))

    def _snapshot(self) -> list[dict]:
        if not self._ready.is_set():
            raise RegistryError(503, "unavailable", "etcd cannot be reached (see the lookupd's log)")
        with self._lock:
            nodes = list(self._nodes.values())
        return sorted(nodes, key=lambda n: (n.get("name") or "", n["node_id"]))

    # -- reads

    def nodes(self) -> list[dict]:
        return self._snapshot()

    def node(self, node_id: str) -> dict:
        for node in self._snapshot():
            if node["node_id"] == node_id:
                return node
        raise RegistryError(404, "not_found", f"no node {node_id!r}")

    def _index(self, field: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for node in self._snapshot():
            for value in node.get(field) or []:
                out.setdefault(value, []).append(node["node_id"])
        return {k: sorted(v) for k, v in sorted(out.items())}

    def jobs(self) -> dict[str, list[str]]:
        return self._index("jobs")

    def sessions(self) -> dict[str, list[str]]:
        return self._index("sessions")

    def find_job(self, name: str) -> list[dict]:
        name = job_name(name)
        return [n for n in self._snapshot() if name in (n.get("jobs") or [])]

    def find_session(self, session: str) -> list[dict]:
        session = session_name(session)
        return [n for n in self._snapshot() if session in (n.get("sessions") or [])]

    # -- writes from nodes that register over HTTP

    def register(self, doc: object, node_id: str | None = None) -> tuple[dict, bool]:
        if not isinstance(doc, dict):
            raise RegistryError(400, "bad_request", "the body must be a JSON object")
        unknown = sorted(set(doc) - {"node_id", "name", "urls", "version", "jobs", "sessions", "ttl"})
        if unknown:
            raise RegistryError(400, "bad_request", f"unknown field(s): {', '.join(unknown)}")
        node_id = check_node_id(node_id if node_id is not None else doc.get("node_id"))
        if "node_id" in doc and doc["node_id"] != node_id:
            raise RegistryError(400, "bad_request", f"node_id {doc['node_id']!r} in the body differs from "
                                f"{node_id!r} in the URL")
        fields = check_fields(doc)
        existing = {n["node_id"]: n for n in self._snapshot()}.get(node_id)
        now = time.time()
        node = dict(existing or {"node_id": node_id, "name": node_id, "urls": {}, "version": None,
                                 "jobs": [], "sessions": [], "ttl": self.default_ttl, "registered_at": now})
        node.update(fields)
        if "jobs" in fields and "sessions" not in fields:
            node["sessions"] = sorted({j.split(".", 1)[0] for j in node["jobs"]})
        node["last_seen"] = now
        try:
            lease = self.client.grant(max(1, int(round(node["ttl"]))))
            self.client.put(NODES + node_id, json.dumps(node), lease)
        except EtcdError as exc:
            raise RegistryError(503, "unavailable", f"cannot write to etcd: {exc}") from None
        return node, existing is None

    def unregister(self, node_id: str) -> dict:
        node = {n["node_id"]: n for n in self._snapshot()}.get(check_node_id(node_id))
        if node is None:
            raise RegistryError(404, "not_found", f"no node {node_id!r}")
        try:
            # a last word first, so that every lookupd's watchers see a goodbye, not a death
            self.client.put(NODES + node_id, json.dumps(dict(node, leaving=True)))
            deleted = self.client.delete(NODES + node_id)
        except EtcdError as exc:
            raise RegistryError(503, "unavailable", f"cannot write to etcd: {exc}") from None
        if not deleted:
            raise RegistryError(404, "not_found", f"no node {node_id!r}")
        return {"node_id": node_id, "deleted": True}
