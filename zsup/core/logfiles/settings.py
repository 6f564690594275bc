"""Log settings, the record a reader yields, and where a job's log files are."""

from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass, replace
from typing import NamedTuple

__all__ = [
    "LogSettings",
    "LogRecord",
    "log_paths",
    "LOG_FORMATS",
    "LOG_ROTATIONS",
]

log = logging.getLogger("zsup.logfiles")

LOG_FORMATS = ("text", "json")
LOG_ROTATIONS = (None, "daily", "hourly")

MAX_QUEUE_BATCHES = 100_000
MAX_QUEUE_BYTES = 256 * 1024 * 1024
FLUSH_INTERVAL = 0.1  # seconds: the longest a line waits in memory once it reached the writer
FLUSH_BYTES = 1 << 20  # write a file's pending lines as soon as this much is gathered
RETRY_INTERVAL = 1.0  # seconds between two attempts to write to a failing file
CHECK_INTERVAL = 1.0  # seconds between two checks that an open file is still at its path
IDLE_CLOSE = 60.0  # seconds without a line after which a file is closed (it reopens on demand)
FILE_MODE = 0o640  # output may hold secrets: not world-readable
READ_CHUNK = 1 << 20

_TEMPLATE_KEYS = ("session", "name", "label", "pid")


@dataclass(frozen=True)
class LogSettings:
    """Where and how one job's output is logged.

    Frozen (hence hashable) so the writer can cache the file a (job, label, settings) goes to.
    `log_dir` has no default here: the daemon fills in `<state_dir>/logs`. `log_file` is a
    path template with `%(session)s`, `%(name)s`, `%(label)s` and `%(pid)s` (zsup's process
    id); a relative one is taken inside `log_dir`. `log_max_bytes = 0` never rotates by size.
    """

    log: bool = True
    log_dir: str | None = None
    log_file: str | None = None
    log_format: str = "text"
    log_max_bytes: int = 10_000_000
    log_backups: int = 10
    log_rotate: str | None = None

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format: expected text or json, got {self.log_format!r}")
        if self.log_rotate not in LOG_ROTATIONS:
            raise ValueError(f"log_rotate: expected daily or hourly, got {self.log_rotate!r}")
        if not isinstance(self.log_max_bytes, int) or self.log_max_bytes < 0:
            raise ValueError(f"log_max_bytes: expected a number >= 0, got {self.log_max_bytes!r}")
        if not isinstance(self.log_backups, int) or self.log_backups < 0:
            raise ValueError(f"log_backups: expected a number >= 0, got {self.log_backups!r}")
        if self.log_file is not None:
            try:
                self.log_file % dict.fromkeys(_TEMPLATE_KEYS, "x")
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(
                    f"log_file: bad template {self.log_file!r} (use %(session)s, %(name)s, "
                    f"%(label)s, %(pid)s; write %% for a percent sign): {exc}"
                ) from None

    @classmethod
    def merge(cls, defaults: "LogSettings", job_overrides: dict) -> "LogSettings":
        """The settings of one job: its own values where set (not None), the defaults elsewhere.

        Other keys in `job_overrides` are ignored, so a whole job dict can be passed.
        """
        changes = {}
        for key in ("log", "log_file", "log_dir", "log_format", "log_max_bytes", "log_backups", "log_rotate"):
            value = job_overrides.get(key)
            if value is not None:
                changes[key] = value
        return replace(defaults, **changes) if changes else defaults


class LogRecord(NamedTuple):
    """One line read back from a log file. `os_pid` and `label` are known in JSON files only.

    `seq` is None when it cannot be known: a text line whose seq is implicit (the previous
    line's of that pid + 1) when no earlier line of its pid was read, which happens only if the
    oldest file left starts in the middle of a batch. zsupd's own files always start a file,
    and every batch, with an explicit seq, so the newest lines always have known seqs.
    """

    time: float
    pid: int
    seq: int | None
    line: str
    os_pid: int | None = None
    label: str | None = None


# --- where the files are ---------------------------------------------------------------------


def _split_job(job: str) -> tuple[str, str]:
    session, dot, name = job.partition(".")
    return (session, name) if dot else ("default", job)


def _base_path(job: str, label: str, settings: LogSettings, pid: int | str | None) -> str:
    session, name = _split_job(job)
    if settings.log_file:
        path = settings.log_file % {"session": session, "name": name, "label": label, "pid": pid}
        path = os.path.expanduser(path)
        if not os.path.isabs(path):
            if not settings.log_dir:
                raise ValueError(f"log_file {settings.log_file!r} is relative and no log_dir is set")
            path = os.path.join(os.path.expanduser(settings.log_dir), path)
        return path
    if not settings.log_dir:
        raise ValueError("no log_dir is set")
    return os.path.join(os.path.expanduser(settings.log_dir), f"{session}.{name}.{label}.log")


def _rotated(base: str) -> list[tuple[int, str]]:
    """The rotated files of `base` as (index, path), newest (lowest index) first; `x.log.N.gz`
    wins over `x.log.N`.

    Both exist only for a moment under the rotation lock, or after a crash between the gzip
    and the removal of the plain file: the compressed one is then complete.
    """
    folder, name = os.path.split(base)
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return []
    pattern = re.compile(re.escape(name) + r"\.(\d+)(\.gz)?")
    found: dict[int, str] = {}
    for entry in entries:
        m = pattern.fullmatch(entry)
        if m and (m.group(2) or int(m.group(1)) not in found):
            found[int(m.group(1))] = os.path.join(folder, entry)
    return sorted(found.items())


def log_paths(job: str, label: str, settings: LogSettings, pid: int | None = None) -> list[str]:
    """The files of one job's label: the current file first (listed even before it exists),
    then the rotated ones, newest first.

    With a `%(pid)s` template and no `pid`, the files of every process found on disk are
    listed, one process after the other (each group as above, by increasing pid).
    """
    if pid is None and settings.log_file and "%(pid)" in settings.log_file:
        marker = "\0pid\0"
        template = _base_path(job, label, settings, marker)
        head, _, tail = template.partition(marker)
        regex = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail).replace(re.escape(marker), r"\d+"))
        candidates = glob.glob(glob.escape(template).replace(marker, "[0-9]*") + "*")
        pids = sorted({int(m.group(1)) for c in candidates if (m := regex.match(c))})
        out: list[str] = []
        for p in pids:
            out.extend(log_paths(job, label, settings, p))
        return out
    base = _base_path(job, label, settings, pid)
    return [base] + [path for _, path in _rotated(base)]
