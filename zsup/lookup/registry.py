"""The registry of zsup-lookupd (zsup/lookup/lookupd.py serves it over HTTP): the nodes and
the jobs they run, the checks of what a node may say about itself, and expiry by ttl.

Thread rule: every Registry method may be called from any thread (one lock).
"""

from __future__ import annotations

import logging
import re
import threading
import time

from zsup.lookup.changes import Changes, diff

__all__ = ["DEFAULT_TTL", "MAX_TTL", "Registry", "RegistryError", "check_fields", "check_node_id", "job_name",
           "session_name"]

log = logging.getLogger("zsup.lookupd")

DEFAULT_TTL = 30.0
MAX_TTL = 86400.0
MAX_NODES = 10_000
MAX_JOBS = 100_000
DEFAULT_SESSION = "default"

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")  # a session or job name, as zsup.core.jobspec allows: no dots


class RegistryError(Exception):
    """A refused request: HTTP status, error code and a one-line message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def job_order(name: str) -> tuple[str, str]:
    """Listing order, as zsupd's: (session, name), not the dotted string's."""
    session, _, short = name.partition(".")
    return session, short


def _bad(message: str) -> RegistryError:
    return RegistryError(400, "bad_request", message)


def job_name(name: object) -> str:
    """``session.name`` as given, or ``default.name`` for a bare name; refuses anything else."""
    if not isinstance(name, str) or not name or len(name) > 512:
        raise _bad(f"a job name is a non-empty string, not {name!r}")
    parts = name.split(".")
    if len(parts) == 1:
        parts = [DEFAULT_SESSION, parts[0]]
    if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts):
        raise _bad(f"bad job name {name!r}: expected NAME or SESSION.NAME (no other dots)")
    return ".".join(parts)


def session_name(name: object) -> str:
    if not isinstance(name, str) or not _PART.fullmatch(name) or len(name) > 255:
        raise _bad(f"bad session name {name!r}")
    return name


def check_node_id(node_id: object) -> str:
    if not isinstance(node_id, str) or not node_id:
        raise _bad("node_id is required: a non-empty string")
    if not _NODE_ID.fullmatch(node_id):
        raise _bad(f"bad node_id {node_id!r}: up to 128 letters, digits and . _ : @ -")
    return node_id


def check_fields(doc: dict) -> dict:
    """A node document's fields, checked and normalised (jobs as ``session.name``, sorted)."""
    out: dict = {}
    if "name" in doc:
        name = doc["name"]
        if not isinstance(name, str) or not name or len(name) > 255:
            raise _bad("name must be a non-empty string of up to 255 characters")
        out["name"] = name
    if "urls" in doc:
        urls = doc["urls"]
        if not isinstance(urls, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= 2048 for k, v in urls.items()):
            raise _bad('urls must be an object of strings, such as {"http": "http://host:5000"}')
        out["urls"] = dict(urls)
    if "version" in doc:
        version = doc["version"]
        if version is not None and (not isinstance(version, str) or len(version) > 64):
            raise _bad("version must be a string")
        out["version"] = version
    if "jobs" in doc:
        jobs = doc["jobs"]
        if not isinstance(jobs, list) or len(jobs) > MAX_JOBS:
            raise _bad('jobs must be a list of job names, such as ["default.web"]')
        out["jobs"] = sorted({job_name(j) for j in jobs}, key=job_order)
    if "sessions" in doc:
        sessions = doc["sessions"]
        if not isinstance(sessions, list) or len(sessions) > MAX_JOBS:
            raise _bad('sessions must be a list of session names, such as ["default"]')
        out["sessions"] = sorted({session_name(s) for s in sessions}
                                 | {j.split(".", 1)[0] for j in out.get("jobs", ())})
    if "ttl" in doc and doc["ttl"] is not None:
        ttl = doc["ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (0 < ttl <= MAX_TTL):
            raise _bad(f"ttl must be a number of seconds > 0 and <= {MAX_TTL:g}")
        out["ttl"] = float(ttl)
    return out


class _Node:
    __slots__ = ("node_id", "name", "urls", "version", "jobs", "sessions", "ttl",
                 "registered_at", "last_seen", "deadline")

    def to_dict(self, now: float) -> dict:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "urls": dict(self.urls),
            "version": self.version,
            "jobs": list(self.jobs),
            "sessions": list(self.sessions),
            "ttl": self.ttl,
            "registered_at": self.registered_at,
            "last_seen": self.last_seen,
            "expires_in": round(max(0.0, self.deadline - now), 3),
        }


