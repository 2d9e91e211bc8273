"""Per-client limits: requests and new sessions per second per client address, as token
buckets; beyond them 429 with Retry-After. Shared by the node and the manager."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .errors import error

__all__ = ["ClientLimits", "RateLimiter", "client_limits"]

MAX_TRACKED_CLIENTS = 10_000  # the least recently seen are forgotten beyond this


@dataclass(frozen=True)
class ClientLimits:
    """Per client address: `requests_per_s` (burst `request_burst`) on every request,
    `sessions_per_s` (burst `session_burst`) on those that start a session; 0 = none."""

    requests_per_s: float = 0.0
    request_burst: int = 1
    sessions_per_s: float = 0.0
    session_burst: int = 1


class RateLimiter:
    """Token buckets by key; `take(key)` returns 0 when allowed, else the seconds until a
    token is there."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, since = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - since) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
        return wait


def client_limits(limits: ClientLimits, starts_session: Callable[[web.Request], bool],
                  on_limited: Callable[[str], None] | None = None):
    """Middleware: 429 + Retry-After for a client address over its limits."""
    requests = RateLimiter(limits.requests_per_s, limits.request_burst)
    sessions = RateLimiter(limits.sessions_per_s, limits.session_burst)

    @web.middleware
    async def middleware(request: web.Request, handler):
        client = request.remote or "unknown"
        for name, limiter, applies in (("requests", requests, True),
                                       ("sessions", sessions, starts_session(request))):
            if not applies:
                continue
            wait = limiter.take(client)
            if wait > 0:
                if on_limited is not None:
                    on_limited(name)
                return error(429, "rate_limited", f"too many {name} from this client",
                             {"Retry-After": str(max(1, math.ceil(wait)))})
        return await handler(request)

    return middleware
