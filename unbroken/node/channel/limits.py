"""What one session-channel session may hold and send."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from unbroken.protocol import session as proto


@dataclass
class Limits:
    """What one session may hold and send (sent to the client in ``welcome``)."""

    max_streams: int = proto.MAX_STREAMS
    max_message_bytes: int = proto.MAX_MESSAGE_BYTES
    messages_per_second: float = proto.MESSAGES_PER_SECOND
    message_burst: int = proto.MESSAGE_BURST
    hello_timeout: float = proto.HELLO_TIMEOUT
    # a session whose socket broke keeps its streams this long for a resume (0 = never)
    resume_ms: int = proto.RESUME_MS

    def public(self) -> dict:
        return {"max_streams": self.max_streams, "resume_ms": self.resume_ms,
                "max_message_bytes": self.max_message_bytes,
                "messages_per_second": self.messages_per_second,
                "message_burst": self.message_burst}


class RateLimit:
    """Owns a session's token bucket: drops messages beyond the rate with an error (at
    most one a second), and closes a session that keeps sending beyond it."""

    def __init__(self, limits: Limits, send: Callable[[dict], None],
                 close: Callable[[str, str], None]) -> None:
        self.rate, self.burst = limits.messages_per_second, limits.message_burst
        self.tokens = float(self.burst)
        self.at = time.monotonic()
        self.dropped_in_a_row = 0
        self.last_error = 0.0
        self._send, self._close = send, close

    def _take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def admit(self) -> bool:
        """False (and maybe an error or a close) when the message is dropped."""
        if self._take():
            self.dropped_in_a_row = 0
            return True
        self.dropped_in_a_row += 1
        if self.dropped_in_a_row > self.burst:
            self._close(proto.RATE_LIMITED, f"more than {self.rate:g} messages per second")
            return False
        now = time.monotonic()
        if now - self.last_error >= 1.0:
            self.last_error = now
            self._send(proto.error(
                proto.RATE_LIMITED,
                f"more than {self.rate:g} messages per second: messages are dropped"))
        return False
