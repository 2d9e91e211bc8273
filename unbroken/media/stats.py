"""Cheap rolling counters: packets, bytes, frames, loss, and per-second rates."""

from __future__ import annotations

import time

from .munger import seq_delta

__all__ = ["IngestStats", "RateWindow"]


class RateWindow:
    """Counts events and sizes over the last completed one-second window."""

    __slots__ = ("_window_start", "_count", "_size", "count_rate", "size_rate")

    def __init__(self) -> None:
        self._window_start = time.monotonic()
        self._count = 0
        self._size = 0
        self.count_rate = 0.0
        self.size_rate = 0.0

    def add(self, size: int, now: float) -> None:
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._roll(now, elapsed)
        self._count += 1
        self._size += size

    def _roll(self, now: float, elapsed: float) -> None:
        # a window that ended long ago means nothing arrived since: rates are 0
        if elapsed >= 2.0:
            self.count_rate = self.size_rate = 0.0
        else:
            self.count_rate = self._count / elapsed
            self.size_rate = self._size / elapsed
        self._window_start = now
        self._count = 0
        self._size = 0

    def rates(self, now: float) -> tuple[float, float]:
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._roll(now, elapsed)
        return self.count_rate, self.size_rate


class IngestStats:
    """What one ingested track has received: packets, bytes, frames, losses, rates."""

    __slots__ = ("packets", "bytes", "frames", "lost", "_highest_seq", "_ssrc",
                 "_packet_rate", "_frame_rate")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.frames = 0
        self.lost = 0
        self._highest_seq: int | None = None
        self._ssrc: int | None = None
        self._packet_rate = RateWindow()
        self._frame_rate = RateWindow()

    def add(self, ssrc: int, seq: int, size: int, marker: bool, now: float) -> int:
        """Count a packet; returns how many packets are missing right before it (0 when
        none, or for a late packet or a new source)."""
        self.packets += 1
        self.bytes += size
        self._packet_rate.add(size, now)
        if marker:
            self.frames += 1
            self._frame_rate.add(0, now)
        if ssrc != self._ssrc or self._highest_seq is None:
            self._ssrc = ssrc
            self._highest_seq = seq
            return 0
        delta = seq_delta(seq, self._highest_seq)
        if delta > 0:
            self.lost += delta - 1
            self._highest_seq = seq
            return delta - 1
        if delta < 0 and self.lost > 0:
            self.lost -= 1  # a late or retransmitted packet filled a gap
        return 0

    def snapshot(self, now: float) -> dict:
        _, byte_rate = self._packet_rate.rates(now)
        fps, _ = self._frame_rate.rates(now)
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "frames": self.frames,
            "packets_lost": self.lost,
            "bitrate": int(byte_rate * 8),
            "fps": round(fps, 1),
        }
