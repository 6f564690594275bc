"""The node side of zsup-lookupd: zsupd announces itself and its jobs to every lookupd it knows.

With ``[zsup] lookupd_addresses`` set, one thread per lookupd address:
- registers the node at start (``PUT /nodes/<node_id>`` with the whole document),
- sends it again, ~0.2 s after the first of a burst of ``job.`` events, if the jobs changed,
- heartbeats every ttl/3, the ttl being the one the lookupd answers with (its ``--ttl``),
- and says goodbye (``DELETE``) when zsupd stops.
Every heartbeat carries the whole document, so a lookupd that restarted knows the node again
at the next one. A lookupd that cannot be reached is logged once per episode (and once when it
answers again) and retried with a growing delay; nothing here ever holds up supervision: the
event callback only sets a flag, and stop() waits a bounded time.

The node id is a uuid4 kept in ``<state_dir>/node_id``, so a restarted zsupd is the same node.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

from zsup import __version__
from zsup.bus.topics import JOB, is_internal

__all__ = ["LookupRegistrar", "node_id", "node_urls"]

log = logging.getLogger("zsup.lookup")

DEBOUNCE = 0.2
REQUEST_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0
RETRY_MIN, RETRY_MAX = 0.5, 30.0


def node_id(state_dir: str) -> str:
    """This node's stable id: read from ``<state_dir>/node_id``, created once."""
    path = os.path.join(state_dir, "node_id")
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        return str(uuid.UUID(text))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("ignoring bad node id file %s (%s): making a new id", path, exc)
    new = str(uuid.uuid4())
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(new + "\n")
    os.replace(tmp, path)
    return new


def _host_for(host: str) -> str:
    """A bind host as others should dial it: a wildcard becomes this machine's name."""
    host = host.strip("[]")
    if host in ("", "*", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def node_urls(settings: dict, endpoints: dict, http_endpoints: list, http_bind: dict | None) -> dict:
    """Where clients reach this node: ``http`` (the gateway), ``bus`` and ``pub`` (TCP only)."""
    urls = {}
    if settings.get("public_url"):
        urls["http"] = settings["public_url"].rstrip("/")
    else:
        endpoint = http_bind if http_bind and http_bind.get("bind") else (
            endpoints.get(http_endpoints[0]) if http_endpoints else None)
        bind = (endpoint or {}).get("bind") or ""
        if bind and not bind.startswith("unix:"):
            host, _, port = bind.rpartition(":")
            if host and port.isdigit() and port != "0":
                scheme = "https" if endpoint.get("certfile") else "http"
                urls["http"] = f"{scheme}://{_host_for(host)}:{port}"
    for key, keys in (("bus", ("bus_tcp", "bus")), ("pub", ("pub_tcp", "pub"))):
        for name in keys:
            value = settings.get(name) or ""
            if value.startswith("tcp://"):
                host, _, port = value[len("tcp://"):].rpartition(":")
                urls[key] = f"tcp://{_host_for(host)}:{port}"
                break
    return urls


class _Target:
    """One lookupd: its own thread, so a slow one never delays the others."""

    def __init__(self, registrar: "LookupRegistrar", base: str):
        self.registrar = registrar
        self.base = base.rstrip("/")
        self.wake = threading.Event()
        self.registered = False
        self.failing = False
        self.last_sent: tuple | None = None
        self.ttl = 30.0
        self.thread = threading.Thread(target=self.run, name=f"zsup-lookup {self.base}", daemon=True)

    def url(self, node: str) -> str:
        return f"{self.base}/nodes/{quote(node, safe='')}"

    def run(self) -> None:
        reg = self.registrar
        retry = RETRY_MIN
        next_beat = 0.0  # register at once
        while not reg.stopping.is_set():
            changed = self.wake.wait(max(0.0, next_beat - time.monotonic()))
            if reg.stopping.is_set():
                break
            if changed:
                # Coalesce a burst of job events (a load of ten jobs) into one request.
                if reg.stopping.wait(DEBOUNCE):
                    break
                self.wake.clear()
            try:
                doc = reg.document()
            except Exception as exc:  # the manager is busy or stopping: try again soon
                log.debug("lookupd %s: cannot read the jobs: %s", self.base, exc)
                next_beat = time.monotonic() + RETRY_MIN
                continue
            key = (tuple(doc["jobs"]), tuple(doc["sessions"]))
            if changed and self.registered and key == self.last_sent and time.monotonic() < next_beat:
                continue  # job events that changed nothing the lookupd knows: wait for the heartbeat
            try:
                answer = self.request("PUT", self.url(doc["node_id"]), doc)
            except Exception as exc:
                self.fail(exc)
                next_beat = time.monotonic() + retry
                retry = min(retry * 2, RETRY_MAX, max(RETRY_MIN, self.ttl / 3))
                continue
            ttl = (answer or {}).get("node", {}).get("ttl")
            if isinstance(ttl, (int, float)) and ttl > 0:
                self.ttl = float(ttl)
            if self.failing or not self.registered:
                log.info("registered with lookupd %s as node %s (ttl %gs)", self.base, doc["node_id"], self.ttl)
            self.failing = False
            self.registered = True
            self.last_sent = key
            retry = RETRY_MIN
            next_beat = time.monotonic() + self.ttl / 3
        if self.registered:
            try:
                self.request("DELETE", self.url(reg.node_id), None, timeout=STOP_TIMEOUT - 0.5)
                log.info("unregistered from lookupd %s", self.base)
            except Exception as exc:
                log.warning("cannot unregister from lookupd %s: %s (it forgets this node after %gs)",
                            self.base, _reason(exc), self.ttl)

    def fail(self, exc: Exception) -> None:
        if not self.failing:
            log.warning("lookupd %s: cannot register: %s (retrying)", self.base, _reason(exc))
            self.failing = True
        else:
            log.debug("lookupd %s: still failing: %s", self.base, _reason(exc))

    def request(self, method: str, url: str, doc: dict | None, timeout: float = REQUEST_TIMEOUT):
        data = None if doc is None else json.dumps(doc).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        token = self.registrar.token()
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=timeout, context=self.registrar.ssl_context) as resp:
            body = resp.read()
        return json.loads(body) if body.strip() else None


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        try:
            error = json.loads(exc.read()).get("error", {})
            return f"HTTP {exc.code}: {error.get('message') or exc.reason}"
        except Exception:
            return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


