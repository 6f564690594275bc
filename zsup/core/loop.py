"""A minimal event loop: one thread, one selector, a timer heap, thread-safe calls.

zsupd runs two of these: the supervisor loop (pidfds and timers) and the IO loop (child
pipes). asyncio would do, but its loop and futures cost more per event than this, and the
rest of zsup is plain threads talking through these two entry points:
`call_soon` (from any thread) and `call_and_wait` (from any thread but the loop's own).

Thread rule: what a loop owns (its selector, its timers, and the state its callbacks keep,
such as the Manager's jobs or the PipeReader's fds) is touched only in the loop's thread.
`assert_in_loop()` checks that at the entry of such code; before `start` and after `stop`
there is no loop thread, and the one thread driving the object owns it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import threading
import time
from collections import deque
from typing import Any, Callable

log = logging.getLogger(__name__)

_loop_idents: set[int] = set()  # threads that are running a Loop now


def in_a_loop_thread() -> bool:
    """True in the thread of any running Loop (supervisor or IO): code that may block (SQLite,
    the network) checks this and refuses, since it would stall supervision or output."""
    return threading.get_ident() in _loop_idents


class TimerHandle:
    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable, args: tuple):
        self.when, self.fn, self.args, self.cancelled = when, fn, args, False

    def cancel(self) -> None:
        self.cancelled = True


class WrongThread(RuntimeError):
    """Code that only a loop's thread may run was called from another thread: a bug."""


class Loop:
    def __init__(self, name: str):
        self.name = name
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque = deque()
        self._timers: list = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._ident: int | None = None  # the loop thread's ident while it runs
        self._running = False
        self._woken = False

    # -- threads ------------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ident = self._thread.ident

    def stop(self, timeout: float = 5.0) -> None:
        if not self._running:
            return
        self._running = False
        self._wake()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._ident = None  # no loop thread any more: whoever drives the object owns it
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def in_loop(self) -> bool:
        return self._thread is threading.current_thread()

    def assert_in_loop(self) -> None:
        """Raise WrongThread unless called in this loop's thread (or the loop is not running,
        when the caller's thread is the only one). One ident compare: cheap enough for the
        entry of every state-changing method."""
        ident = self._ident
        if ident is not None and threading.get_ident() != ident:
            raise WrongThread(f"{self.name}: called from thread {threading.current_thread().name!r},"
                              f" not the loop's")

    # -- scheduling ---------------------------------------------------------------------
    def call_soon(self, fn: Callable, *args: Any) -> None:
        """Run fn(*args) in the loop's thread; safe from any thread."""
        self._calls.append((fn, args))
        if not self._woken and not self.in_loop():
            # one wake-up per turn of the loop, not one per call (a stop of hundreds of
            # processes hands hundreds of calls over between the two loops)
            self._woken = True
            self._wake()

    def call_later(self, delay: float, fn: Callable, *args: Any) -> TimerHandle:
        handle = TimerHandle(time.monotonic() + max(0.0, delay), fn, args)
        if self.in_loop():
            heapq.heappush(self._timers, (handle.when, next(self._seq), handle))
        else:
            self.call_soon(lambda: heapq.heappush(self._timers, (handle.when, next(self._seq), handle)))
        return handle

    def call_and_wait(self, fn: Callable, *args: Any, timeout: float | None = None) -> Any:
        """Run fn in the loop thread and return its result (or raise its exception)."""
        if self.in_loop() or not self._running:
            return fn(*args)
        done = threading.Event()
        box: list = [None, None]

        def call():
            try:
                box[0] = fn(*args)
            except BaseException as exc:  # handed back to the caller's thread
                box[1] = exc
            finally:
                done.set()

        self.call_soon(call)
        if not done.wait(timeout):
            raise TimeoutError(f"{self.name} loop did not answer in {timeout} s")
        if box[1] is not None:
            raise box[1]
        return box[0]

    # -- file descriptors (loop thread only) -------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[int], None]) -> None:
        self._set(fd, selectors.EVENT_READ, callback, None)

    def add_writer(self, fd: int, callback: Callable[[int], None]) -> None:
        self._set(fd, selectors.EVENT_WRITE, None, callback)

    def remove_reader(self, fd: int) -> None:
        self._unset(fd, selectors.EVENT_READ)

    def remove_writer(self, fd: int) -> None:
        self._unset(fd, selectors.EVENT_WRITE)

    def _set(self, fd, event, reader, writer):
        try:
            key = self._sel.get_key(fd)
        except KeyError:
            self._sel.register(fd, event, (reader, writer))
            return
        r, w = key.data
        data = (reader or r, writer or w)
        self._sel.modify(fd, key.events | event, data)

    def _unset(self, fd, event):
        try:
            key = self._sel.get_key(fd)
        except (KeyError, ValueError):
            return
        events = key.events & ~event
        if not events:
            self._sel.unregister(fd)
            return
        r, w = key.data
        data = (None, w) if event == selectors.EVENT_READ else (r, None)
        self._sel.modify(fd, events, data)

    # -- the loop -----------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full or closed: the loop is awake or gone anyway

    def _run(self) -> None:
        _loop_idents.add(threading.get_ident())
        try:
            self._serve()
        finally:
            _loop_idents.discard(threading.get_ident())

    def _serve(self) -> None:
        while self._running:
            timeout = None
            if self._calls:
                timeout = 0
            elif self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                events = self._sel.select(timeout)
            except OSError:
                events = []
            for key, mask in events:
                if key.data is None:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    self._woken = False  # calls queued from now on wake us again
                    continue
                reader, writer = key.data
                for cb, bit in ((reader, selectors.EVENT_READ), (writer, selectors.EVENT_WRITE)):
                    if cb is not None and mask & bit:
                        self._guard(cb, key.fd)
            while self._calls:
                fn, args = self._calls.popleft()
                self._guard(fn, *args)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, handle = heapq.heappop(self._timers)
                if not handle.cancelled:
                    self._guard(handle.fn, *handle.args)

    def _guard(self, fn, *args) -> None:
        # One bad callback must never take the loop (and every process it watches) down.
        try:
            fn(*args)
        except Exception:
            log.exception("%s loop: callback %r failed", self.name, fn)
