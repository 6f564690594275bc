"""The log writer: queues output batches from any thread without blocking, and writes them
to files from one background thread (see the package's docstring for why)."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from typing import Callable, Iterator

from zsup.core.logfiles import batch
from zsup.core.logfiles.reader import _open_all, read_log
from zsup.core.logfiles.rotate import Rotation, _period_end
from zsup.core.logfiles.settings import (
    CHECK_INTERVAL,
    FILE_MODE,
    FLUSH_BYTES,
    FLUSH_INTERVAL,
    MAX_QUEUE_BATCHES,
    MAX_QUEUE_BYTES,
    LogRecord,
    LogSettings,
    _base_path,
    _rotated,
    log,
    log_paths,
)
from zsup.core.logfiles.trouble import DiskTrouble


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


class LogWriter(Rotation, DiskTrouble):
    """Writes the output lines of every job to its log files, in one background thread.

    `write` may be called from any thread and never blocks; `reopen`, `flush`, `stop`,
    `stats`, `paths` and `read` too. `clock` gives the time stamped on each line and drives
    time-based rotation (injectable for tests); retries and flushes use the monotonic clock.
    """

    def __init__(
        self,
        on_error: Callable[[str], None] | None = None,
        on_resumed: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        max_queue_batches: int = MAX_QUEUE_BATCHES,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
    ):
        self._on_error = on_error
        self._on_resumed = on_resumed
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
        self._episodes: dict = {}  # log folder -> trouble._Episode
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
              data: bytes, lines: int | None = None) -> None:
        """Queue whole lines of one stream (`seq` numbers the first). Never blocks, never raises.

        `lines` is their number as OutputStream counts them (newlines, plus one for a last
        piece without one); the IO thread knows it already, so the writer need not count again.
        The time is taken here, when the lines arrive, not when they reach the disk.
        """
        if not settings.log or not data:
            return
        if lines is None:
            lines = batch.count_lines(data)
        item = (job, label, settings, pid, os_pid, seq, data, lines, self._clock())
        with self._qlock:
            if (self._stopped or len(self._queue) >= self._max_batches
                    or self._queued_bytes + len(data) > self._max_bytes):
                self._queue_dropped += lines
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
                        self._lines_dropped += item[7]
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

    def _write_batch(self, job, label, settings, pid, os_pid, seq, data, nlines, t) -> None:
        f = self._route(job, label, settings, pid)
        if f is None:
            self._lines_dropped += nlines
            return
        if f.fd is None:
            if time.monotonic() < f.retry_at or not self._open(f):
                self._lines_dropped += nlines
                return
        if settings.log_format == "text":
            sec, us = divmod(int(t * 1_000_000), 1_000_000)
            if sec != self._ts_sec:  # one strftime per second of output, not per batch
                self._ts_sec = sec
                self._ts_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
            head = b"%s.%06dZ %d:" % (self._ts_text, us, pid)  # `TIME PID:`
            short = head + b" "  # `TIME PID: `, the prefix of every line but the first
            first = head + b"%d " % seq
            nbytes = batch.text_size(data, first, short, nlines)
            self._append(f, batch.text_pieces(data, first, short), nbytes, nlines, t, seq, head, short)
            return
        text = data.decode("utf-8", "replace")
        lines = text.split("\n")
        if not lines[-1]:
            lines.pop()
        head = '{"time": "%s", "pid": %d, "os_pid": %d, "seq": ' % (batch.format_time(t), pid, os_pid)
        tail = ', "label": %s, "line": ' % batch.json_str(label)
        chunk = "".join([
            f"{head}{s}{tail}{batch.json_str(line)}}}\n" for s, line in zip(range(seq, seq + len(lines)), lines)
        ]).encode()
        self._append(f, iter([(chunk, len(lines))]), len(chunk), len(lines), t)

    def _append(self, f: _File, parts: Iterator[tuple[bytes, int]], nbytes: int, nlines: int, t: float,
                seq: int = 0, head: bytes = b"", short: bytes = b"") -> None:
        """Queue a formatted batch (`parts` as `batch.text_pieces` yields them, `nbytes` in all) for
        `f`, rotating first (by time, or by size if it would not fit).

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
        if max_bytes and f.size + f.pending_bytes + nbytes > max_bytes:
            if nbytes > max_bytes and nlines > 1:  # rare: a batch larger than a whole file
                chunk = b"".join([buf for buf, _ in parts])
                self._append_split(f, chunk, nlines, seq, head, short, max_bytes)
                return
            if f.size + f.pending_bytes > 0:
                self._rotate(f, "size")
        self._add(f, parts, nbytes, nlines)

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
            self._add(f, iter([(piece, k)]), len(piece), k)
            nlines -= k
            seq += k
            pos = cut + 1
            if short:
                lead, skip = head + b"%d " % seq, len(short)

    def _add(self, f: _File, parts: Iterator[tuple[bytes, int]], nbytes: int, nlines: int) -> None:
        """Queue `parts` (`nbytes`, `nlines` in all) for `f`; write as soon as FLUSH_BYTES gathered."""
        if f.fd is None:  # a rotation could not reopen the file
            self._lines_dropped += nlines
            return
        pending = f.pending
        for buf, k in parts:
            pending.append(buf)
            f.pending_bytes += len(buf)
            if k:
                f.pending_lines += k
                nlines -= k
                if f.pending_bytes >= FLUSH_BYTES:  # only at a line end
                    self._flush(f)
                    if f.fd is None:  # the write failed: the rest of the batch is lost too
                        self._lines_dropped += nlines
                        return
                    pending = f.pending
        if pending:
            self._dirty.add(f)

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
        parts = f.pending
        nbytes = f.pending_bytes
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
            batch.write_all(f.fd, parts, nbytes)
        except OSError as exc:
            try:  # keep whole lines only: undo what part of this write got in
                if start is not None:
                    os.ftruncate(f.fd, start)
            except OSError:
                pass
            self._close(f)
            self._fail(f, exc, "write", nlines)
            return
        f.size = start + nbytes
        f.last_write = time.monotonic()
        self._lines_written += nlines
        self._bytes_written += nbytes
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

