"""A token bucket: `rate` events a second on average, bursts of up to `burst`.

The one rate limiter of the web tier (the room socket's inbound messages). It has no Django
imports, so that the embedded media server (mediaserver/, which imports nothing of the web
tier's Django code) uses this same class for its own sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst = rate, float(burst)
        self.clock = clock
        self.tokens, self.stamp = float(burst), clock()

    def take(self) -> bool:
        """Take one token; False (and nothing taken) when the bucket is empty."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
