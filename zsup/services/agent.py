"""The remote agent (smartmob-agent): fetch an app's archive, unpack it, run one process type.

A create request makes a record (SQLite table `agent_processes`) in state `pending` and
hands the slow part to a worker thread, never the bus's control thread: download over
HTTP(S) with a timeout and a size limit (`downloading`), safe unpacking (`unpacking`), then
the Procfile's command for `process_type` becomes a run-time job of zsupd (`starting`, then
`running`): shell line, cwd the unpacked folder, the Procfile's `.env` and the request's env
added, no flapping rule, so zsupd restarts it with back-off until it is deleted. Being a
run-time job, zsupd's store restores it after a restart of zsupd.

Files: `<state_dir>/agent/<slug>/archive` (the download) and `<state_dir>/agent/<slug>/app/`
(the unpacked tree). Delete unloads the job and removes that folder.

Fetching and unpacking live in zsup/archive.py (its docstring says what the unpacking checks
and why: no path leaving the folder, no link out, size limits, no devices); it is imported by
the worker only, so zsupd's start does not load urllib.request, ssl, tarfile or zipfile. Any
failure removes the whole unpacked tree and the record ends in state `failed` with a `reason`.

Every change publishes `agent.<slug>.update` with the status.

Limits (docs/agent.md, "Limits"), so a flood of creates or a hostile server cannot hold
zsupd's threads or fill its disk:

- At most `agent_max_setups` setups run at once, each in a thread of its own; up to
  `agent_max_queued` more wait in state `pending` (in order) and start as others finish.
  A create beyond both is refused with `unavailable` (503 over HTTP) and records nothing.
  Setups a previous zsupd left unfinished are queued at start whatever the bound.
- Each download must finish within `agent_download_deadline` seconds in all (see
  zsup/services/archive.py for how a read blocked on a trickling server is ended).
- `agent_disk_budget` bounds the bytes under `<state_dir>/agent/` across all apps: every
  download and unpacked tree, finished or being written, is counted (`DiskBudget`), and a
  setup that would pass it fails with a reason saying so.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time

from zsup.bus.topics import agent_topic
from zsup.errors import BadRequest, Conflict, NotFound, Unavailable, ZsupError
from zsup.services.procfile import Procfile

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_processes (
    slug TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    node TEXT NOT NULL,
    process_type TEXT NOT NULL,
    source_url TEXT NOT NULL,
    env TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    job TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
)
"""
COLUMNS = ("slug", "app", "node", "process_type", "source_url", "env", "state", "reason", "job",
           "created", "updated")
SESSION = "agent"
PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")
TYPE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUSY = ("pending", "downloading", "unpacking", "starting")


class SetupFailed(Exception):
    """A step of the setup failed; the message is the record's `reason`."""


class Cancelled(Exception):
    """The process was deleted while it was being set up."""


