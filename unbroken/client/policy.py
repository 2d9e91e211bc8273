"""Where and when the next try goes: the restore policy, a small replaceable object.

The restore loop asks its policy before every try; the policy answers with a wait and a URL
from the client's list, or ``None`` to give up. LiveKit's ``ReconnectPolicy`` is the model:
one method, the whole context as its argument, nothing else to know about the client.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from unbroken.protocol.faults import TRY_ELSEWHERE

from .options import RestoreOptions

__all__ = ["DefaultRestorePolicy", "NextTry", "RestoreContext", "RestorePolicy"]


@dataclass(frozen=True)
class RestoreContext:
    """What a policy decides from: the fault being restored (``None`` while starting),
    how many tries failed since, the URL list, the URL of the session that failed, and
    where the fault says the stream is now (``prefer_url``, e.g. a publisher that moved)."""

    fault: str | None
    tries: int
    urls: Sequence[str]
    last_url: str | None = None
    prefer_url: str | None = None


@dataclass(frozen=True)
class NextTry:
    """One try to make: wait ``delay`` seconds, then connect to ``url``. ``round`` counts
    the passes over the URL list so far, this one included (a restore report's ``tries``)."""

    delay: float
    url: str
    round: int


class RestorePolicy(Protocol):
    """Decides the next try after a fault (or while starting): ``None`` = give up."""

    def next_try(self, context: RestoreContext) -> NextTry | None: ...


class DefaultRestorePolicy:
    """Seed 004's restore with the knobs of ``RestoreOptions``: passes over the URL list
    (no wait between the URLs of one pass), the first pass at once and the next ones after
    ``backoff_ms`` (then ``timeout_ms``) with ``jitter``, ``max_tries`` passes. The first
    URL: ``prefer_url`` when listed; after a TRY_ELSEWHERE fault the URL after the failed
    one; otherwise the failed one again (a dead node refuses at once, a live one keeps a
    republishing publisher's viewers on their sessions); the first URL when starting.
    ``rng`` draws the jitter (seed it for a repeatable policy)."""

    def __init__(self, options: RestoreOptions | None = None,
                 rng: random.Random | None = None) -> None:
        self.options = options or RestoreOptions()
        self.rng = rng or random.Random()

    def next_try(self, context: RestoreContext) -> NextTry | None:
        n = len(context.urls)
        if n == 0 or context.tries >= self.options.max_tries * n:
            return None
        index = (self.first_index(context) + context.tries) % n
        round_index, position = divmod(context.tries, n)
        delay = self.wait(round_index) if position == 0 else 0.0
        return NextTry(delay, context.urls[index], round_index + 1)

    @staticmethod
    def first_index(context: RestoreContext) -> int:
        """Index of the URL a restore (or the start) begins with."""
        urls = list(context.urls)
        if context.prefer_url in urls:
            return urls.index(context.prefer_url)
        if context.last_url not in urls:
            return 0
        failed = urls.index(context.last_url)
        if context.fault in TRY_ELSEWHERE:
            return (failed + 1) % len(urls)
        return failed

    def wait(self, round_index: int) -> float:
        """Seconds before pass ``round_index`` (0-based) over the URL list."""
        o = self.options
        base = o.backoff_ms[round_index] if round_index < len(o.backoff_ms) else o.timeout_ms
        base = min(base, o.timeout_ms)
        if base and o.jitter:
            base *= 1 + self.rng.uniform(-o.jitter, o.jitter)
        return base / 1000
