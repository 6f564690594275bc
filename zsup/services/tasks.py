"""Tasks (pulsar-rest-api): run one process type of an app once, keep its record and output.

A task is a one-shot process (`Manager.commit`) of job `<app>.<action>` with the variables of
environment `<env>` added: the `[env:APP.ENV]` section of the config file, else the file
`.env.<env>` in the job's cwd. Its record and output live in SQLite (zsupd's store), so they
survive a restart of zsupd and of the gateway.

Output is captured from the daemon's own events (`io.` for lines, `proc.` for the exit),
matched by zsup pid. Those events are published on the IO and supervisor loop threads,
which must never block: their listeners only hand the event to the store's own thread
(`Store.defer`), where it is written, in the order it came. Events for a pid may reach
that thread before `commit` has told us the pid (the loops run ahead of the control
thread): while a commit is in flight, events of unknown pids of the task's job are held,
and the pid is registered in the store's thread too, so the held ones are replayed before
any later one.

Output kept per task is bounded (`task_output_limit`, default 1 MiB): the first bytes are
kept, the rest counted in `dropped` and the record marked `truncated`. Every change bumps
the task's `version` and publishes `task.<id>.update` (which reaches the bus), so a
long-poll knows "changed" without comparing outputs.

Status: created -> running -> finished (exit 0) | failed (other exit, signal, cannot spawn,
zsupd restarted) | killed (after task_kill).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from zsup.bus.topics import IO, PROC, task_topic
from zsup.core.envfile import parse_env, read_text
from zsup.core.jobspec import check_name
from zsup.errors import BadRequest, NotFound, ZsupError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    action TEXT NOT NULL,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    os_pid INTEGER,
    exit_code INTEGER,
    term_signal INTEGER,
    reason TEXT,
    kill_requested INTEGER NOT NULL DEFAULT 0,
    output_bytes INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    started REAL,
    ended REAL
);
CREATE TABLE IF NOT EXISTS task_output (
    task_id INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (task_id, chunk)
);
"""

COLUMNS = ("id", "app", "env", "action", "job", "status", "pid", "os_pid", "exit_code", "term_signal",
           "reason", "kill_requested", "output_bytes", "dropped", "truncated", "version", "created",
           "started", "ended")
DONE = ("finished", "failed", "killed")
DEFAULT_OUTPUT_LIMIT = 1024 * 1024
MAX_LIST = 500