class DiskBudget:
    """Bytes written under the agent's folder, per slug, against one limit for all.

    Thread rules: every method takes the budget's own lock; `charge` is called by the
    workers before each chunk they write. The folder is measured once, at the first charge
    (not at zsupd's start): what earlier runs left there counts too."""

    def __init__(self, root: str, limit):
        self.root = root
        self.limit = limit  # a callable: the setting is read at each charge
        self.used: dict[str, int] | None = None
        self.lock = threading.Lock()

    def charge(self, slug: str, n: int) -> None:
        with self.lock:
            if self.used is None:
                self.used = {entry: _size_of(os.path.join(self.root, entry)) for entry in _listdir(self.root)}
            total = sum(self.used.values()) + n
            if total > self.limit():
                raise SetupFailed(f"disk budget of the agent used up ({self.limit()} bytes for all apps, "
                                  "agent_disk_budget)")
            self.used[slug] = self.used.get(slug, 0) + n

    def release(self, slug: str, n: int) -> None:
        """`slug` removed n bytes."""
        with self.lock:
            if self.used is not None and slug in self.used:
                self.used[slug] = max(0, self.used[slug] - n)

    def set(self, slug: str, n: int | None) -> None:
        """What `slug` holds on disk now (None: nothing, forget it)."""
        with self.lock:
            if self.used is not None:
                if n is None:
                    self.used.pop(slug, None)
                else:
                    self.used[slug] = n


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _size_of(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += st.st_size
    return total


def job_name(slug: str) -> str:
    """A valid job name (no dots) that no other slug maps to."""
    safe = re.sub(r"[^A-Za-z0-9_\-]", "_", slug)[:60]
    return f"{safe}-{hashlib.sha1(slug.encode()).hexdigest()[:8]}"


class AgentService:
    def __init__(self, daemon):
        self.d = daemon
        self.root = os.path.join(daemon.state_dir, "agent")
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.lock = threading.RLock()
        self.cancelled: dict[str, threading.Event] = {}  # slug -> set by delete, per setup
        self.workers: dict[str, threading.Thread] = {}  # setups running (at most max_setups)
        self.waiting: collections.deque[str] = collections.deque()  # setups queued, in order
        self.budget = DiskBudget(self.root, lambda: self.disk_budget)
        daemon.store.execute(SCHEMA)
        self._recover()

    # ------------------------------------------------------------------ settings
    def setting(self, name: str, default: int) -> int:
        return int(self.d.settings.get(name) or default)

    @property
    def max_download(self) -> int:
        return self.setting("agent_max_download", 100 * 1024 * 1024)

    @property
    def max_unpacked(self) -> int:
        return self.setting("agent_max_unpacked", 500 * 1024 * 1024)

    @property
    def max_setups(self) -> int:
        return self.setting("agent_max_setups", 4)

    @property
    def max_queued(self) -> int:
        value = self.d.settings.get("agent_max_queued")
        return 16 if value is None else int(value)

    @property
    def download_deadline(self) -> float:
        return float(self.d.settings.get("agent_download_deadline") or 300.0)

    @property
    def disk_budget(self) -> int:
        return self.setting("agent_disk_budget", 2 * 1024 ** 3)

    # ------------------------------------------------------------------ records
    def _rows(self, sql: str, params=()) -> list[tuple]:
        with self.lock:
            return self.d.store.execute(sql, params).fetchall()

    def _record(self, slug: str) -> dict | None:
        rows = self._rows(f"SELECT {', '.join(COLUMNS)} FROM agent_processes WHERE slug = ?", (slug,))
        return dict(zip(COLUMNS, rows[0])) if rows else None

    def _set_state(self, slug: str, state: str, reason: str | None = None) -> None:
        with self.lock:
            self.d.store.execute("UPDATE agent_processes SET state = ?, reason = ?, updated = ? WHERE slug = ?",
                                 (state, reason, time.time(), slug))
            record = self._record(slug)
        if record:
            self.d.events.publish(agent_topic(slug), {"event": "update", **self.document(record)})

    def _recover(self) -> None:
        """A setup a previous zsupd did not finish starts over; a running process's job was
        restored by zsupd's store (a run-time job)."""
        for (slug,) in self._rows("SELECT slug FROM agent_processes WHERE state IN (?, ?, ?, ?) "
                                  "ORDER BY created, slug", BUSY):
            self._set_state(slug, "pending")
            self._enqueue(slug)

    def document(self, record: dict) -> dict:
        """The status document, without links (the gateway adds them)."""
        doc = {key: record[key] for key in ("app", "node", "slug", "state", "reason", "process_type", "job")}
        doc["job"] = f"{SESSION}.{record['job']}"
        return doc

    def paths(self, slug: str) -> tuple[str, str, str]:
        base = os.path.join(self.root, slug)
        return base, os.path.join(base, "archive"), os.path.join(base, "app")

    # ------------------------------------------------------------------ commands
    def create(self, app, node, process_type, source_url, env=None) -> dict:
        for option, value, regex in (("app", app, PART_RE), ("node", node, PART_RE),
                                     ("process_type", process_type, TYPE_RE)):
            if not isinstance(value, str) or not regex.match(value) or ".." in value:
                raise BadRequest(f"{option}: {value!r} is not a valid name (letters, digits, '_', '-'"
                                 f"{'' if option == 'process_type' else ' and single dots'})")
        if not isinstance(source_url, str) or not source_url.strip():
            raise BadRequest("source_url: a URL is required")
        env = env or {}
        if not isinstance(env, dict):
            raise BadRequest("env: expected an object of names to strings")
        for key, value in env.items():
            if not ENV_KEY_RE.match(str(key)) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise BadRequest(f"env: {key!r}: expected a variable name with a string value")
        env = {str(k): str(v) for k, v in env.items()}
        slug = f"{app}.{node}"
        now = time.time()
        with self.lock:
            if self._record(slug) is not None:
                raise Conflict(f"process {slug} exists already (delete it first)")
            worker = self.workers.get(slug)
            if worker is not None and worker.is_alive():
                raise Conflict(f"process {slug} is still being deleted; try again in a moment")
            if len(self.workers) + len(self.waiting) >= self.max_setups + self.max_queued:
                raise Unavailable(f"too many agent setups at once ({len(self.workers)} running, "
                                  f"{len(self.waiting)} waiting); try again later")
            self.d.store.execute(
                f"INSERT INTO agent_processes ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                (slug, app, node, process_type, source_url.strip(), json.dumps(env), "pending", None,
                 job_name(slug), now, now))
            record = self._record(slug)
        self.d.events.publish(agent_topic(slug), {"event": "update", **self.document(record)})
        self._enqueue(slug)
        return self.status(slug)

    def status(self, slug: str) -> dict:
        record = self._record(slug) if isinstance(slug, str) else None
        if record is None:
            raise NotFound(f"no process {slug}")
        doc = self.document(record)
        doc["pids"] = []
        if record["state"] == "running":
            try:
                doc["pids"] = self.d.manager.pids(doc["job"])
            except NotFound:
                pass
        return doc

    def list(self) -> list[dict]:
        slugs = [r[0] for r in self._rows("SELECT slug FROM agent_processes ORDER BY created, slug")]
        out = []
        for slug in slugs:
            try:
                out.append(self.status(slug))
            except NotFound:
                pass  # deleted meanwhile
        return out

    def delete(self, slug: str) -> dict:
        with self.lock:
            record = self._record(slug) if isinstance(slug, str) else None
            if record is None:
                raise NotFound(f"no process {slug}")
            flag = self.cancelled.get(slug)
            if flag is not None:
                flag.set()
            if slug in self.waiting:  # never started: nothing to clean up but its place
                self.waiting.remove(slug)
                self.cancelled.pop(slug, None)
            self.d.store.execute("DELETE FROM agent_processes WHERE slug = ?", (slug,))
        # A worker still setting up sees the flag at its next step (or chunk) and removes
        # whatever it wrote; it is not waited for here, in the bus's control thread.
        job = f"{SESSION}.{record['job']}"
        try:
            self.d.manager.unload(job)  # stops the process gracefully, and waits for nothing else
        except NotFound:
            pass
        self.d.remember(job, removed=True)
        with self.lock:
            if slug not in self.workers:  # a running setup removes its files and forgets them itself
                shutil.rmtree(self.paths(slug)[0], ignore_errors=True)
                self.budget.set(slug, None)
        self.d.events.publish(agent_topic(slug), {"event": "delete", **self.document({**record, "state": "deleted"})})
        return {"slug": slug, "state": "deleted"}

    # ------------------------------------------------------------------ the worker
    def _enqueue(self, slug: str) -> None:
        with self.lock:
            self.cancelled[slug] = threading.Event()
            self.waiting.append(slug)
        self._next()

    def _next(self) -> None:
        """Start queued setups while fewer than `max_setups` run."""
        with self.lock:
            while self.waiting and len(self.workers) < self.max_setups:
                slug = self.waiting.popleft()
                thread = threading.Thread(target=self._setup, args=(slug, self.cancelled[slug]),
                                          name=f"zsup-agent-{slug}", daemon=True)
                self.workers[slug] = thread
                thread.start()

    def _setup(self, slug: str, cancelled: threading.Event) -> None:
        from zsup.services import archive  # here, not at the top: it loads urllib, tarfile, zipfile

        base, archive_path, target = self.paths(slug)
        try:
            record = self._record(slug)
            if record is None:
                return
            shutil.rmtree(base, ignore_errors=True)  # what an interrupted setup left
            self.budget.set(slug, 0)
            os.makedirs(base, mode=0o700)
            charge = functools.partial(self.budget.charge, slug)
            self._step(slug, cancelled, "downloading")
            archive.fetch(record["source_url"], archive_path, self.max_download, cancelled,
                          deadline=self.download_deadline, charge=charge)
            self._step(slug, cancelled, "unpacking")
            root = archive.unpack(archive_path, target, self.max_unpacked, cancelled, charge=charge)
            downloaded = os.path.getsize(archive_path)
            os.unlink(archive_path)
            self.budget.release(slug, downloaded)
            self._step(slug, cancelled, "starting")
            config = self.job_config(record, root)
            with self.lock:
                if cancelled.is_set():
                    raise Cancelled()
                # Under the lock: a delete waits for the job to exist, then unloads it.
                self.d.manager.load(config, start=True)
                self.d.remember(config["session"] + "." + config["name"])
                self._set_state(slug, "running")
        except (Cancelled, archive.Cancelled):
            shutil.rmtree(base, ignore_errors=True)
        except Exception as exc:
            if isinstance(exc, (SetupFailed, archive.ArchiveError, ZsupError)):
                reason = exc.message if isinstance(exc, ZsupError) else str(exc)
                log.warning("agent process %s failed: %s", slug, reason)
            else:
                reason = f"internal error: {exc}"
                log.exception("agent process %s: setup failed", slug)
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.unlink(archive_path)
            except OSError:
                pass
            self.budget.set(slug, 0)
            if not cancelled.is_set():
                self._set_state(slug, "failed", reason)
        finally:
            with self.lock:
                if cancelled.is_set():
                    shutil.rmtree(base, ignore_errors=True)
                    self.budget.set(slug, None)
                if self.workers.get(slug) is threading.current_thread():
                    del self.workers[slug]
                    self.cancelled.pop(slug, None)
            self._next()

    def _step(self, slug: str, cancelled: threading.Event, state: str) -> None:
        if cancelled.is_set():
            raise Cancelled()
        self._set_state(slug, state)

    def job_config(self, record: dict, root: str) -> dict:
        procfile = os.path.join(root, "Procfile")
        if os.path.islink(procfile):
            raise SetupFailed("archive: the Procfile is a link")
        try:
            pf = Procfile.load(procfile, root=root, app_name=SESSION)
            if record["process_type"] not in pf.processes:
                raise SetupFailed(f"Procfile: no process type {record['process_type']!r} "
                                  f"(known: {', '.join(pf.processes)})")
            job = pf.job_dicts(names=[record["process_type"]])[0]
        except BadRequest as exc:
            raise SetupFailed(f"Procfile: {exc.message}") from None
        job.update(name=record["job"], session=SESSION, numprocesses=1, graceful_timeout=10)
        job["env"] = {**job["env"], **json.loads(record["env"]),
                      "ZSUP_AGENT_SLUG": record["slug"], "ZSUP_AGENT_APP": record["app"],
                      "ZSUP_AGENT_NODE": record["node"]}
        return job

