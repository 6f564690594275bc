"""Rotation of log files (by size or local time), gzip of rotated files in their own thread,
and the writer's housekeeping (files moved or folders deleted behind its back, idle files)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
from typing import TYPE_CHECKING

from zsup.core.logfiles.settings import IDLE_CLOSE, READ_CHUNK, RETRY_INTERVAL, _rotated, log

if TYPE_CHECKING:
    from zsup.core.logfiles.writer import _File


def _period_end(t: float, mode: str) -> float:
    """When the local hour or day that holds `t` ends (operators expect "daily" at local midnight)."""
    lt = time.localtime(t)
    if mode == "hourly":
        start = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, lt.tm_hour, 0, 0, 0, 0, -1))
        return start + 3600
    return time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday + 1, 0, 0, 0, 0, 0, -1))


class Rotation:
    """The rotation and compression half of `LogWriter` (a mixin: it uses the writer's files,
    `_fs_lock` and compression queue). `_housekeeping` and `_rotate` run on the writer thread,
    `_compress_loop` on the compressor thread; renames are made under `_fs_lock`, which
    readers take too, so they never see a file twice nor a gap."""

    def _housekeeping(self, now: float) -> None:
        """Once a second: notice files moved or folders deleted behind our back; close idle
        files; end the disk-trouble episodes that are over."""
        self._end_episodes(now)
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
                for index, _path in reversed(_rotated(base)):
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
                import gzip  # at the first rotation, not at zsupd's start

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
