"""When a session's event stream is lost, whether to attach to it again or give the
media session up.

Media never crosses a proxy (the stream manager): when the stream manager between a
client and its node restarts or dies, the node and the media session are fine and only
the signaling path broke. A client that came through a proxy (the answer to its offer had
a ``Via`` header) then re-attaches its event stream — through the same proxy, or another
replica of it — instead of opening a new media session, as long as its media still
proves the session alive. A client that talks to its node directly has no such doubt: a
lost event stream there is a node that ended the session or died.

``ReattachPolicy`` is pure: it maps what the last try got to the wait before the next
try, or to ``None`` (the session is gone: fault).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RETRY_STATUSES", "ReattachPolicy"]

# answers through a proxy that say "not now", never "no such session": the manager
# restarting (it does not know the node yet: 503), busy (429), its own drain (503)
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class ReattachPolicy:
    """``waits_ms``: the wait before each try (the last one repeats); ``max_ms``: how long
    a session may live without its event stream (0 = never re-attach)."""

    waits_ms: tuple[int, ...] = (0, 50, 100, 200, 250)
    max_ms: int = 10_000

    def next_wait(self, status: int | None, tries: int, elapsed_s: float,
                  media_alive: bool) -> float | None:
        """Seconds to wait before try number ``tries`` (0 = the first re-attach), or None.

        ``status``: the HTTP status of the last try (None: the stream just ended, or the
        proxy could not be reached); ``elapsed_s``: since the stream was lost;
        ``media_alive``: the session's media still proves it alive."""
        if self.max_ms <= 0 or not media_alive:
            return None
        if status is not None and status not in RETRY_STATUSES:
            return None  # 404/410: the session is gone; 401/403: not ours; 502/504: node failing
        if elapsed_s >= self.max_ms / 1000:
            return None
        wait_ms = self.waits_ms[min(tries, len(self.waits_ms) - 1)] if self.waits_ms else 0
        return min(wait_ms / 1000, max(0.0, self.max_ms / 1000 - elapsed_s))
