"""Disk trouble (ENOSPC, EROFS, EACCES, EFBIG, a deleted folder) as an episode, not a flood.

A mixin of `LogWriter`, run on its writer thread only. An episode is per log folder: it starts
with the first failure there (one error line, `on_error` called once), lost lines are counted,
a failing file is retried at most once per `RETRY_INTERVAL`, and it ends only when every file
of that folder has been written without a failure for `RESUME_AFTER` seconds (one info line,
`on_resumed` called once). The quiet spell matters: a disk that is nearly full lets a small
write through now and then, and without it every such write would end an episode and the next
failure start a new one, two lines a second for as long as the disk stays full.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from zsup.core.logfiles.settings import RETRY_INTERVAL, log

if TYPE_CHECKING:
    from zsup.core.logfiles.writer import _File

RESUME_AFTER = 5.0  # seconds of failure-free writing that end an episode


class _Episode:
    __slots__ = ("started", "dropped_before", "failing", "ok_since")

    def __init__(self, started: float, dropped_before: int):
        self.started = started
        self.dropped_before = dropped_before
        self.failing: set[str] = set()  # paths failing now
        self.ok_since: float | None = None  # when the last failing file was written again


class DiskTrouble:
    """`_fail`, `_recovered`, `_end_episodes` and `_notify` of the writer (uses its counters,
    `_episodes`, `_on_error` and `_on_resumed`)."""

    def _fail(self, f: _File, exc: OSError, what: str, lost: int = 0) -> None:
        self._write_errors += 1
        self._lines_dropped += lost
        f.retry_at = time.monotonic() + RETRY_INTERVAL
        f.failing = True
        folder = os.path.dirname(f.path)
        episode = self._episodes.get(folder)
        if episode is None:
            episode = self._episodes[folder] = _Episode(time.monotonic(), self._lines_dropped - lost)
            reason = exc.strerror or str(exc)
            self._notify(f"log file {f.path}: {what} failed: {reason}; output to {folder or '.'} is "
                         f"dropped (and counted) until writing works again")
        episode.failing.add(f.path)
        episode.ok_since = None

    def _recovered(self, f: _File) -> None:
        f.failing = False
        episode = self._episodes.get(os.path.dirname(f.path))
        if episode is not None:
            episode.failing.discard(f.path)
            if not episode.failing:
                episode.ok_since = time.monotonic()

    def _end_episodes(self, now: float) -> None:
        """Called once a second: end the episodes whose folder has written fine for a while."""
        for folder, episode in list(self._episodes.items()):
            if episode.ok_since is None or now - episode.ok_since < RESUME_AFTER:
                continue
            del self._episodes[folder]
            dropped = self._lines_dropped - episode.dropped_before
            message = (f"log files in {folder or '.'} are written again after {now - episode.started:.0f} s; "
                       f"{dropped} lines dropped meanwhile")
            log.info("log files: %s", message)
            if self._on_resumed is not None:
                try:
                    self._on_resumed(message)
                except Exception:
                    log.exception("log writer: on_resumed callback failed")

    def _notify(self, message: str) -> None:
        log.error("log files: %s", message)
        if self._on_error is not None:
            try:
                self._on_error(message)
            except Exception:
                log.exception("log writer: on_error callback failed")
