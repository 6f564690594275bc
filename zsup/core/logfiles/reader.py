"""Reading log files: every file of a log (rotated, gzipped) merged in time order, each line's
seq inferred, from a time on or the last N lines."""

from __future__ import annotations

import calendar
import heapq
import json
import os
import re
from typing import BinaryIO, Iterable, Iterator, Sequence

from zsup.core.logfiles.settings import READ_CHUNK, LogRecord, log


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
            import gzip  # only for a rotated, gzipped file (not at zsupd's start)

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
        except (EOFError, OSError) as exc:  # gzip.BadGzipFile is an OSError
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
