"""Output kept on disk: one log file per job and output label, written off the supervision path.

The package, by job: `settings` (LogSettings, LogRecord, where a log's files are), `writer`
(the queue and the writer thread), `rotate` (rotation, gzip in its own thread, housekeeping),
`trouble` (disk trouble as an episode), `reader` (read_log). Import the names from here.

Why it is built this way:

- The IO thread that reads the children's pipes must never wait for a disk. `LogWriter.write`
  only appends a tuple to a bounded in-memory queue (no splitting, no formatting, no system
  call); one background thread does everything else. When the queue is full the batch is
  dropped and counted: losing log lines is better than stalling every child of the daemon.
- The writer thread keeps files open, gathers the formatted lines in memory and writes them
  with one `os.writev` per file at least every 100 ms (or when the queue runs dry, or when a
  file has 1 MB pending), the pieces as they are, never joined.
- The text format costs no Python work per line: a batch (the lines of one `write`, which
  arrived in one read, hence one time stamp) is formatted with C-level `bytes.replace`, one
  per 16 KiB piece, that puts a prefix after each newline, about 10-40 ns a short line. Only
  the first line of a batch carries its sequence number; the others' is implicit (the
  previous one's + 1). A piece holds the GIL for about 0.1 ms, and the pieces of a 1 MiB
  batch are written as they are made, so the writer's memory stays small and warm (a fresh
  5.5 MB string per batch cost more in page faults than the formatting itself).
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
  retried at most once a second and the episode ends by itself (logged, `on_resumed` called)
  once writes have worked for a few seconds in a row (a nearly full disk stays one episode).
  A deleted log folder is noticed within a second and created again.
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

from zsup.core.logfiles.reader import read_log
from zsup.core.logfiles.settings import LOG_FORMATS, LOG_ROTATIONS, LogRecord, LogSettings, log_paths
from zsup.core.logfiles.writer import LogWriter

__all__ = [
    "LogSettings",
    "LogWriter",
    "LogRecord",
    "log_paths",
    "read_log",
    "LOG_FORMATS",
    "LOG_ROTATIONS",
]
