"""Sequence number and timestamp rewriting for one subscriber track.

The subscriber sees one continuous RTP stream even when the source behind it
changes (a publisher restoring with new SSRCs, sequence numbers and timestamps):
each new source is anchored right after the last packet sent, and its timestamps
continue by the wall-clock time that passed.
"""

from __future__ import annotations

import random

__all__ = ["RtpMunger", "seq_delta"]

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
# packets older than this (by sequence) than the newest forwarded one are dropped
MAX_REORDER = 1000


def seq_delta(a: int, b: int) -> int:
    """Signed distance a - b on the 16-bit sequence circle."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d >= 0x8000 else d


class RtpMunger:
    """One downtrack's sequence-number and timestamp rewrite: continuous output across
    sources, anchored on each source's first forwarded packet."""

    __slots__ = ("clock_rate", "seq_offset", "ts_offset", "source_ssrc", "anchored",
                 "highest_in_seq", "start_in_seq", "last_out_seq", "last_out_ts",
                 "last_out_time")

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.seq_offset = 0
        self.ts_offset = 0
        self.source_ssrc: int | None = None
        self.anchored = False
        self.highest_in_seq = 0
        self.start_in_seq = 0
        # first packet ever starts low in the sequence space (SRTP rollover safety)
        self.last_out_seq = random.randrange(0, 0x7FFF)
        self.last_out_ts = random.randrange(0, TS_MOD)
        self.last_out_time: float | None = None

    def anchor(self, ssrc: int, seq: int, ts: int, now: float) -> None:
        """Start (or continue after a source change) at this packet."""
        out_seq = (self.last_out_seq + 1) & 0xFFFF
        if self.last_out_time is None:
            out_ts = self.last_out_ts
        else:
            elapsed = max(1, int((now - self.last_out_time) * self.clock_rate))
            out_ts = (self.last_out_ts + elapsed) & 0xFFFFFFFF
        self.seq_offset = (out_seq - seq) & 0xFFFF
        self.ts_offset = (out_ts - ts) & 0xFFFFFFFF
        self.source_ssrc = ssrc
        self.highest_in_seq = seq
        self.start_in_seq = seq
        self.anchored = True
        self.last_out_seq = out_seq
        self.last_out_ts = out_ts
        self.last_out_time = now

    def unanchor(self) -> None:
        """The source went away: the next packet must anchor again."""
        self.anchored = False
        self.source_ssrc = None

    def rewrite(self, seq: int, ts: int, now: float) -> tuple[int, int] | None:
        """Map an anchored source's packet, or None to drop it (too old or pre-start)."""
        delta = seq_delta(seq, self.highest_in_seq)
        if delta > 0:
            self.highest_in_seq = seq
        elif delta < -MAX_REORDER or seq_delta(seq, self.start_in_seq) < 0:
            return None
        out_seq = (seq + self.seq_offset) & 0xFFFF
        out_ts = (ts + self.ts_offset) & 0xFFFFFFFF
        if delta > 0:
            self.last_out_seq = out_seq
            self.last_out_ts = out_ts
            self.last_out_time = now
        return out_seq, out_ts
