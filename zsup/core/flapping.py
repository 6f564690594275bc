"""Flapping: a job whose processes die too often is paused, retried, and finally given up.

gaffer's rule "attempts, window, retry_in, max_retry": more than `attempts` restarts within
`window` seconds stops the job; it is started again after `retry_in` seconds, at most
`max_retry` times (-1: forever), and then left stopped.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

from zsup.errors import BadRequest


@dataclass(frozen=True)
class FlappingRule:
    attempts: int = 2
    window: float = 1.0
    retry_in: float = 7.0
    max_retry: int = 5

    @classmethod
    def parse(cls, value) -> "FlappingRule | None":
        """Accept None/"" (no rule), a dict, a list, or gaffer's "2, 1., 7., 5" string."""
        if value is None or value == "" or value is False:
            return None
        if isinstance(value, FlappingRule):
            return value
        try:
            if isinstance(value, dict):
                unknown = set(value) - {"attempts", "window", "retry_in", "max_retry"}
                if unknown:
                    raise ValueError(f"unknown keys {sorted(unknown)}")
                rule = cls(**value)
            else:
                if isinstance(value, str):
                    parts = [p.strip() for p in value.split(",")]
                elif isinstance(value, (list, tuple)):
                    parts = list(value)
                else:
                    raise ValueError("expected 'attempts, window, retry_in, max_retry'")
                if len(parts) != 4:
                    raise ValueError("expected 4 values: attempts, window, retry_in, max_retry")
                rule = cls(int(parts[0]), float(parts[1]), float(parts[2]), int(float(parts[3])))
            rule = cls(int(rule.attempts), float(rule.window), float(rule.retry_in), int(rule.max_retry))
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"flapping: {exc}") from None
        if rule.attempts < 1 or rule.window <= 0 or rule.retry_in < 0 or rule.max_retry < -1:
            raise BadRequest("flapping: attempts >= 1, window > 0, retry_in >= 0, max_retry >= -1")
        return rule

    def to_dict(self) -> dict:
        return asdict(self)


class FlappingState:
    """Per-job memory of recent restarts and of how many retries were used."""

    def __init__(self, rule: FlappingRule):
        self.rule = rule
        self.restarts: deque[float] = deque()
        self.retries = 0

    def record_restart(self, now: float | None = None) -> bool:
        """Count one restart; True when the rule trips (too many in the window)."""
        now = time.monotonic() if now is None else now
        self.restarts.append(now)
        while self.restarts and now - self.restarts[0] > self.rule.window:
            self.restarts.popleft()
        return len(self.restarts) > self.rule.attempts

    def next_retry(self) -> bool:
        """Use up one retry; False when none is left (give up)."""
        self.restarts.clear()
        if self.rule.max_retry != -1 and self.retries >= self.rule.max_retry:
            return False
        self.retries += 1
        return True
