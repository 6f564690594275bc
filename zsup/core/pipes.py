"""The IO loop's work: read every child's output pipes, write their stdin.

One thread serves every child (no thread per process). Reads are large (up to 1 MiB, into
one reused buffer) so that a chatty child costs a few system calls per MiB, not per line;
lines are cut by OutputStream.
Writes to stdin never block: what a child does not read yet waits in a bounded buffer.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from typing import Callable

from zsup.core.loop import Loop
from zsup.core.output import OutputStream
from zsup.core.process import Process
from zsup.errors import Conflict

log = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024
PIPE_DEFAULT = 64 * 1024
PIPE_CHATTY = 1024 * 1024
F_SETPIPE_SZ = 1031
STDIN_BUFFER_LIMIT = 1024 * 1024

# on_lines(process, stream, first_seq, count, payload)
LinesCallback = Callable[[Process, OutputStream, int, int, bytes], None]


class PipeReader:
    def __init__(self, loop: Loop, on_lines: LinesCallback, batch_in: Loop | None = None):
        """`batch_in`: the loop whose thread calls add, drain, write and close_stdin (the
        supervisor's): see `_post`."""
        self.loop = loop
        self.on_lines = on_lines
        self._batch_in = batch_in
        self._pending: list[tuple[Callable, tuple]] = []
        self._owner: dict[int, tuple[Process, OutputStream]] = {}
        self._stdin: dict[int, bytearray] = {}  # stdin fd -> pending bytes
        self._grown: set[int] = set()
        # One read buffer for every pipe (loop thread only): a read costs no allocation;
        # OutputStream copies each byte once, into its batch's payload.
        self._buf = bytearray(READ_SIZE)
        self._bufs = [self._buf]

    # -- called from any thread ---------------------------------------------------------------
    def _post(self, fn: Callable, *args) -> None:
        """Run fn(*args) on the IO loop. Called on the `batch_in` loop's thread, the call
        waits, in order with the others, for the end of that loop's turn, and they all go
        over in one hand-over (a spawn or a stop of hundreds would otherwise wake the IO
        thread once per process)."""
        batch_in = self._batch_in
        if batch_in is None or not batch_in.in_loop():
            self.loop.call_soon(fn, *args)
            return
        if not self._pending:
            batch_in.call_soon(self.flush)
        self._pending.append((fn, args))

    def flush(self) -> None:
        """Hand what `_post` kept to the IO loop (the `batch_in` loop's thread only)."""
        if self._pending:
            calls, self._pending = self._pending, []
            self.loop.call_soon(self._run_all, calls)

    def add(self, proc: Process) -> None:
        self._post(self._add, proc)

    def drain(self, proc: Process, then: Callable[[], None]) -> None:
        """Read what the (now dead) process left in its pipes, then call `then`."""
        self._post(self._drain, proc, then)

    def write(self, proc: Process, data: bytes) -> None:
        pending = sum(len(b) for b in list(self._stdin.values()))
        if pending + len(data) > STDIN_BUFFER_LIMIT:
            raise Conflict(f"stdin of process {proc.pid} is not being read: buffer full")
        self._post(self._write, proc, data)

    def close_stdin(self, proc: Process) -> None:
        self._post(self._close_stdin, proc)

    # -- loop thread only (checked by assert_in_loop) -------------------------------------
    def _run_all(self, calls: list[tuple[Callable, tuple]]) -> None:
        for fn, args in calls:
            try:
                fn(*args)
            except Exception:  # one bad call must not lose the others (as Loop._guard)
                log.exception("IO loop: %r failed", fn)

    def _add(self, proc: Process) -> None:
        self.loop.assert_in_loop()
        for fd, stream in proc.out_fds:
            self._owner[fd] = (proc, stream)
            self.loop.add_reader(fd, self._on_readable)

    def _on_readable(self, fd: int) -> None:
        self._read(fd, once=True)

    def _read(self, fd: int, once: bool) -> None:
        self.loop.assert_in_loop()
        proc, stream = self._owner[fd]
        while True:
            try:
                n = os.readv(fd, self._bufs)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("reading output of process %s: %s", proc.pid, exc)
                n = 0
            if not n:
                self._eof(fd)
                return
            if n >= PIPE_DEFAULT and fd not in self._grown:
                self._grow(fd)
            for first, count, payload in stream.feed_buffer(self._buf, n):
                self.on_lines(proc, stream, first, count, payload)
            if once and n < READ_SIZE:
                return

    def _grow(self, fd: int) -> None:
        """A read that found the pipe full: this child is chatty, so give its pipe 1 MiB.
        Fewer, larger reads cut the per-line cost; quiet children keep the default 64 KiB
        (pipe memory counts against a per-user limit, so not every pipe gets it)."""
        self._grown.add(fd)
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_CHATTY)
        except OSError:
            pass  # over the user's pipe budget or pipe-max-size: the default size works too

    def _eof(self, fd: int) -> None:
        self._grown.discard(fd)
        proc, stream = self._owner.pop(fd)
        self.loop.remove_reader(fd)
        os.close(fd)
        proc.out_fds = [(f, s) for f, s in proc.out_fds if f != fd]
        for first, count, payload in stream.flush():
            self.on_lines(proc, stream, first, count, payload)

    def _drain(self, proc: Process, then: Callable[[], None]) -> None:
        self.loop.assert_in_loop()
        try:
            for fd, _ in list(proc.out_fds):
                if fd in self._owner:
                    self._read(fd, once=False)
        finally:
            then()

    def _write(self, proc: Process, data: bytes) -> None:
        self.loop.assert_in_loop()
        fd = proc.stdin_fd
        if fd < 0:
            return
        buf = self._stdin.setdefault(fd, bytearray())
        buf += data
        self._flush_stdin(fd, proc)

    def _flush_stdin(self, fd: int, proc: Process) -> None:
        buf = self._stdin.get(fd)
        while buf:
            try:
                n = os.write(fd, buf)
            except BlockingIOError:
                self.loop.add_writer(fd, lambda _fd: self._flush_stdin(_fd, proc))
                return
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    log.warning("writing stdin of process %s: %s", proc.pid, exc)
                self._drop_stdin(proc)
                return
            del buf[:n]
        self.loop.remove_writer(fd)
        self._stdin.pop(fd, None)

    def _drop_stdin(self, proc: Process) -> None:
        self.loop.assert_in_loop()
        fd = proc.stdin_fd
        if fd < 0:
            return
        self._stdin.pop(fd, None)
        self.loop.remove_writer(fd)
        os.close(fd)
        proc.stdin_fd = -1

    def _close_stdin(self, proc: Process) -> None:
        self._drop_stdin(proc)
