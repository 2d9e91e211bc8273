"""HLS packaging settings and the MPEG-TS timeline they are measured on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["AAC_RATE", "TS_CLOCK", "TS_TIME_BASE", "HlsSettings"]

TS_CLOCK = 90_000
TS_TIME_BASE = Fraction(1, TS_CLOCK)
AAC_RATE = 48_000


@dataclass
class HlsSettings:
    """The knobs of HLS packaging: segment, part and window sizes, transcoding quality."""

    # target segment duration (s); segments are cut at the first keyframe from then on
    segment_duration: float = 1.0
    # LL-HLS part duration (s); 0 = plain HLS (no EXT-X-PART)
    part_duration: float = 0.5
    # segments listed in the playlist (older ones are kept a little longer, then freed)
    window: int = 6
    # libx264 preset for VP8 → H264 transcoding
    x264_preset: str = "superfast"
    x264_crf: int = 23
    audio_bitrate: int = 96_000

    @property
    def target_duration(self) -> int:
        """EXT-X-TARGETDURATION: every segment's rounded duration stays within it."""
        return max(1, math.ceil(self.segment_duration))

    @property
    def max_segment(self) -> float:
        """A segment longer than this is cut even without a keyframe (publisher ignoring PLIs)."""
        return self.target_duration + 0.45

    def validate(self) -> None:
        if not 0.2 <= self.segment_duration <= 10:
            raise ValueError("hls_segment_duration must be between 0.2 and 10 seconds")
        if self.part_duration and not 0.1 <= self.part_duration <= self.segment_duration:
            raise ValueError("hls_part_duration must be 0 or between 0.1 s and the "
                             "segment duration")
        if not 2 <= self.window <= 100:
            raise ValueError("hls_window must be between 2 and 100 segments")
