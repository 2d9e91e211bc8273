"""The mapping of a source track's RTP timestamps onto the output MPEG-TS timeline."""

from __future__ import annotations

from .settings import TS_CLOCK

__all__ = ["RtpClock"]


class RtpClock:
    """Maps one source track's RTP timestamps onto the output 90 kHz timeline."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self._anchor_out: int | None = None
        self._last_ts = 0
        self._ext = 0  # unwrapped RTP ticks since the anchor

    @property
    def anchored(self) -> bool:
        return self._anchor_out is not None

    def anchor(self, ts: int, out: int) -> None:
        self._anchor_out = out
        self._last_ts = ts
        self._ext = 0

    def map(self, ts: int) -> int:
        delta = (ts - self._last_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 1 << 32
        self._ext += delta
        self._last_ts = ts
        return self._anchor_out + self._ext * TS_CLOCK // self.clock_rate
