"""Exponential back-off with full jitter, in one place for every reconnect."""

from __future__ import annotations

import random
import threading


class Backoff:
    def __init__(self, initial: float, maximum: float, *, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.failures))
        self.failures += 1
        # full jitter, but never less than half the ceiling: reconnects stay spread and bounded
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def wait(self, stop: threading.Event) -> bool:
        """Sleep for the next delay; True when asked to stop meanwhile."""
        return stop.wait(self.next_delay())