class Registry:
    """The nodes and what they run; every method is safe to call from any thread.

    Expiry uses the monotonic clock (``deadline``); ``last_seen`` and ``registered_at`` are
    wall-clock times (seconds since the epoch) for people to read.
    """

    def __init__(self, default_ttl: float = DEFAULT_TTL, max_nodes: int = MAX_NODES,
                 clock=time.monotonic, wall_clock=time.time):
        if not (0 < default_ttl <= MAX_TTL):
            raise ValueError(f"ttl must be > 0 and <= {MAX_TTL:g} seconds, not {default_ttl!r}")
        self.default_ttl = float(default_ttl)
        self.max_nodes = max_nodes
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self.changes = Changes()

    # -- writes

    def register(self, doc: object, node_id: str | None = None) -> tuple[dict, bool]:
        """Add or refresh a node from its JSON document; returns (node, created).

        ``node_id`` comes from the URL of ``PUT /nodes/<id>``: the document may then leave
        ``node_id`` out, and a refresh may send only the fields that changed (or ``{}``, a
        bare heartbeat). A new node needs nothing but its id: the rest defaults to empty.
        """
        if not isinstance(doc, dict):
            raise _bad("the body must be a JSON object")
        unknown = sorted(set(doc) - {"node_id", "name", "urls", "version", "jobs", "sessions", "ttl"})
        if unknown:
            raise _bad(f"unknown field(s): {', '.join(unknown)}")
        if node_id is not None:
            check_node_id(node_id)
            if "node_id" in doc and doc["node_id"] != node_id:
                raise _bad(f"node_id {doc['node_id']!r} in the body differs from {node_id!r} in the URL")
        else:
            node_id = check_node_id(doc.get("node_id"))
        fields = check_fields(doc)
        now = self._clock()
        with self._lock:
            self._expire(now)
            node = self._nodes.get(node_id)
            created = node is None
            before = None if created else node.to_dict(now)
            if created:
                if len(self._nodes) >= self.max_nodes:
                    raise RegistryError(503, "unavailable", f"registry full ({self.max_nodes} nodes)")
                node = _Node()
                node.node_id = node_id
                node.name = node_id
                node.urls, node.version, node.jobs, node.sessions = {}, None, [], []
                node.ttl = self.default_ttl
                node.registered_at = self._wall()
            for key, value in fields.items():
                setattr(node, key, value)
            if "jobs" in fields and "sessions" not in fields:
                node.sessions = sorted({j.split(".", 1)[0] for j in node.jobs})
            node.last_seen = self._wall()
            node.deadline = now + node.ttl
            self._nodes[node_id] = node
            result = node.to_dict(now)
        self.changes.publish(diff(before, result))
        if created:
            log.info("node %s (%s) registered: %d job(s)", node_id, result["name"], len(result["jobs"]))
        return result, created

    def unregister(self, node_id: str) -> dict:
        with self._lock:
            now = self._clock()
            self._expire(now)
            node = self._nodes.pop(node_id, None)
        if node is None:
            raise RegistryError(404, "not_found", f"no node {node_id!r}")
        self.changes.publish(diff(node.to_dict(now), None, "left"))
        log.info("node %s (%s) unregistered", node_id, node.name)
        return {"node_id": node_id, "deleted": True}

    def tick(self) -> None:
        """Drop the nodes whose ttl ran out (their node.down events go out)."""
        with self._lock:
            self._expire(self._clock())

    # -- reads

    def nodes(self) -> list[dict]:
        with self._lock:
            now = self._clock()
            self._expire(now)
            nodes = list(self._nodes.values())
            return [n.to_dict(now) for n in sorted(nodes, key=lambda n: (n.name, n.node_id))]

    def node(self, node_id: str) -> dict:
        with self._lock:
            now = self._clock()
            self._expire(now)
            node = self._nodes.get(node_id)
            if node is None:
                raise RegistryError(404, "not_found", f"no node {node_id!r}")
            return node.to_dict(now)

    def jobs(self) -> dict[str, list[str]]:
        """job -> the ids of the nodes that run it."""
        return self._index(lambda n: n.jobs)

    def sessions(self) -> dict[str, list[str]]:
        return self._index(lambda n: n.sessions)

    def find_job(self, name: str) -> list[dict]:
        name = job_name(name)
        return [n for n in self.nodes() if name in n["jobs"]]

    def find_session(self, session: str) -> list[dict]:
        session = session_name(session)
        return [n for n in self.nodes() if session in n["sessions"]]

    def _index(self, keys) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for node in self._live():
            for key in keys(node):
                out.setdefault(key, []).append(node.node_id)
        return {k: sorted(v) for k, v in sorted(out.items(), key=lambda item: job_order(item[0]))}

    def _live(self) -> list[_Node]:
        with self._lock:
            self._expire(self._clock())
            return list(self._nodes.values())

    def _expire(self, now: float) -> None:
        """Drop the nodes whose ttl ran out; the caller holds the lock."""
        dead = [n for n in self._nodes.values() if n.deadline <= now]
        for node in dead:
            del self._nodes[node.node_id]
            self.changes.publish(diff(node.to_dict(now), None, "expired"))
            log.info("node %s (%s) expired: no heartbeat for %gs", node.node_id, node.name, node.ttl)
