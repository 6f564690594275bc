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

Unpacking trusts nothing in the archive: members are checked one by one (tar and zip alike,
without relying on tarfile's filters): no absolute path, no `..`, no device, FIFO or other
special file, nothing written through a link, at most MAX_MEMBERS members and
`agent_max_unpacked` bytes, counted while writing rather than read from headers. Regular
files and folders come first; symbolic links are made last, each checked (its folder and its
target, resolved with realpath) to stay inside, and every link is checked again once all are
made, since a later link can change what an earlier one resolves to. Any failure removes the
whole unpacked tree and the record ends in state `failed` with a `reason`.

Every change publishes `agent.<slug>.update` with the status.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile

from .errors import BadRequest, Conflict, NotFound, ZsupError
from .procfile import Procfile

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
DOWNLOAD_TIMEOUT = 30.0
MAX_MEMBERS = 10000
CHUNK = 64 * 1024


class SetupFailed(Exception):
    """A step of the setup failed; the message is the record's `reason`."""


class Cancelled(Exception):
    """The process was deleted while it was being set up."""


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
        self.workers: dict[str, threading.Thread] = {}
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
            self.d.events.publish(f"agent.{slug}.update", {"event": "update", **self.document(record)})

    def _recover(self) -> None:
        """A setup a previous zsupd did not finish starts over; a running process's job was
        restored by zsupd's store (a run-time job)."""
        for (slug,) in self._rows("SELECT slug FROM agent_processes WHERE state IN (?, ?, ?, ?)", BUSY):
            self._set_state(slug, "pending")
            self._start_worker(slug)

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
            self.d.store.execute(
                f"INSERT INTO agent_processes ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                (slug, app, node, process_type, source_url.strip(), json.dumps(env), "pending", None,
                 job_name(slug), now, now))
            record = self._record(slug)
        self.d.events.publish(f"agent.{slug}.update", {"event": "update", **self.document(record)})
        self._start_worker(slug)
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
            self.d.store.execute("DELETE FROM agent_processes WHERE slug = ?", (slug,))
        # A worker still setting up sees the flag at its next step (or chunk) and removes
        # whatever it wrote; it is not waited for here, in the bus's control thread.
        job = f"{SESSION}.{record['job']}"
        try:
            self.d.manager.unload(job)  # stops the process gracefully, and waits for nothing else
        except NotFound:
            pass
        self.d.remember(job, removed=True)
        shutil.rmtree(self.paths(slug)[0], ignore_errors=True)
        self.d.events.publish(f"agent.{slug}.update", {"event": "delete", **self.document({**record, "state": "deleted"})})
        return {"slug": slug, "state": "deleted"}

    # ------------------------------------------------------------------ the worker
    def _start_worker(self, slug: str) -> None:
        flag = threading.Event()
        thread = threading.Thread(target=self._setup, args=(slug, flag), name=f"zsup-agent-{slug}", daemon=True)
        with self.lock:
            self.cancelled[slug] = flag
            self.workers[slug] = thread
        thread.start()

    def _setup(self, slug: str, cancelled: threading.Event) -> None:
        base, archive, target = self.paths(slug)
        try:
            record = self._record(slug)
            if record is None:
                return
            shutil.rmtree(base, ignore_errors=True)  # what an interrupted setup left
            os.makedirs(base, mode=0o700)
            self._step(slug, cancelled, "downloading")
            self.download(record["source_url"], archive, cancelled)
            self._step(slug, cancelled, "unpacking")
            root = self.unpack(archive, target, cancelled)
            os.unlink(archive)
            self._step(slug, cancelled, "starting")
            config = self.job_config(record, root)
            with self.lock:
                if cancelled.is_set():
                    raise Cancelled()
                # Under the lock: a delete waits for the job to exist, then unloads it.
                self.d.manager.load(config, start=True)
                self.d.remember(config["session"] + "." + config["name"])
                self._set_state(slug, "running")
        except Cancelled:
            shutil.rmtree(base, ignore_errors=True)
        except (SetupFailed, ZsupError) as exc:
            reason = exc.message if isinstance(exc, ZsupError) else str(exc)
            log.warning("agent process %s failed: %s", slug, reason)
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.unlink(archive)
            except OSError:
                pass
            if not cancelled.is_set():
                self._set_state(slug, "failed", reason)
        except Exception as exc:
            log.exception("agent process %s: setup failed", slug)
            shutil.rmtree(target, ignore_errors=True)
            if not cancelled.is_set():
                self._set_state(slug, "failed", f"internal error: {exc}")
        finally:
            if cancelled.is_set():
                shutil.rmtree(base, ignore_errors=True)
            with self.lock:
                if self.workers.get(slug) is threading.current_thread():
                    del self.workers[slug]
                    self.cancelled.pop(slug, None)

    def _step(self, slug: str, cancelled: threading.Event, state: str) -> None:
        if cancelled.is_set():
            raise Cancelled()
        self._set_state(slug, state)

    def download(self, url: str, path: str, cancelled: threading.Event) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise SetupFailed(f"source_url: only http:// and https:// URLs are supported, not {url!r}")
        limit = self.max_download
        request = urllib.request.Request(url, headers={"User-Agent": "zsup-agent"})
        try:
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > limit:
                    raise SetupFailed(f"download: archive is {length} bytes, over the limit of {limit}")
                size = 0
                with open(path, "wb") as f:
                    while True:
                        if cancelled.is_set():
                            raise Cancelled()
                        chunk = response.read(CHUNK)
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > limit:
                            raise SetupFailed(f"download: archive over the limit of {limit} bytes")
                        f.write(chunk)
        except urllib.error.HTTPError as exc:
            raise SetupFailed(f"download: {url} answered {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise SetupFailed(f"download: cannot fetch {url}: {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise SetupFailed(f"download: cannot fetch {url}: {exc}") from None

    # ------------------------------------------------------------------ unpacking
    def unpack(self, archive: str, target: str, cancelled: threading.Event) -> str:
        """Unpack into target; return the app's root (target, or its one top folder)."""
        os.makedirs(target, mode=0o700)
        unpacker = _Unpacker(target, self.max_unpacked, cancelled)
        if zipfile.is_zipfile(archive):
            try:
                with zipfile.ZipFile(archive) as zf:
                    unpacker.zip(zf)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
                raise SetupFailed(f"archive: bad zip file: {exc}") from None
        else:
            try:
                tf = tarfile.open(archive, "r:*")
            except (tarfile.TarError, OSError, EOFError):
                raise SetupFailed("archive: not an archive (expected tar, tar.gz, tar.bz2, tar.xz or zip)") from None
            try:
                with tf:
                    unpacker.tar(tf)
            except (tarfile.TarError, OSError, EOFError, zipfile.error) as exc:
                raise SetupFailed(f"archive: bad tar file: {exc}") from None
        unpacker.finish()
        if os.path.isfile(os.path.join(target, "Procfile")):
            return target
        entries = os.listdir(target)
        if len(entries) == 1:
            only = os.path.join(target, entries[0])
            if os.path.isdir(only) and not os.path.islink(only) and os.path.isfile(os.path.join(only, "Procfile")):
                return only
        raise SetupFailed("archive: no Procfile at its root")

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


class _Unpacker:
    """Writes archive members into `target`, checking each (see the module docstring)."""

    def __init__(self, target: str, limit: int, cancelled: threading.Event):
        self.target = os.path.realpath(target)
        self.limit = limit
        self.cancelled = cancelled
        self.total = 0
        self.count = 0
        self.links: list[tuple[str, str]] = []  # (relative path, link target), made last
        self.files: set[str] = set()

    # -- paths
    def relative(self, name: str) -> str:
        clean = name.replace("\\", "/")
        if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
            raise SetupFailed(f"archive: absolute path {name!r}")
        parts = [p for p in clean.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise SetupFailed(f"archive: path {name!r} leaves the folder")
        if any("\0" in p for p in parts):
            raise SetupFailed(f"archive: bad path {name!r}")
        return "/".join(parts)

    def inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.target or real.startswith(self.target + os.sep)

    def dest(self, rel: str) -> str:
        """Where a member goes: its folder must resolve inside, and it must not be a link."""
        path = os.path.join(self.target, rel)
        if not self.inside(os.path.dirname(path)):
            raise SetupFailed(f"archive: {rel!r} would be written through a link")
        if os.path.islink(path):
            raise SetupFailed(f"archive: {rel!r} would be written through a link")
        return path

    def counted(self) -> None:
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise SetupFailed(f"archive: more than {MAX_MEMBERS} members")
        if self.cancelled.is_set():
            raise Cancelled()

    # -- writing
    def mkdir(self, rel: str) -> None:
        if not rel:
            return
        path = self.dest(rel)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise SetupFailed(f"archive: {rel!r} is both a file and a folder")
        os.makedirs(path, mode=0o755, exist_ok=True)
        if not self.inside(path):
            raise SetupFailed(f"archive: {rel!r} leaves the folder")

    def write(self, rel: str, source, mode: int) -> None:
        if not rel:
            raise SetupFailed("archive: a file without a name")
        parent = os.path.dirname(rel)
        if parent:
            self.mkdir(parent)
        path = self.dest(rel)
        if os.path.isdir(path):
            raise SetupFailed(f"archive: {rel!r} is both a folder and a file")
        if os.path.lexists(path):
            os.unlink(path)  # a later member of the same name wins, as with tar
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            while True:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                self.total += len(chunk)
                if self.total > self.limit:
                    raise SetupFailed(f"archive: unpacked size over the limit of {self.limit} bytes")
                f.write(chunk)
        os.chmod(path, (mode & 0o755) | 0o600)
        self.files.add(rel)

    def link(self, rel: str, target: str) -> None:
        if not rel:
            raise SetupFailed("archive: a link without a name")
        if not target or target.startswith("/") or "\0" in target:
            raise SetupFailed(f"archive: link {rel!r} points outside the folder ({target!r})")
        self.links.append((rel, target))

    def finish(self) -> None:
        """Make the links, each checked when made and all checked again at the end."""
        for rel, target in self.links:
            parent = os.path.dirname(rel)
            if parent:
                self.mkdir(parent)
            path = self.dest(rel)
            if os.path.lexists(path):
                raise SetupFailed(f"archive: link {rel!r} would replace another member")
            if not self.inside(os.path.join(os.path.dirname(path), target)):
                raise SetupFailed(f"archive: link {rel!r} points outside the folder ({target!r})")
            os.symlink(target, path)
            if not self.inside(path):
                raise SetupFailed(f"archive: link {rel!r} points outside the folder ({target!r})")
        for rel, target in self.links:
            if not self.inside(os.path.join(self.target, rel)):
                raise SetupFailed(f"archive: link {rel!r} points outside the folder ({target!r})")

    # -- formats
    def tar(self, tf: tarfile.TarFile) -> None:
        while True:
            member = tf.next()
            if member is None:
                break
            self.counted()
            rel = self.relative(member.name)
            if member.isdir():
                self.mkdir(rel)
            elif member.isreg():
                source = tf.extractfile(member)
                with source:
                    self.write(rel, source, member.mode)
            elif member.issym():
                self.link(rel, member.linkname)
            elif member.islnk():
                # A hard link names an earlier member: copy it (a hard link could reach a
                # file outside through the same inode otherwise).
                other = self.relative(member.linkname)
                if other not in self.files:
                    raise SetupFailed(f"archive: hard link {rel!r} to {member.linkname!r}, not an earlier file")
                with open(os.path.join(self.target, other), "rb") as source:
                    self.write(rel, source, member.mode)
            else:
                raise SetupFailed(f"archive: {rel or member.name!r} is a device, FIFO or other special file")

    def zip(self, zf: zipfile.ZipFile) -> None:
        for info in zf.infolist():
            self.counted()
            rel = self.relative(info.filename)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.is_dir():
                self.mkdir(rel)
            elif kind == stat.S_IFLNK:
                if info.file_size > 4096:
                    raise SetupFailed(f"archive: link {rel!r} has an over-long target")
                with zf.open(info) as source:
                    self.link(rel, source.read(4097).decode("utf-8", "replace"))
            elif kind in (0, stat.S_IFREG):
                with zf.open(info) as source:
                    self.write(rel, source, mode or 0o644)
            else:
                raise SetupFailed(f"archive: {rel!r} is a device, FIFO or other special file")
