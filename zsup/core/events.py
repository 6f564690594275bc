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
        # Copy-on-write tuple: publishing never takes the lock.
        self._listeners: tuple = ()
        self._held_by: int | None = None  # the thread whose events wait in _held
        self._held: list[tuple] = []

    def subscribe(self, pattern: str, listener: Listener) -> None:
        with self._lock:
            self._listeners = self._listeners + ((pattern, listener),)

    def unsubscribe(self, pattern: str, listener: Listener) -> None:
        with self._lock:
            items = list(self._listeners)
            if (pattern, listener) in items:
                items.remove((pattern, listener))
            self._listeners = tuple(items)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Events the calling thread publishes inside go out together, in order, at the end
        (other threads' events go out at once). A spawn of hundreds then hands its `spawn`
        events to the listeners (the bus's publisher thread, the orphan guard) in one burst
        per slice, instead of waking those threads once per process. Not nested."""
        if self._held_by is not None:  # nested or another thread holds: publish as usual
            yield
            return
        self._held_by = threading.get_ident()
        try:
            yield
        finally:
            self._held_by = None
            held, self._held = self._held, []
            for event in held:
                self.publish(*event)

    def publish(self, topic: str, msg: dict, data: bytes | None = None) -> None:
        if self._held_by is not None and self._held_by == threading.get_ident():
            self._held.append((topic, msg, data))
            return
        for pattern, listener in self._listeners:
            if topic_matches(pattern, topic):
                try:
                    listener(topic, msg, data)
                except Exception:
                    log.exception("event listener %r failed on %s", listener, topic)
