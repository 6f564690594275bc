"""Fleet changes as events, and the ``GET /watch`` feed that streams them (docs/lookupd.md).

Events (one JSON object each):
- ``{"event": "node.up", "node_id", "name", "node": {...}}``: a node registered;
- ``{"event": "node.down", "node_id", "name", "jobs": [...], "reason"}``: it left (``left``),
  its lease or ttl ran out (``expired``), or etcd no longer has it (``gone``);
- ``{"event": "job.loaded" | "job.unloaded", "job", "node_id", "name"}``: where a job runs.

``Changes`` is the hub: registries ``publish()`` from any thread, each feed has its own
bounded queue. A feed that falls more than ``QUEUE`` events behind is ended (its client
reconnects and gets a fresh snapshot) rather than letting memory grow.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Callable, Iterator

__all__ = ["Changes", "diff", "feed", "MAX_FEEDS"]

MAX_FEEDS = 32
QUEUE = 10_000
KEEPALIVE = 15.0
_END = object()


def diff(old: dict | None, new: dict | None, reason: str = "left") -> list[dict]:
    """The events that take a node's document from ``old`` to ``new`` (either may be None)."""
    node = new or old
    if node is None:
        return []
    who = {"node_id": node["node_id"], "name": node.get("name") or node["node_id"]}
    if new is None:
        return [{"event": "node.down", **who, "jobs": list(old.get("jobs") or []), "reason": reason}]
    events = [] if old is not None else [{"event": "node.up", **who, "node": new}]
    before, after = set((old or {}).get("jobs") or []), set(new.get("jobs") or [])
    events += [{"event": "job.loaded", "job": j, **who} for j in sorted(after - before)]
    events += [{"event": "job.unloaded", "job": j, **who} for j in sorted(before - after)]
    return events


class Changes:
    def __init__(self, max_feeds: int = MAX_FEEDS):
        self.max_feeds = max_feeds
        self._lock = threading.Lock()
        self._queues: set[queue.Queue] = set()
        self.closed = False

    def publish(self, events: list[dict]) -> None:
        if not events:
            return
        now = time.time()
        with self._lock:
            queues = list(self._queues)
        for q in queues:
            for event in events:
                try:
                    q.put_nowait(dict(event, time=now))
                except queue.Full:
                    self._drop(q)
                    break

    def subscribe(self) -> queue.Queue | None:
        """A new feed's queue, or None when ``max_feeds`` are open."""
        with self._lock:
            if self.closed or len(self._queues) >= self.max_feeds:
                return None
            q: queue.Queue = queue.Queue(QUEUE)
            self._queues.add(q)
            return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            self._queues.discard(q)

    def _drop(self, q: queue.Queue) -> None:
        self.unsubscribe(q)
        try:
            while True:
                q.get_nowait()
        except queue.Empty:
            pass
        q.put_nowait(_END)

    def close(self) -> None:
        """End every feed (the server is stopping)."""
        with self._lock:
            self.closed = True
            queues = list(self._queues)
        for q in queues:
            self._drop(q)


def feed(changes: Changes, q: queue.Queue, snapshot: list[dict], sse: bool,
         tick: Callable[[], None] | None = None) -> Iterator[bytes]:
    """The body of ``GET /watch``: the current nodes as ``node.up`` events (``"snapshot":
    true``), then every change as it happens; a blank line (or an SSE comment) every 15 s keeps
    proxies from closing an idle feed. ``tick`` runs about once a second (the in-memory
    registry expires nodes when asked)."""

    def line(event: dict) -> bytes:
        text = json.dumps(event, separators=(",", ":"))
        return f"event: {event['event']}\ndata: {text}\n\n".encode() if sse else text.encode() + b"\n"

    try:
        now = time.time()
        for node in snapshot:
            yield line({"event": "node.up", "node_id": node["node_id"], "name": node.get("name"),
                        "node": node, "snapshot": True, "time": now})
        yield line({"event": "ready", "nodes": len(snapshot), "time": now})
        quiet_since = time.monotonic()
        while True:
            try:
                event = q.get(timeout=1.0)
            except queue.Empty:
                if tick is not None:
                    tick()
                if time.monotonic() - quiet_since >= KEEPALIVE:
                    quiet_since = time.monotonic()
                    yield b": keepalive\n\n" if sse else b"\n"
                continue
            if event is _END:
                return
            quiet_since = time.monotonic()
            yield line(event)
    finally:
        changes.unsubscribe(q)
