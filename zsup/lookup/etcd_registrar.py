"""zsupd's side of the etcd registry: this node and its jobs, under a lease kept alive.

With ``[zsup] registry = etcd://host:2379[,host2...]`` one thread (never the supervisor's):
- grants a lease of ``registry_ttl`` seconds and writes ``<prefix>nodes/<node_id>``, the same
  document zsup-lookupd holds (name, urls, version, jobs, sessions, ttl), attached to it;
- refreshes the lease every ttl/3, and writes the document again ~0.2 s after the first of a
  burst of ``job.`` events when the jobs changed;
- when the lease is lost (etcd was unreachable longer than the ttl), grants a new one and
  writes again; an etcd that cannot be reached is logged once per episode and retried;
- on a clean stop, revokes the lease: the key goes at once. A node that dies without a word
  (SIGKILL, power loss) disappears when the lease expires, within ``registry_ttl``.
The event callback only sets a flag, and ``stop()`` waits a bounded time.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time

from zsup import __version__
from zsup.bus.topics import JOB, is_internal
from zsup.errors import BadRequest
from zsup.lookup.client import node_id, node_urls
from zsup.lookup.etcd import EtcdClient, EtcdError, LeaseLost, parse_etcd_urls

__all__ = ["EtcdRegistrar", "NODES", "client_from_settings"]

log = logging.getLogger("zsup.registry")

NODES = "/zsup/nodes/"
DEBOUNCE = 0.2
STOP_TIMEOUT = 3.0
RETRY_MIN, RETRY_MAX = 0.5, 10.0


def client_from_settings(settings: dict, timeout: float = 5.0) -> EtcdClient:
    """The etcd client that ``[zsup] registry`` and its ``registry_*`` keys describe."""
    tls = bool(settings.get("registry_cacert") or settings.get("registry_cert"))
    return EtcdClient(parse_etcd_urls(settings["registry"], tls=tls), cacert=settings.get("registry_cacert"),
                      cert=settings.get("registry_cert"), key=settings.get("registry_key"),
                      user=settings.get("registry_user"), password=settings.get("registry_password"),
                      timeout=timeout)


class EtcdRegistrar:
    """Keeps this zsupd (and its jobs) in etcd while it runs. start() and stop() from the
    main thread; the work happens on the registrar's own thread."""

    def __init__(self, daemon):
        self.daemon = daemon
        settings = daemon.config.settings
        self.ttl = max(1, int(round(settings.get("registry_ttl") or 10)))
        self.name = settings.get("node_name") or socket.gethostname()
        try:
            self.client = client_from_settings(settings, timeout=min(5.0, max(1.0, self.ttl / 3)))
        except (OSError, ssl.SSLError, ValueError) as exc:  # a certificate that cannot be loaded
            raise BadRequest(f"registry: {getattr(exc, 'strerror', None) or exc}") from None
        self.node_id: str | None = None
        self.urls: dict = {}
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.lease: int | None = None
        self.failing = False
        self.thread = threading.Thread(target=self.run, name="zsup-registry", daemon=True)
        self._subscribed = False

    @property
    def key(self) -> str:
        return f"{NODES}{self.node_id}"

    def document(self) -> dict:
        jobs = sorted(j for j in self.daemon.manager.jobs() if not is_internal(j))
        return {"node_id": self.node_id, "name": self.name, "urls": self.urls, "version": __version__,
                "jobs": jobs, "sessions": sorted({j.split(".", 1)[0] for j in jobs}), "ttl": float(self.ttl),
                "registered_at": self.registered_at, "last_seen": time.time()}

    def _on_job_event(self, topic: str, msg: dict, data) -> None:
        self.wake.set()  # runs in the publishing thread: only raise a flag

    def start(self) -> None:
        daemon = self.daemon
        self.node_id = node_id(daemon.state_dir)
        self.urls = node_urls(daemon.config.settings, daemon.config.endpoints, daemon.config.http_endpoints,
                              getattr(daemon, "http_bind", None))
        self.registered_at = time.time()
        daemon.events.subscribe(JOB, self._on_job_event)
        self._subscribed = True
        self.thread.start()
        log.info("node %s (%s) registering in etcd %s (ttl %ds)", self.node_id, self.name,
                 ", ".join(self.client.urls), self.ttl)

    def run(self) -> None:
        retry = RETRY_MIN
        next_beat = 0.0
        written: tuple | None = None
        keep_due = 0.0  # when the lease needs its next refresh (job events may come faster)
        while not self.stopping.is_set():
            changed = self.wake.wait(max(0.0, next_beat - time.monotonic()))
            if self.stopping.is_set():
                break
            if changed:
                if self.stopping.wait(DEBOUNCE):  # a burst of job events: one write
                    break
                self.wake.clear()
            try:
                doc = self.document()
            except Exception as exc:  # the manager is busy or stopping
                log.debug("registry: cannot read the jobs: %s", exc)
                next_beat = time.monotonic() + RETRY_MIN
                continue
            jobs = (tuple(doc["jobs"]), tuple(sorted(doc["urls"].items())))
            try:
                if self.lease is not None and time.monotonic() >= keep_due:
                    self.client.keepalive(self.lease)
                    keep_due = time.monotonic() + self.ttl / 3
                if self.lease is None or jobs != written:
                    if self.lease is None:
                        self.lease = self.client.grant(self.ttl)
                        keep_due = time.monotonic() + self.ttl / 3
                    self.client.put(self.key, json.dumps(doc), self.lease)
                    written = jobs
            except LeaseLost:
                log.warning("registry: the lease ran out (etcd was out of reach); registering again")
                self.lease, written = None, None
                next_beat = time.monotonic()
                continue
            except (EtcdError, OSError, ValueError) as exc:
                if not self.failing:
                    log.warning("registry: cannot reach etcd: %s (retrying)", exc)
                self.failing = True
                next_beat = time.monotonic() + retry
                retry = min(retry * 2, RETRY_MAX, max(RETRY_MIN, self.ttl / 3))
                continue
            if self.failing:
                log.info("registry: etcd answers again; node %s registered", self.node_id)
            self.failing = False
            retry = RETRY_MIN
            next_beat = keep_due

    def stop(self) -> None:
        if self._subscribed:
            self.daemon.events.unsubscribe(JOB, self._on_job_event)
            self._subscribed = False
        self.stopping.set()
        self.wake.set()
        self.thread.join(STOP_TIMEOUT)
        if self.lease is not None and not self.thread.is_alive():
            # Revoke: the node leaves the registry now, not a ttl later. Bounded by the
            # client's timeout; on failure etcd forgets the node when the lease expires.
            try:
                # a last word first, so watchers tell a goodbye from a death
                self.client.put(self.key, json.dumps(dict(self.document(), leaving=True)), self.lease)
                self.client.revoke(self.lease)
                log.info("registry: node %s left etcd", self.node_id)
            except (EtcdError, OSError) as exc:
                log.warning("registry: cannot revoke the lease: %s (gone within %ds)", exc, self.ttl)
            self.lease = None
