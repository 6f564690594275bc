"""What zsupd must remember across a restart: run-time changes to its jobs.

One SQLite file in the state dir (stdlib sqlite3). A row per job that was changed at run time:
loaded over the bus (origin "runtime"), or a job of the config file that was scaled, stopped
or unloaded (origin "file"). A "file" row carries the fingerprint of the config section it
overrides: when a reload or restart finds that section changed, the file wins and the row is
dropped (DESIGN.md: run-time changes win until the job's own section changes).

The store is used from one thread at a time (the bus's control thread) but opened with
check_same_thread=False so zsupd may create it in its main thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from zsup.core.jobspec import JobSpec

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

    def close(self) -> None:
        self._db.close()

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

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
