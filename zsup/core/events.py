"""In-process publish/subscribe with gaffer's pattern rules.

Subscribing to `a` gets `a` and `a.b.c`; `.` (or "") gets everything; a pattern that ends
with `.` is a plain prefix. Callbacks run in the publishing thread and must be quick: the
bus's callback only hands the event to the publisher thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from zsup.bus.topics import topic_matches

log = logging.getLogger(__name__)

__all__ = ["EventEmitter", "Listener", "topic_matches"]

Listener = Callable[[str, dict, "bytes | None"], None]


class EventEmitter:
    def __init__(self):
        self._lock = threading.Lock()
        # Copy-on-write tuple: publishing never takes the lock.
        self._listeners: tuple = ()

    def subscribe(self, pattern: str, listener: Listener) -> None:
        with self._lock:
            self._listeners = self._listeners + ((pattern, listener),)

    def unsubscribe(self, pattern: str, listener: Listener) -> None:
        with self._lock:
            items = list(self._listeners)
            if (pattern, listener) in items:
                items.remove((pattern, listener))
            self._listeners = tuple(items)

    def publish(self, topic: str, msg: dict, data: bytes | None = None) -> None:
        for pattern, listener in self._listeners:
            if topic_matches(pattern, topic):
                try:
                    listener(topic, msg, data)
                except Exception:
                    log.exception("event listener %r failed on %s", listener, topic)
