"""Output kept on disk: one log file per job and output label, written off the supervision path.

Why it is built this way:

- The IO thread that reads the children's pipes must never wait for a disk. `LogWriter.write`
  only appends a tuple to a bounded in-memory queue (no splitting, no formatting, no system
  call); one background thread does everything else. When the queue is full the batch is
  dropped and counted: losing log lines is better than stalling every child of the daemon.
- The writer thread keeps files open, gathers the formatted lines in memory and writes them
  with one `os.write` per file at least every 100 ms (or when the queue runs dry, or when a file
  has 1 MB pending).
- The text format costs no Python work per line: a batch (the lines of one `write`, which
  arrived in one read, hence one time stamp) is formatted with one C-level `bytes.replace`
  that puts a prefix after each newline, about 40 ns a short line. Only the first line of a
  batch carries its sequence number; the others' is implicit (the previous one's + 1).
  A 1 MiB batch holds the GIL for about 2 ms, well under the interpreter's switch interval.
- Every line carries the time and zsup's process id; a reader infers each line's sequence
  number from the last explicit one of that pid, so a follower (`zsupctl logs -f`) reads the
  files, then the live bus feed, and joins them on (pid, seq) without gap or duplicate. Every
  file zsupd writes starts with an explicit seq: a batch too large for a file is cut into
  pieces that each begin with one.
- Rotation renames `x.log` -> `x.log.1` (shifting older ones up) and a second thread gzips
  the rotated file, so compression never slows the writer. The two threads and the readers
  share one lock for the renames only: a reader opening the files of a log sees a consistent
  set, never a file twice nor a gap.
- Disk trouble (ENOSPC, EROFS, EACCES, EFBIG, a deleted folder) is an episode, not a flood:
  `on_error` is called once per directory per episode, the lost lines are counted, a write is
  retried at most once a second and the episode ends by itself (logged) when a write works
  again. A deleted log folder is noticed within a second and created again.
- A write that fails half-way (a full disk) is cut back with `ftruncate`, so a file only ever
  holds whole lines.

Formats, one line each (docs/logs.md):

    text: 2026-11-25T14:29:43.123456Z 3:17 the first line of a batch
          2026-11-25T14:29:43.123456Z 3: the next line of that batch (seq 18, implicit)
    json: {"time": "2026-11-25T14:29:43.123456Z", "pid": 3, "os_pid": 4242, "seq": 17,
           "label": "stdout", "line": "the line as the child wrote it"}

The time is UTC with microseconds, taken when the batch reached the daemon; `3:17` is zsup's
process id and the line's sequence number, `3:` the process id of a line whose seq is the
previous line's of pid 3 plus one. JSON stays one self-contained object per line (slower to
write: Python work per line). A piece of an over-long line gets a line of its own.
Time rotation ("daily", "hourly") follows local time, as operators expect of "daily".
"""

from __future__ import annotations

import calendar
import errno
import glob
import gzip
import heapq
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple, Sequence

__all__ = [
    "LogSettings",
    "LogWriter",
    "LogRecord",
    "log_paths",
    "read_log",
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


# --- writing ---------------------------------------------------------------------------------


class _File:
    """The writer thread's view of one log file (only that thread touches it)."""

    __slots__ = (
        "path", "settings", "fd", "ident", "size", "pending", "pending_bytes", "pending_lines",
        "period_end", "retry_at", "rotate_retry_at", "failing", "last_write", "scanned",
    )

    def __init__(self, path: str, settings: LogSettings):
        self.path = path
        self.settings = settings
        self.fd: int | None = None
        self.ident: tuple[int, int] | None = None
        self.size = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.pending_lines = 0
        self.period_end: float | None = None
        self.retry_at = 0.0
        self.rotate_retry_at = 0.0
        self.failing = False
        self.last_write = 0.0
        self.scanned = False


class _Marker:
    """A request queued behind the lines: flush (set `done` once all before it is on disk) or stop."""

    __slots__ = ("kind", "done")

    def __init__(self, kind: str):
        self.kind = kind
        self.done = threading.Event()


_json_str = json.JSONEncoder(ensure_ascii=False).encode


def _format_time(t: float) -> str:
    """`2026-11-25T14:29:43.123456Z`: UTC, microseconds (truncated, so parsing never goes later)."""
    sec, us = divmod(int(t * 1_000_000), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%06dZ" % us


def _period_end(t: float, mode: str) -> float:
    """When the local hour or day that holds `t` ends (operators expect "daily" at local midnight)."""
    lt = time.localtime(t)
    if mode == "hourly":
        start = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, lt.tm_hour, 0, 0, 0, 0, -1))
        return start + 3600
    return time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday + 1, 0, 0, 0, 0, 0, -1))


