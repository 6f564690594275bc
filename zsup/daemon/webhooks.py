"""Webhooks: POST an event's JSON to a URL, never holding up supervision.

Events are matched in the publishing thread (a cheap prefix test) and put on a bounded queue;
one worker thread posts them with a timeout. A dead or slow receiver fills the queue, after
which events for it are dropped and counted: supervision never waits for a webhook.
"""

from __future__ import annotations

import json
import logging
import queue
import threading

from zsup.bus.topics import JOB_EVENTS, PROC_EVENTS, topic_matches

log = logging.getLogger(__name__)


def webhook_pattern(key: str) -> str:
    """gaffer's webhook keys as topic patterns: `create` is a job event of any job,
    `spawn` a process event of any job, `proc.dummy.spawn` is `proc.default.dummy.spawn`."""
    parts = key.split(".")
    if len(parts) == 1 and key in JOB_EVENTS:
        return f"job.*.*.{key}"
    if len(parts) == 1 and key in PROC_EVENTS:
        return f"proc.*.*.{key}"
    if parts[0] in ("proc", "job", "stats") and len(parts) == 3 and parts[2] in JOB_EVENTS | PROC_EVENTS:
        return f"{parts[0]}.default.{parts[1]}.{parts[2]}"
    return key


def pattern_matches(pattern: str, topic: str) -> bool:
    if "*" not in pattern:
        return topic_matches(pattern, topic)
    want, have = pattern.split("."), topic.split(".")
    return len(have) >= len(want) and all(w in ("*", h) for w, h in zip(want, have))


class Webhooks:
    def __init__(self, hooks: list[tuple[str, str]], timeout: float = 5.0, queue_size: int = 1000):
        self.hooks = [(webhook_pattern(k), url) for k, url in hooks]
        self.timeout = timeout
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.hooks:
            self._thread = threading.Thread(target=self._run, name="zsup-webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(self.timeout + 1)
            self._thread = None

    def __call__(self, topic: str, msg: dict, data: bytes | None) -> None:
        """Event listener: queue a POST for every matching hook."""
        if data is not None or self._thread is None:
            return  # output lines are not webhook material
        for pattern, url in self.hooks:
            if pattern_matches(pattern, topic):
                try:
                    self._queue.put_nowait((url, topic, msg))
                except queue.Full:
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 1000 == 0:
                        log.warning("webhook queue full: %d events dropped so far", self.dropped)

    def _run(self) -> None:
        import urllib.request  # only in the webhook thread: zsupd without hooks never loads it

        while True:
            item = self._queue.get()
            if item is None:
                return
            url, topic, msg = item
            body = json.dumps({"topic": topic, **msg}).encode()
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "zsupd"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
                self.sent += 1
            except Exception as exc:  # any failure of a receiver is its own business
                self.failed += 1
                log.warning("webhook %s for %s failed: %s", url, topic, exc)