class LookupRegistrar:
    """Keeps this zsupd registered with the lookupds of ``[zsup] lookupd_addresses``."""

    def __init__(self, daemon):
        self.daemon = daemon
        settings = daemon.config.settings
        self.addresses = list(settings.get("lookupd_addresses") or [])
        self.name = settings.get("node_name") or socket.gethostname()
        self.token_file = settings.get("lookupd_token_file")
        self.stopping = threading.Event()
        self.targets = [_Target(self, address) for address in self.addresses]
        self.node_id: str | None = None
        self.urls: dict = {}
        self.ssl_context = ssl.create_default_context()  # honours SSL_CERT_FILE
        self._subscribed = False

    def document(self) -> dict:
        jobs = sorted(j for j in self.daemon.manager.jobs() if not is_internal(j))
        return {"node_id": self.node_id, "name": self.name, "urls": self.urls, "version": __version__,
                "jobs": jobs, "sessions": sorted({j.split(".", 1)[0] for j in jobs})}

    def token(self) -> str | None:
        """Read at every request, so the token can be rotated without a restart."""
        if not self.token_file:
            return None
        try:
            with open(self.token_file, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except OSError as exc:
            raise RuntimeError(f"cannot read lookupd_token_file: {exc.strerror or exc}") from None
        return next((line for line in lines if line and not line.startswith("#")), None)

    def _on_job_event(self, topic: str, msg: dict, data) -> None:
        # Runs in the publishing thread (often the supervisor's): only raise flags.
        for target in self.targets:
            target.wake.set()

    def start(self) -> None:
        if not self.targets:
            return
        daemon = self.daemon
        self.node_id = node_id(daemon.state_dir)
        self.urls = node_urls(daemon.config.settings, daemon.config.endpoints, daemon.config.http_endpoints,
                              getattr(daemon, "http_bind", None))
        daemon.events.subscribe(JOB, self._on_job_event)
        self._subscribed = True
        for target in self.targets:
            target.thread.start()
        log.info("node %s (%s) announcing itself to %s", self.node_id, self.name, ", ".join(self.addresses))

    def stop(self) -> None:
        if self._subscribed:
            self.daemon.events.unsubscribe(JOB, self._on_job_event)
            self._subscribed = False
        self.stopping.set()
        for target in self.targets:
            target.wake.set()
        # Bounded: a lookupd that swallows packets must not hold up zsupd's shutdown (the
        # threads are daemon threads; such a lookupd forgets the node after its ttl).
        deadline = time.monotonic() + STOP_TIMEOUT
        for target in self.targets:
            if target.thread.ident is not None:
                target.thread.join(max(0.0, deadline - time.monotonic()))
