"""What zsupd must remember across a restart: run-time changes to its jobs.

One SQLite file in the state dir (stdlib sqlite3). A row per detached process still running
(it outlives zsupd: a restarted zsupd finds it again by pid and start time, never starts it
twice), and a row per job that was changed at run time:
loaded over the bus (origin "runtime"), or a job of the config file that was scaled, stopped
or unloaded (origin "file"). A "file" row carries the fingerprint of the config section it
overrides: when a reload or restart finds that section changed, the file wins and the row is
dropped (DESIGN.md: run-time changes win until the job's own section changes).

Thread rule: SQLite may block (a disk flush, a busy WAL), so it is never touched from the
supervisor or IO loop threads; `execute` raises WrongThread there. Work that starts on those
threads (task output and exits, from zsupd's own io./proc. events) is handed to the store's
own thread with `defer`, which never blocks and keeps the order it was given in. Other
threads (the bus's control thread, service workers) call `execute` directly; one lock keeps
the shared connection to one statement at a time (check_same_thread=False for that reason).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from zsup.core.jobspec import JobSpec
from zsup.core.loop import WrongThread, in_a_loop_thread

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    origin TEXT NOT NULL,           -- 'runtime' or 'file'
    config TEXT NOT NULL,           -- the job as JSON (JobSpec.to_dict)
    numprocesses INTEGER NOT NULL,
    active INTEGER NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    fingerprint TEXT,               -- of the config section a 'file' row overrides
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,          -- 'next_pid': no zsup pid at or above it was ever handed out
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS detached (
    os_pid INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    create_time REAL NOT NULL,      -- psutil's: with os_pid, names one process across pid reuse
    started REAL NOT NULL
);
"""


def fingerprint(spec: JobSpec) -> str:
    text = json.dumps(spec.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class JobRow:
    name: str
    origin: str
    config: dict
    numprocesses: int
    active: bool
    removed: bool
    fingerprint: str | None


class Store:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._pids: PidCounter | None = None
        self._thread = threading.Thread(target=self._run, name="zsup-store", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Finish what was deferred, then close the file."""
        if not self._closed:
            if self._pids is not None:  # a clean stop: the next zsupd goes on without a gap
                self.defer(self._save_next_pid, self._pids.next)
            self._closed = True
            self._queue.put(None)
            self._thread.join(30)
        self._db.close()

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        """Run one statement; any thread but the supervisor and IO loops' (WrongThread)."""
        if in_a_loop_thread():
            raise WrongThread(f"SQLite from loop thread {threading.current_thread().name!r}: use Store.defer")
        with self._lock:
            return self._db.execute(sql, params)

    # -- the store's own thread ------------------------------------------------------------
    def defer(self, fn: Callable, *args: Any) -> None:
        """Run fn(*args) in the store's thread, after everything deferred before it. Safe from
        any thread and never blocks (the queue is unbounded: its producers are bounded by
        what zsupd's children write and by the task output limit)."""
        if self._closed:
            log.warning("store closed: dropped %r", fn)
            return
        self._queue.put((fn, args, None))

    def call(self, fn: Callable, *args: Any, timeout: float = 60) -> Any:
        """Run fn(*args) in the store's thread after everything deferred before it; return
        its result or raise its exception. Not from a loop thread (it waits)."""
        if self.in_store_thread() or self._closed:
            return fn(*args)
        if in_a_loop_thread():
            raise WrongThread("Store.call waits: not from a loop thread (use Store.defer)")
        done = threading.Event()
        box: list = [None, None, done]
        self._queue.put((fn, args, box))
        if not done.wait(timeout):
            raise TimeoutError(f"the store did not answer in {timeout} s")
        if box[1] is not None:
            raise box[1]
        return box[0]

    def in_store_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, box = item
            try:
                result = fn(*args)
                if box is not None:
                    box[0] = result
            except Exception as exc:  # one bad write must not stop the ones after it
                if box is None:
                    log.exception("store: %r failed", fn)
                else:
                    box[1] = exc
            finally:
                if box is not None:
                    box[2].set()

    # -- jobs ----------------------------------------------------------------------------
    def jobs(self) -> dict[str, JobRow]:
        rows = self.execute("SELECT name, origin, config, numprocesses, active, removed, fingerprint FROM jobs")
        return {r[0]: JobRow(r[0], r[1], json.loads(r[2]), r[3], bool(r[4]), bool(r[5]), r[6]) for r in rows}

    def save_job(self, name: str, origin: str, config: dict, numprocesses: int, active: bool,
                 removed: bool = False, fp: str | None = None) -> None:
        self.execute(
            "INSERT OR REPLACE INTO jobs (name, origin, config, numprocesses, active, removed, fingerprint, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, origin, json.dumps(config), numprocesses, int(active), int(removed), fp, time.time()),
        )

    def forget_job(self, name: str) -> None:
        self.execute("DELETE FROM jobs WHERE name = ?", (name,))

    # -- zsup pids ---------------------------------------------------------------------
    def pid_counter(self) -> "PidCounter":
        """zsup's process ids for this run of zsupd: they go on above every id a previous run
        handed out (docs/state.md). Call once, before the Manager spawns anything."""
        row = self.execute("SELECT value FROM counters WHERE name = 'next_pid'").fetchone()
        self._pids = PidCounter(self, row[0] if row else 1)
        return self._pids

    def _save_next_pid(self, value: int) -> None:
        self.execute("INSERT OR REPLACE INTO counters (name, value) VALUES ('next_pid', ?)", (value,))

    # -- detached processes ------------------------------------------------------------
    def save_detached(self, job: str, os_pid: int, create_time: float, started: float) -> None:
        self.execute("INSERT OR REPLACE INTO detached (os_pid, job, create_time, started) VALUES (?, ?, ?, ?)",
                     (os_pid, job, create_time, started))

    def forget_detached(self, os_pid: int) -> None:
        self.execute("DELETE FROM detached WHERE os_pid = ?", (os_pid,))

    def detached(self) -> list[dict]:
        rows = self.execute("SELECT os_pid, job, create_time, started FROM detached")
        return [{"os_pid": r[0], "job": r[1], "create_time": r[2], "started": r[3]} for r in rows]


class PidCounter:
    """The Manager's source of zsup pids (`next()`, on the supervisor thread): counts up from
    where the last zsupd stopped, so a pid is never reused, even across restarts.

    Writing every pid would put SQLite on the spawn path, so the store holds a ceiling: ids are
    reserved RESERVE at a time, written on the store's thread (`defer`, which never blocks)
    when half of the reserve is used. A zsupd that dies without a clean stop leaves a gap
    (the next one starts at the ceiling), never a repeat; a clean stop (Store.close) records
    the exact next id."""

    RESERVE = 1000

    def __init__(self, store: Store, first: int):
        self._store = store
        self.next = first
        self._ceiling = first + self.RESERVE
        store._save_next_pid(self._ceiling)  # before the first spawn: the control thread, at start

    def __iter__(self) -> "PidCounter":
        return self

    def __next__(self) -> int:
        pid = self.next
        self.next += 1
        if self._ceiling - self.next < self.RESERVE // 2:
            self._ceiling = self.next + self.RESERVE
            self._store.defer(self._store._save_next_pid, self._ceiling)
        return pid
