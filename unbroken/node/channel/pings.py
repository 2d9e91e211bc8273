"""The node's pings on a session channel, and the client's pongs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from unbroken.protocol import session as proto


class Pinger:
    """Owns a session's ping schedule: sends ``ping`` every interval, matches pongs
    (round-trip time), and closes the session after ``missing`` unanswered pings."""

    def __init__(self, interval_ms: int, missing: int, send: Callable[[dict], None],
                 close: Callable[[str, str], None]) -> None:
        self.interval_ms, self.missing = interval_ms, missing
        self.seq = 0  # last ping sent
        self.acked = 0  # highest pong received
        self.sent_at: dict[int, float] = {}
        self.rtt: float | None = None
        self._send, self._close = send, close

    async def run(self, going: Callable[[], bool]) -> None:
        """Ping while `going()`; on a fixed schedule (a slow loop does not stretch it)."""
        loop = asyncio.get_running_loop()
        interval = self.interval_ms / 1000
        start = loop.time()
        while going():
            if self.seq - self.acked >= self.missing:
                self._close(proto.PING_TIMEOUT, f"{self.missing} pings without a pong")
                return
            self.seq += 1
            self.sent_at[self.seq] = time.monotonic()
            self.sent_at.pop(self.seq - self.missing - 2, None)
            self._send(proto.ping(self.seq, int(time.time() * 1000)))
            await asyncio.sleep(max(0.0, start + self.seq * interval - loop.time()))

    def pong(self, seq: int) -> None:
        if seq > self.seq or seq < 1:
            self._send(proto.error(proto.BAD_PONG, f"no ping with seq {seq} was sent", "pong"))
            return
        if seq > self.acked:
            self.acked = seq
            sent = self.sent_at.get(seq)
            if sent is not None:
                self.rtt = time.monotonic() - sent
