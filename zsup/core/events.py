"""In-process publish/subscribe with gaffer's pattern rules.

Subscribing to `a` gets `a` and `a.b.c`; `.` (or "") gets everything; a pattern that ends
with `.` is a plain prefix. Callbacks run in the publishing thread and must be quick: the
bus's callback only hands the event to the publisher thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator

from zsup.bus.topics import topic_matches

log = logging.getLogger(__name__)

__all__ = ["EventEmitter", "Listener", "topic_matches"]

Listener = Callable[[str, dict, "bytes | None"], None]


class EventEmitter:
    def __init__(self):
        self._lock = threading.Lock()
        # Copy-on-write tuple of (pattern, listener, deferred): publishing never takes the lock.
        self._listeners: tuple = ()
        self._held_by: int | None = None  # the thread whose events wait in _held
        self._held: list[tuple] = []  # (listener, topic, msg, data)

    def subscribe(self, pattern: str, listener: Listener, deferred: bool = False) -> None:
        """Call `listener(topic, msg, data)` for each event whose topic matches `pattern`.

        `deferred`: the listener hands events to another thread (the bus's publisher, the
        webhooks' sender) or to a file (the orphan guard's list), so waking it once per burst
        is enough: inside `held()` it gets the block's events at its end. Every other
        listener gets each event at once, in the publishing thread, held or not (an
        in-process listener hears an exit before the restart that follows it)."""
        with self._lock:
            self._listeners = self._listeners + ((pattern, listener, deferred),)

    def unsubscribe(self, pattern: str, listener: Listener) -> None:
        with self._lock:
            items = list(self._listeners)
            for item in items:
                if item[:2] == (pattern, listener):
                    items.remove(item)
                    break
            self._listeners = tuple(items)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Events the calling thread publishes inside reach the deferred listeners together,
        in order, at the end (other threads' events, and the other listeners, go at once). A
        spawn of hundreds, or the exits and restarts of a stop, then hand their events to the
        bus's publisher thread in one burst, instead of waking it once per event. A nested
        block is part of the outer one."""
        if self._held_by is not None:  # nested or another thread holds: publish as usual
            yield
            return
        self._held_by = threading.get_ident()
        try:
            yield
        finally:
            self._held_by = None
            held, self._held = self._held, []
            for listener, topic, msg, data in held:
                self._call(listener, topic, msg, data)

    def publish(self, topic: str, msg: dict, data: bytes | None = None) -> None:
        hold = self._held_by is not None and self._held_by == threading.get_ident()
        for pattern, listener, deferred in self._listeners:
            if topic_matches(pattern, topic):
                if deferred and hold:
                    self._held.append((listener, topic, msg, data))
                else:
                    self._call(listener, topic, msg, data)

    @staticmethod
    def _call(listener: Listener, topic: str, msg: dict, data: bytes | None) -> None:
        try:
            listener(topic, msg, data)
        except Exception:
            log.exception("event listener %r failed on %s", listener, topic)