class TaskService:
    def __init__(self, daemon):
        self.d = daemon
        self.lock = threading.RLock()
        for statement in SCHEMA.strip().split(";"):
            if statement.strip():
                daemon.store.execute(statement)
        self.by_pid: dict[int, int] = {}  # live zsup pid -> task id
        self.chunks: dict[int, int] = {}  # task id -> next chunk number
        self.starting: dict[str, int] = {}  # job -> commits in flight
        self.early: dict[int, list] = {}  # pid -> events that came before commit returned
        self._recover()
        daemon.events.subscribe(IO, self._defer_io)
        daemon.events.subscribe(PROC, self._defer_proc)

    @property
    def limit(self) -> int:
        return int(self.d.settings.get("task_output_limit", DEFAULT_OUTPUT_LIMIT) or DEFAULT_OUTPUT_LIMIT)

    # ------------------------------------------------------------------ sql
    def _rows(self, sql: str, params=()) -> list[tuple]:
        with self.lock:
            return self.d.store.execute(sql, params).fetchall()

    def _row(self, task_id: int) -> dict | None:
        rows = self._rows(f"SELECT {', '.join(COLUMNS)} FROM tasks WHERE id = ?", (task_id,))
        return dict(zip(COLUMNS, rows[0])) if rows else None

    def _update(self, task_id: int, **fields) -> None:
        """Change a task's record, bump its version and tell the bus."""
        with self.lock:
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.d.store.execute(f"UPDATE tasks SET {sets}, version = version + 1 WHERE id = ?",
                                 (*fields.values(), task_id))
            row = self._row(task_id)
        self._publish(row)

    def _publish(self, row: dict | None) -> None:
        if row:
            self.d.events.publish(task_topic(row["id"]), {
                "event": "update", "id": row["id"], "version": row["version"], "status": row["status"],
                "output_bytes": row["output_bytes"], "truncated": bool(row["truncated"])})

    def _recover(self) -> None:
        """Tasks a previous zsupd left running died with it (children die with zsupd)."""
        rows = self._rows("SELECT id FROM tasks WHERE status IN ('created', 'running')")
        for (task_id,) in rows:
            self._update(task_id, status="failed", reason="zsupd restarted", ended=time.time())
        for (task_id, n) in self._rows("SELECT task_id, MAX(chunk) FROM task_output GROUP BY task_id"):
            self.chunks[task_id] = n + 1

    # ------------------------------------------------------------------ commands
    def create(self, app: str, env: str, action: str) -> dict:
        for option, value in (("app", app), ("env", env), ("action", action)):
            if not isinstance(value, str):
                raise BadRequest(f"{option}: expected a name")
            check_name(option, value)
        job = f"{app}.{action}"
        try:
            spec = self.d.manager.get(job)
        except NotFound:
            raise NotFound(f"app {app!r} has no process type {action!r} (no job {job})") from None
        variables = self.environment(app, env, spec.get("cwd"))
        now = time.time()
        with self.lock:
            cur = self.d.store.execute(
                "INSERT INTO tasks (app, env, action, job, status, created) VALUES (?, ?, ?, ?, 'created', ?)",
                (app, env, action, job, now))
            task_id = cur.lastrowid
            self.starting[job] = self.starting.get(job, 0) + 1
        variables.update(ZSUP_TASK_ID=str(task_id), ZSUP_TASK_ENV=env)
        pid = None
        try:
            # Not under self.lock: the supervisor thread publishes events (to our listeners)
            # while commit waits for it.
            pid = self.d.manager.commit(job, env=variables)
        except ZsupError as exc:
            self._update(task_id, status="failed", reason=exc.message, ended=time.time())
        finally:
            # In the store's thread, after the events already handed to it: they were held
            # (pid unknown) and are replayed here before any that come after.
            self.d.store.call(self._committed, job, task_id, pid)
        return self.get(task_id)

    def _committed(self, job: str, task_id: int, pid: int | None) -> None:
        """A commit returned (pid None: it failed): register the pid, replay held events."""
        with self.lock:
            early = []
            if pid is not None:
                # by_pid before starting drops: _mine, which reads both without the lock,
                # must never see neither.
                self.by_pid[pid] = task_id
                self.d.store.execute("UPDATE tasks SET status = 'running', pid = ?, started = ?,"
                                     " version = version + 1 WHERE id = ?", (pid, time.time(), task_id))
                early = self.early.pop(pid, [])
            self.starting[job] -= 1
            if not self.starting[job]:
                del self.starting[job]
            if not self.starting:
                self.early.clear()
        if pid is not None:
            self._publish(self._row(task_id))
            for kind, topic, msg, data in early:
                (self._on_io if kind == "io" else self._on_proc)(topic, msg, data)

    def environment(self, app: str, env: str, cwd: str | None) -> dict:
        section = self.d.config.task_envs.get(f"{app}.{env}") if hasattr(self.d.config, "task_envs") else None
        if section is not None:
            return dict(section)
        path = os.path.join(cwd or os.getcwd(), f".env.{env}")
        if os.path.isfile(path):
            return parse_env(read_text(path, "env file"), path)
        raise NotFound(f"no environment {env!r} for app {app!r} (no [env:{app}.{env}] section, no {path})")

    def get(self, task_id, since_output: int | None = None) -> dict:
        task_id = _task_id(task_id)
        row = self._row(task_id)
        if row is None:
            raise NotFound(f"no task {task_id}")
        out = self.document(row)
        start = 0
        if since_output is not None:
            try:
                start = max(0, int(since_output))
            except (TypeError, ValueError):
                raise BadRequest("since_output: expected a byte offset") from None
        data = b""
        if start < row["output_bytes"]:
            data = b"".join(r[0] for r in self._rows(
                "SELECT data FROM task_output WHERE task_id = ? ORDER BY chunk", (task_id,)))
        out["output"] = data[start:].decode("utf-8", "replace")
        out["outputOffset"] = start
        return out

    @staticmethod
    def document(row: dict) -> dict:
        return {
            "id": row["id"], "status": row["status"], "app": row["app"], "env": row["env"],
            "action": row["action"], "exitCode": row["exit_code"], "pid": row["pid"],
            "osPid": row["os_pid"], "termSignal": row["term_signal"], "reason": row["reason"],
            "job": row["job"], "version": row["version"], "outputBytes": row["output_bytes"],
            "truncated": bool(row["truncated"]), "droppedBytes": row["dropped"],
            "created": row["created"], "started": row["started"], "ended": row["ended"],
        }

    def list(self, limit=20, offset=0) -> dict:
        try:
            limit, offset = int(limit), int(offset)
        except (TypeError, ValueError):
            raise BadRequest("limit and offset: expected integers") from None
        if limit < 0 or offset < 0:
            raise BadRequest("limit and offset: must be >= 0")
        limit = min(limit, MAX_LIST)
        rows = self._rows(f"SELECT {', '.join(COLUMNS)} FROM tasks ORDER BY id DESC LIMIT ? OFFSET ?",
                          (limit, offset))
        total = self._rows("SELECT COUNT(*) FROM tasks")[0][0]
        return {"tasks": [self.document(dict(zip(COLUMNS, r))) for r in rows], "total": total,
                "limit": limit, "offset": offset}

    def kill(self, task_id) -> dict:
        task_id = _task_id(task_id)
        row = self._row(task_id)
        if row is None:
            raise NotFound(f"no task {task_id}")
        if row["status"] == "running" and row["pid"] is not None:
            self._update(task_id, kill_requested=1)
            try:
                self.d.manager.stop_process(row["pid"])  # stop signal, graceful_timeout, SIGKILL
            except NotFound:
                pass  # it exited meanwhile; the exit event settles the status
        return self.get(task_id)

    # ------------------------------------------------------------------ events
    def _mine(self, msg: dict) -> bool:
        """Could this event be a task's? Read without the lock (single dict reads under the
        GIL) so the loops never wait for it: a task's pid is in `by_pid`, or its commit is
        still in flight (`starting`, raised before the spawn and dropped after by_pid is set)."""
        return msg.get("pid") in self.by_pid or bool(self.starting)

    def _defer_io(self, topic: str, msg: dict, data: bytes | None) -> None:
        """Listener on the IO thread: no SQLite there, hand the event to the store's thread."""
        if self._mine(msg):
            self.d.store.defer(self._on_io, topic, msg, data)

    def _defer_proc(self, topic: str, msg: dict, data) -> None:
        """Listener on the supervisor thread: as _defer_io. Only the events used here go."""
        if topic.endswith((".spawn", ".exit")) and self._mine(msg):
            self.d.store.defer(self._on_proc, topic, msg, data)

    # ------------------------------------------------------------------ the store's thread
    def _held(self, kind: str, topic: str, msg: dict, data) -> bool:
        """Hold an event of an unknown pid while a commit of its job is in flight."""
        if msg.get("job") in self.starting or (kind == "proc" and _job_of(topic) in self.starting):
            self.early.setdefault(msg.get("pid"), []).append((kind, topic, msg, data))
            return True
        return False

    def _on_io(self, topic: str, msg: dict, data: bytes | None) -> None:
        pid = msg.get("pid")
        with self.lock:
            task_id = self.by_pid.get(pid)
            if task_id is None:
                if self.starting:
                    self._held("io", topic, msg, data)
                return
            if not data:
                return
            row = self._row(task_id)
            room = max(0, self.limit - row["output_bytes"])
            kept = data[:room]
            fields = {}
            if kept:
                n = self.chunks.get(task_id, 0)
                self.chunks[task_id] = n + 1
                self.d.store.execute("INSERT INTO task_output (task_id, chunk, data) VALUES (?, ?, ?)",
                                     (task_id, n, kept))
                fields["output_bytes"] = row["output_bytes"] + len(kept)
            if len(kept) < len(data):
                fields.update(truncated=1, dropped=row["dropped"] + len(data) - len(kept))
            if fields:
                self._update(task_id, **fields)

    def _on_proc(self, topic: str, msg: dict, data) -> None:
        event = topic.rsplit(".", 1)[-1]
        if event not in ("spawn", "exit"):
            return
        pid = msg.get("pid")
        with self.lock:
            task_id = self.by_pid.get(pid)
            if task_id is None:
                if self.starting:
                    self._held("proc", topic, msg, data)
                return
            if event == "spawn":
                self._update(task_id, os_pid=msg.get("os_pid"))
                return
            del self.by_pid[pid]
            row = self._row(task_id)
            code, sig = msg.get("exit_code"), msg.get("term_signal")
            if row["kill_requested"]:
                status = "killed"
            elif code == 0 and sig is None:
                status = "finished"
            else:
                status = "failed"
            reason = row["reason"]
            if status == "failed" and not reason:
                if getattr(self.d.manager, "stopping", False):
                    reason = "zsupd stopped"
                elif sig is not None:
                    reason = f"killed by signal {sig}"
            self._update(task_id, status=status, exit_code=code, term_signal=sig, reason=reason, ended=time.time())


def _task_id(value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"id: expected a task number, got {value!r}") from None
    if isinstance(value, bool) or number < 1:
        raise BadRequest(f"id: expected a task number, got {value!r}")
    return number


def _job_of(topic: str) -> str:
    parts = topic.split(".")
    return f"{parts[1]}.{parts[2]}" if len(parts) >= 4 else ""
