"""When to try again: immediately first, then a capped backoff with jitter."""

from __future__ import annotations

import random

from .options import RestoreOptions


class RetrySchedule:
    def __init__(self, options: RestoreOptions, rng: random.Random | None = None) -> None:
        self.options = options
        self.tries = 0
        self._rng = rng or random.Random()

    @property
    def exhausted(self) -> bool:
        return self.tries >= self.options.max_tries

    def next_delay(self) -> float:
        """Seconds to wait before the next try (counts the try)."""
        o = self.options
        index = self.tries
        self.tries += 1
        base = o.backoff_ms[index] if index < len(o.backoff_ms) else o.timeout_ms
        base = min(base, o.timeout_ms)
        if base and o.jitter:
            base *= 1 + self._rng.uniform(-o.jitter, o.jitter)
        return base / 1000

