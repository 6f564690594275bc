"""Disk trouble (ENOSPC, EROFS, EACCES, EFBIG, a deleted folder) as an episode, not a flood.

A mixin of `LogWriter`, run on its writer thread only: `on_error` is called once per
directory per episode, lost lines are counted, a failing file is retried at most once per
`RETRY_INTERVAL`, and the end of an episode is logged when a write works again.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from zsup.core.logfiles.settings import RETRY_INTERVAL, log

if TYPE_CHECKING:
    from zsup.core.logfiles.writer import _File


class DiskTrouble:
    """`_fail`, `_recovered` and `_notify` of the writer (uses its counters, `_failing_dirs`
    and `_on_error`)."""

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