class LogWriter:
    """Writes the output lines of every job to its log files, in one background thread.

    `write` may be called from any thread and never blocks; `reopen`, `flush`, `stop`,
    `stats`, `paths` and `read` too. `clock` gives the time stamped on each line and drives
    time-based rotation (injectable for tests); retries and flushes use the monotonic clock.
    """

    def __init__(
        self,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        max_queue_batches: int = MAX_QUEUE_BATCHES,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
    ):
        self._on_error = on_error
        self._clock = clock
        self._max_batches = max_queue_batches
        self._max_bytes = max_queue_bytes
        # queue shared with the producers
        self._qlock = threading.Lock()
        self._queue: deque = deque()
        self._queued_bytes = 0
        self._queue_dropped = 0
        self._idle = False
        self._wake = threading.Event()
        self._stopped = False
        self._reopen_requested = False
        # rename lock shared by the writer, the compressor and readers
        self._fs_lock = threading.Lock()
        self._compress_queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._compressor: threading.Thread | None = None
        # writer thread state
        self._files: dict[str, _File] = {}
        self._routes: dict[tuple, str] = {}
        self._dirty: set[_File] = set()
        self._failing_dirs: dict[str, set[str]] = {}
        self._bad_routes: set[tuple] = set()
        self._ts_sec = -1
        self._ts_text = b""
        self._lines_written = 0
        self._lines_dropped = 0
        self._bytes_written = 0
        self._write_errors = 0
        self._rotations = 0
        self._compress_errors = 0
        self._compress_pending = 0  # queued or in progress; guarded by _compress_lock
        self._compress_lock = threading.Lock()

    # --- public API ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer and compressor threads (daemon threads: they never hold up exit)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="zsup-logwriter", daemon=True)
        self._compressor = threading.Thread(target=self._compress_loop, name="zsup-logcompress", daemon=True)
        self._thread.start()
        self._compressor.start()

    def write(self, job: str, label: str, settings: LogSettings, pid: int, os_pid: int, seq: int,
              data: bytes) -> None:
        """Queue whole lines of one stream (`seq` numbers the first). Never blocks, never raises.

        The time is taken here, when the lines arrive, not when they reach the disk.
        """
        if not settings.log or not data:
            return
        item = (job, label, settings, pid, os_pid, seq, data, self._clock())
        with self._qlock:
            if (self._stopped or len(self._queue) >= self._max_batches
                    or self._queued_bytes + len(data) > self._max_bytes):
                self._queue_dropped += data.count(b"\n") + (not data.endswith(b"\n"))
                return
            self._queue.append(item)
            self._queued_bytes += len(data)
            wake = self._idle
            self._idle = False
        if wake:
            self._wake.set()

    def reopen(self) -> None:
        """Close every file; each is opened again (at its path) by its next write.

        For an external logrotate that moved the files away. Safe from any thread or a
        signal handler's deferred callback.
        """
        self._reopen_requested = True
        self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every line queued before this call is written (or counted as dropped)."""
        marker = self._enqueue_marker("flush")
        if marker is None or self._thread is None:
            return False
        return marker.done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, close every file, and give the compressor `timeout` to finish."""
        deadline = time.monotonic() + timeout
        marker = self._enqueue_marker("stop")
        if self._thread is not None and marker is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._compressor is not None:
            self._compress_queue.put(None)
            self._compressor.join(max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict:
        """Counters since start: what was written, dropped (full queue or disk trouble), failed."""
        with self._qlock:
            queued = len(self._queue)
            queue_dropped = self._queue_dropped
        return {
            "lines_written": self._lines_written,
            "lines_dropped": self._lines_dropped + queue_dropped,
            "bytes_written": self._bytes_written,
            "write_errors": self._write_errors,
            "files_open": sum(1 for f in list(self._files.values()) if f.fd is not None),
            "queued": queued,
            "rotations": self._rotations,
            "compress_pending": self._compress_pending,
            "compress_errors": self._compress_errors,
        }

    def paths(self, job: str, label: str, settings: LogSettings, pid: int | None = None) -> list[str]:
        """The files of one job's label, current first, then rotated ones newest first."""
        return log_paths(job, label, settings, pid)

    def read(self, job: str, label: str, settings: LogSettings, since: float | None = None,
             limit: int | None = None, pid: int | None = None) -> Iterator[LogRecord]:
        """`read_log` over this writer's files, opened under the rotation lock.

        Opening them all while no rename can happen gives a consistent snapshot: a rotation
        or a compression that runs while the caller reads neither hides nor repeats a line.
        Lines still in the writer's memory (at most ~100 ms worth) are not there yet: the
        caller gets them from the ring buffer or the live feed, joined on (pid, seq).
        """
        with self._fs_lock:
            files = _open_all(log_paths(job, label, settings, pid))
        return read_log(files, since, limit)

    # --- producer side helpers ------------------------------------------------------------------

    def _enqueue_marker(self, kind: str) -> _Marker | None:
        marker = _Marker(kind)
        with self._qlock:
            if self._stopped:
                return None
            self._queue.append(marker)
            self._idle = False
            # Nothing is accepted after a stop: it would sit behind the marker, never written.
            self._stopped = kind == "stop"
        self._wake.set()
        return marker

    # --- writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        last_flush = time.monotonic()
        next_check = last_flush + CHECK_INTERVAL
        while True:
            with self._qlock:
                items = self._queue
                if items:
                    self._queue = deque()
                    self._queued_bytes = 0
                else:
                    self._idle = True
                    self._wake.clear()
            if not items:
                self._flush_all()
                last_flush = now = time.monotonic()
                if self._reopen_requested:
                    self._do_reopen()
                if now >= next_check:
                    self._housekeeping(now)
                    next_check = now + CHECK_INTERVAL
                self._wake.wait(max(0.01, next_check - now))
                continue
            for item in items:
                if self._reopen_requested:
                    self._do_reopen()
                if item.__class__ is tuple:
                    try:
                        self._write_batch(*item)
                    except Exception:  # a bug here must not end logging for everyone
                        log.exception("log writer: unexpected error")
                        self._lines_dropped += item[6].count(b"\n")
                    continue
                self._flush_all()
                if item.kind == "stop":
                    self._close_all()
                    item.done.set()
                    return
                item.done.set()
            now = time.monotonic()
            if now - last_flush >= FLUSH_INTERVAL:
                self._flush_all()
                last_flush = now
            if now >= next_check:
                self._housekeeping(now)
                next_check = now + CHECK_INTERVAL

    def _route(self, job: str, label: str, settings: LogSettings, pid: int) -> _File | None:
        key = (job, label, settings, pid)
        path = self._routes.get(key)
        if path is None:
            try:
                path = _base_path(job, label, settings, pid)
            except (ValueError, KeyError, TypeError) as exc:
                if key not in self._bad_routes:
                    self._bad_routes.add(key)
                    self._notify(f"cannot log {job} {label}: {exc}")
                return None
            if len(self._routes) > 10_000:
                self._routes.clear()
            self._routes[key] = path
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = _File(path, settings)
        else:
            f.settings = settings
        return f

    def _write_batch(self, job, label, settings, pid, os_pid, seq, data, t) -> None:
        f = self._route(job, label, settings, pid)
        if f is None:
            self._lines_dropped += data.count(b"\n") + (not data.endswith(b"\n"))
            return
        if f.fd is None:
            if time.monotonic() < f.retry_at or not self._open(f):
                self._lines_dropped += data.count(b"\n") + (not data.endswith(b"\n"))
                return
        if settings.log_format == "text":
            sec, us = divmod(int(t * 1_000_000), 1_000_000)
            if sec != self._ts_sec:  # one strftime per second of output, not per batch
                self._ts_sec = sec
                self._ts_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
            head = b"%s.%06dZ %d:" % (self._ts_text, us, pid)  # `TIME PID:`
            short = head + b" "  # `TIME PID: `, the prefix of every line but the first
            # No Python work per line: one C-level replace puts the short prefix after every
            # newline but the last (a 1 MiB batch takes about a millisecond of GIL time).
            n = data.count(b"\n")
            if data[-1:] == b"\n":
                body = data.replace(b"\n", b"\n" + short, n - 1) if n > 1 else data
                nlines = n
            else:  # a piece of an over-long line (or a last line without its newline)
                body = (data.replace(b"\n", b"\n" + short) if n else data) + b"\n"
                nlines = n + 1
            chunk = b"%s%d %s" % (head, seq, body)
            self._append(f, chunk, nlines, t, seq, head, short)
            return
        text = data.decode("utf-8", "replace")
        lines = text.split("\n")
        if not lines[-1]:
            lines.pop()
        head = '{"time": "%s", "pid": %d, "os_pid": %d, "seq": ' % (_format_time(t), pid, os_pid)
        tail = ', "label": %s, "line": ' % _json_str(label)
        chunk = "".join([
            f"{head}{s}{tail}{_json_str(line)}}}\n" for s, line in zip(range(seq, seq + len(lines)), lines)
        ]).encode()
        self._append(f, chunk, len(lines), t)

    def _append(self, f: _File, chunk: bytes, nlines: int, t: float, seq: int = 0, head: bytes = b"",
                short: bytes = b"") -> None:
        """Queue a formatted batch for `f`, rotating first (by time, or by size if it would not fit).

        `seq`, `head` and `short` describe a text batch (its first seq, `TIME PID:` and the short
        prefix `TIME PID: ` of its other lines), so a split batch can begin each piece anew.
        """
        settings = f.settings
        if settings.log_rotate:
            if f.period_end is None:
                f.period_end = _period_end(t, settings.log_rotate)
            elif t >= f.period_end:
                if f.size + f.pending_bytes > 0:
                    self._rotate(f, "time")
                f.period_end = _period_end(t, settings.log_rotate)
        max_bytes = settings.log_max_bytes
        if max_bytes and f.size + f.pending_bytes + len(chunk) > max_bytes:
            if len(chunk) > max_bytes and nlines > 1:
                self._append_split(f, chunk, nlines, seq, head, short, max_bytes)
                return
            if f.size + f.pending_bytes > 0:
                self._rotate(f, "size")
        self._add(f, chunk, nlines)

    def _append_split(self, f: _File, chunk: bytes, nlines: int, seq: int, head: bytes, short: bytes,
                      max_bytes: int) -> None:
        """A batch larger than a whole file: cut it at line ends into pieces that fill each file,
        so no rotation cuts a line (a line larger than a file gets a file of its own).

        In text, every piece after the first begins with an explicit seq again (its leading
        `TIME PID: ` becomes `TIME PID:SEQ `), so every file starts with a known seq. The cuts
        are found with C-level searches; the only Python work is per piece, not per line.
        """
        pos, end = 0, len(chunk)
        lead, skip = b"", 0  # what replaces the first `skip` bytes of the next piece
        while pos < end:
            used = f.size + f.pending_bytes
            room = max_bytes - used - len(lead) + skip
            cut = chunk.rfind(b"\n", pos, pos + room) if room > 0 else -1
            if cut < 0 and used > 0:
                self._rotate(f, "size")
                if f.fd is None:  # the rotation could not reopen the file
                    self._lines_dropped += nlines
                    return
                used = f.size + f.pending_bytes  # still > 0 if the rotation has to wait
                room = max_bytes - used - len(lead) + skip
                cut = chunk.rfind(b"\n", pos, pos + room) if room > 0 else -1
            if cut < 0:
                cut = chunk.find(b"\n", pos)  # chunks always end with a newline
            piece = lead + chunk[pos + skip:cut + 1] if skip else chunk[pos:cut + 1]
            k = chunk.count(b"\n", pos, cut + 1)
            self._add(f, piece, k)
            nlines -= k
            seq += k
            pos = cut + 1
            if short:
                lead, skip = head + b"%d " % seq, len(short)

    def _add(self, f: _File, chunk: bytes, nlines: int) -> None:
        if f.fd is None:  # a rotation could not reopen the file
            self._lines_dropped += nlines
            return
        f.pending.append(chunk)
        f.pending_bytes += len(chunk)
        f.pending_lines += nlines
        self._dirty.add(f)
        if f.pending_bytes >= FLUSH_BYTES:
            self._flush(f)

    def _open(self, f: _File) -> bool:
        """Open (creating the folder) and learn size and age; on failure start/continue an episode."""
        folder = os.path.dirname(f.path)
        try:
            if folder:
                os.makedirs(folder, exist_ok=True)
            fd = os.open(f.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            self._fail(f, exc, "open")
            return False
        st = os.fstat(fd)
        f.fd = fd
        f.ident = (st.st_dev, st.st_ino)
        f.size = st.st_size
        f.last_write = time.monotonic()
        rotate = f.settings.log_rotate
        f.period_end = _period_end(st.st_mtime, rotate) if rotate and st.st_size else None
        if not f.scanned:
            # Rotated files a previous run left uncompressed (it stopped or crashed first).
            f.scanned = True
            for _, path in _rotated(f.path):
                if not path.endswith(".gz"):
                    self._queue_compress(f.path, path)
        return True

    def _flush(self, f: _File) -> None:
        self._dirty.discard(f)
        if not f.pending:
            return
        data = b"".join(f.pending) if len(f.pending) > 1 else f.pending[0]
        nlines = f.pending_lines
        f.pending = []
        f.pending_bytes = 0
        f.pending_lines = 0
        if f.fd is None:
            self._lines_dropped += nlines
            return
        start = None
        try:
            # Where this write starts, asked of the file: an outside `copytruncate` may have
            # emptied it, and a failed write is cut back to exactly here.
            start = os.lseek(f.fd, 0, os.SEEK_END)
            view = memoryview(data)
            while view:
                n = os.write(f.fd, view)
                view = view[n:]
        except OSError as exc:
            try:  # keep whole lines only: undo what part of this write got in
                if start is not None:
                    os.ftruncate(f.fd, start)
            except OSError:
                pass
            self._close(f)
            self._fail(f, exc, "write", nlines)
            return
        f.size = start + len(data)
        f.last_write = time.monotonic()
        self._lines_written += nlines
        self._bytes_written += len(data)
        if f.failing:
            self._recovered(f)

    def _flush_all(self) -> None:
        for f in list(self._dirty):
            self._flush(f)

    def _close(self, f: _File) -> None:
        if f.fd is not None:
            try:
                os.close(f.fd)
            except OSError:
                pass
            f.fd = None

    def _close_all(self) -> None:
        for f in self._files.values():
            self._flush(f)
            self._close(f)

    def _do_reopen(self) -> None:
        self._reopen_requested = False
        self._flush_all()
        for f in self._files.values():
            self._close(f)
            f.retry_at = 0.0  # try at once, even a file that was failing
        log.info("log files reopened")

    def _housekeeping(self, now: float) -> None:
        """Once a second: notice files moved or folders deleted behind our back; close idle files."""
        for path, f in list(self._files.items()):
            if f.fd is None:
                if not f.failing and not f.pending and now - f.last_write > IDLE_CLOSE:
                    del self._files[path]
                continue
            try:
                st = os.stat(path)
                moved = (st.st_dev, st.st_ino) != f.ident
            except OSError:
                moved = True
            if not moved:
                if not f.pending and now - f.last_write > IDLE_CLOSE:
                    self._close(f)
                continue
            folder = os.path.dirname(path)
            if folder and not os.path.isdir(folder):
                # The folder was deleted: what is pending would go to an unlinked file. Keep it,
                # tell the operator once, and write it to a new file in a new folder.
                self._close(f)
                self._fail(f, OSError(errno.ENOENT, "log folder was removed", folder), "write", 0)
                if self._open(f):
                    self._flush(f)
            else:
                # Moved away (logrotate without a reopen): what is pending belongs to the old file.
                self._flush(f)
                self._close(f)

    def _fail(self, f: _File, exc: OSError, what: str, lost: int = 0) -> None:
        self._write_errors += 1
        self._lines_dropped += lost
        f.retry_at = time.monotonic() + RETRY_INTERVAL
        f.failing = True
        folder = os.path.dirname(f.path)
        failing = self._failing_dirs.setdefault(folder, set())
        first = not failing
        failing.add(f.path)
        if first:
            reason = exc.strerror or str(exc)
            self._notify(f"log file {f.path}: {what} failed: {reason}; its output is dropped (and "
                         f"counted) until writing works again")

    def _recovered(self, f: _File) -> None:
        f.failing = False
        folder = os.path.dirname(f.path)
        failing = self._failing_dirs.get(folder)
        if failing is not None:
            failing.discard(f.path)
            if not failing:
                del self._failing_dirs[folder]
                log.info("log files in %s are written again (%d lines dropped so far)",
                         folder or ".", self._lines_dropped)

    def _notify(self, message: str) -> None:
        log.error("%s", message)
        if self._on_error is not None:
            try:
                self._on_error(message)
            except Exception:
                log.exception("log writer: on_error callback failed")

    # --- rotation -------------------------------------------------------------------------------

    def _rotate(self, f: _File, why: str) -> None:
        """x.log -> x.log.1, x.log.N(.gz) -> x.log.N+1(.gz); keep `log_backups`; reopen x.log."""
        if time.monotonic() < f.rotate_retry_at:
            return
        self._flush(f)
        if f.fd is None:
            return
        base = f.path
        backups = f.settings.log_backups
        try:
            with self._fs_lock:
                for index, path in reversed(_rotated(base)):
                    if index >= backups:
                        _unlink_all(f"{base}.{index}")
                        continue
                    for suffix in ("", ".gz"):
                        src = f"{base}.{index}{suffix}"
                        if os.path.exists(src):
                            os.rename(src, f"{base}.{index + 1}{suffix}")
                if backups:
                    os.rename(base, f"{base}.1")
                else:
                    os.unlink(base)
        except OSError as exc:
            # Keep writing to the current file; try again later. Not a lost-line episode.
            if not f.rotate_retry_at:
                log.warning("cannot rotate %s: %s", base, exc)
            f.rotate_retry_at = time.monotonic() + 10 * RETRY_INTERVAL
            return
        f.rotate_retry_at = 0.0
        self._rotations += 1
        self._close(f)
        if backups:
            self._queue_compress(base, f"{base}.1")
        self._open(f)

    def _queue_compress(self, base: str, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        with self._compress_lock:
            self._compress_pending += 1
        self._compress_queue.put((base, (st.st_dev, st.st_ino)))

    # --- compressor thread ----------------------------------------------------------------------

    def _compress_loop(self) -> None:
        while True:
            job = self._compress_queue.get()
            if job is None:
                return
            try:
                self._compress(*job)
            except Exception:
                log.exception("log compressor: unexpected error")
                self._compress_errors += 1
            finally:
                with self._compress_lock:
                    self._compress_pending -= 1

    def _compress(self, base: str, ident: tuple[int, int]) -> None:
        """Gzip a rotated file wherever later rotations moved it (found by inode), then drop it.

        Only the lookups and the final rename and unlink take the rotation lock, so the writer
        never waits for the compression itself. The source stays open until the end: an open
        file's inode cannot be reused, so the second lookup finds this very file again, never
        a newer one that inherited the number of a file the backups limit deleted meanwhile.
        """
        with self._fs_lock:
            src = _find_by_ident(base, ident)
            if src is None:
                return  # already dropped by the backups limit
            fin = open(src, "rb")
        tmp = f"{base}.{ident[1]}.gz.tmp"
        with fin:
            try:
                st = os.fstat(fin.fileno())
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, st.st_mode & 0o777)
                with open(fd, "wb") as raw, gzip.GzipFile(
                    filename=os.path.basename(src), mode="wb", fileobj=raw, mtime=int(st.st_mtime)
                ) as gz:
                    shutil.copyfileobj(fin, gz, READ_CHUNK)
                os.utime(tmp, (st.st_atime, st.st_mtime))
                with self._fs_lock:
                    src = _find_by_ident(base, ident)
                    if src is None:
                        os.unlink(tmp)
                        return
                    os.rename(tmp, src + ".gz")
                    os.unlink(src)
            except OSError as exc:
                self._compress_errors += 1
                log.warning("cannot compress %s (left uncompressed): %s", src, exc)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def _find_by_ident(base: str, ident: tuple[int, int]) -> str | None:
    """The uncompressed rotated file of `base` with this (device, inode), if it still exists."""
    folder, name = os.path.split(base)
    pattern = re.compile(re.escape(name) + r"\.\d+")
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return None
    for entry in entries:
        if pattern.fullmatch(entry):
            path = os.path.join(folder, entry)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == ident:
                return path
    return None


def _unlink_all(stem: str) -> None:
    for path in (stem, stem + ".gz"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# --- reading ---------------------------------------------------------------------------------


class _OpenLog:
    """A log file opened for reading; `name` keeps the path for grouping rotated files."""

    __slots__ = ("name", "raw")

    def __init__(self, name: str, raw: BinaryIO):
        self.name = name
        self.raw = raw

    def lines(self) -> Iterator[bytes]:
        """Whole lines (without the newline), read in large chunks; a gzip file is decompressed.

        A last piece without a newline is a write still in progress: it is left out.
        """
        self.raw.seek(0)
        stream: BinaryIO = self.raw
        if self.name.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=self.raw, mode="rb")  # type: ignore[assignment]
        rest = b""
        try:
            while True:
                chunk = stream.read(READ_CHUNK)
                if not chunk:
                    break
                parts = (rest + chunk).split(b"\n")
                rest = parts.pop()
                yield from parts
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            log.warning("log file %s ends early: %s", self.name, exc)

    def first_time(self) -> float | None:
        for line in self.lines():
            record = _parse_line(line, {})
            if record is not None:
                return record.time
        return None

    def records(self, last: dict[int, int | None]) -> Iterator[LogRecord]:
        """The records of this file; `last` (pid -> last seq, carried from the chain's older
        files) gives implicit seqs their value and is updated."""
        for line in self.lines():
            record = _parse_line(line, last)
            if record is not None:
                yield record

    def close(self) -> None:
        self.raw.close()


def _open_all(paths: Iterable[str]) -> list[_OpenLog]:
    out = []
    for path in paths:
        try:
            out.append(_OpenLog(os.fspath(path), open(path, "rb")))
        except FileNotFoundError:
            out.append(_OpenLog(os.fspath(path), None))  # type: ignore[arg-type]
        except OSError as exc:
            log.warning("cannot read log file %s: %s", path, exc)
    return out


_time_cache: dict[str, int] = {}


def _parse_time(text: str) -> float:
    """`2026-11-25T14:29:43.123456Z` -> epoch seconds; the whole-second part is cached."""
    head = text[:19]
    sec = _time_cache.get(head)
    if sec is None:
        sec = calendar.timegm((int(head[0:4]), int(head[5:7]), int(head[8:10]),
                               int(head[11:13]), int(head[14:16]), int(head[17:19]), 0, 0, 0))
        if len(_time_cache) > 4096:
            _time_cache.clear()
        _time_cache[head] = sec
    frac = text[20:26] if len(text) > 20 and text[19] == "." else "0"
    return (sec * 1_000_000 + int(frac.ljust(6, "0"))) / 1_000_000


def _parse_line(line: bytes, last: dict[int, int | None]) -> LogRecord | None:
    """One line of either format, or None for a line that is not ours.

    A text line is `TIME PID:SEQ text` (the first line of a batch) or `TIME PID: text` (the
    others): an implicit seq is `last[pid] + 1`, None if unknown. `last` is updated.
    """
    try:
        if line[:1] == b"{":
            obj = json.loads(line)
            t = obj["time"]
            t = float(t) if isinstance(t, (int, float)) else _parse_time(t)
            pid, seq = int(obj["pid"]), int(obj["seq"])
            last[pid] = seq
            return LogRecord(t, pid, seq, obj.get("line", ""), obj.get("os_pid"), obj.get("label"))
        stamp, ident, text = line.split(b" ", 2)
        pid_text, seq_text = ident.split(b":")
        pid = int(pid_text)
        if seq_text:
            seq: int | None = int(seq_text)
        else:
            seq = last.get(pid)
            if seq is not None:
                seq += 1
        t = _parse_time(stamp.decode("ascii"))
        last[pid] = seq
        return LogRecord(t, pid, seq, text.decode("utf-8", "replace"))
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        return None  # not one of our lines (a hand edit, a foreign file): skip it


def _chains(files: list[_OpenLog]) -> list[list[_OpenLog]]:
    """Group a newest-first list into the files of one log each (`x`, `x.1`, `x.2.gz`, ...),
    returned oldest first. A file that fits no group stands alone; merging by time still
    places it right."""
    chains: list[list[_OpenLog]] = []
    pattern = None
    last = 0
    for f in files:
        m = pattern.fullmatch(f.name) if pattern is not None else None
        if m is not None and int(m.group(1)) > last:
            chains[-1].append(f)
            last = int(m.group(1))
        else:
            chains.append([f])
            pattern = re.compile(re.escape(f.name) + r"\.(\d+)(?:\.gz)?")
            last = 0
    return [[f for f in reversed(chain) if f.raw is not None] for chain in chains]


def _stream_chain(chain: list[_OpenLog], since: float | None) -> Iterator[LogRecord]:
    last: dict[int, int | None] = {}  # pid -> last seq, across the files of the chain
    for i, f in enumerate(chain):
        if since is not None and i + 1 < len(chain):
            # Every line of this file is older than the next file's first line. (Skipping it
            # loses no seq: a file zsupd wrote starts with explicit ones.)
            nxt = chain[i + 1].first_time()
            if nxt is not None and nxt < since:
                continue
        for record in f.records(last):
            if since is None or record.time >= since:
                yield record


def _tail_chain(chain: list[_OpenLog], since: float | None, limit: int) -> list[LogRecord]:
    """The last `limit` records of one log, reading files newest first and stopping early."""
    parts: list[list[LogRecord]] = []
    total = 0
    for f in reversed(chain):
        records = list(f.records({}))
        parts.append(records)
        if since is None:
            total += len(records)
        else:
            total += sum(1 for r in records if r.time >= since)
            if records and records[0].time < since:
                break  # older files hold older lines only
        if total >= limit:
            break
    parts.reverse()
    if len(parts) > 1:
        # Each file was read on its own: one that starts mid-batch (not one zsupd wrote) has
        # lines of unknown seq, which the older file read just before it can tell.
        last: dict[int, int | None] = {}
        for part in parts:
            for i, r in enumerate(part):
                if r.seq is None and last.get(r.pid) is not None:
                    r = part[i] = r._replace(seq=last[r.pid] + 1)  # type: ignore[operator]
                last[r.pid] = r.seq
    out = [r for part in parts for r in part if since is None or r.time >= since]
    return out[-limit:] if limit else []


def read_log(paths: Sequence[str | os.PathLike] | Sequence[_OpenLog], since: float | None = None,
             limit: int | None = None) -> Iterator[LogRecord]:
    """Read back the lines of one job's label, oldest first, from its current and rotated files.

    `paths` is newest first, as `log_paths` gives it (missing files are skipped). The files are
    opened at once, so a rotation during the read moves no line out of sight (in-process,
    `LogWriter.read` also holds the rotation lock while opening). `since` (epoch seconds) keeps
    lines stamped at or after it; `limit` keeps the last N. Both formats are understood, and
    groups of several processes' files (a `%(pid)s` template) are merged by time.

    Implicit text seqs are inferred per log (one chain of rotated files) and pid, from the
    last explicit one before them; a line whose seq cannot be known (the oldest file read
    starts mid-batch, which no file zsupd writes does) has `seq` None. The newest lines'
    seqs are always known: every batch begins with an explicit seq.
    """
    files = [p if isinstance(p, _OpenLog) else None for p in paths]
    if any(f is None for f in files):
        files = _open_all([os.fspath(p) for p in paths])  # type: ignore[arg-type]
    return _read(files, since, limit)  # type: ignore[arg-type]


def _read(files: list[_OpenLog], since: float | None, limit: int | None) -> Iterator[LogRecord]:
    try:
        chains = [c for c in _chains(files) if c]
        if limit is not None:
            tails = [_tail_chain(c, since, max(0, limit)) for c in chains]
            merged = list(heapq.merge(*tails, key=lambda r: r.time)) if len(tails) > 1 else (tails or [[]])[0]
            yield from merged[-limit:] if limit > 0 else []
        elif len(chains) == 1:
            yield from _stream_chain(chains[0], since)
        else:
            yield from heapq.merge(*(_stream_chain(c, since) for c in chains), key=lambda r: r.time)
    finally:
        for f in files:
            if f.raw is not None:
                f.close()
