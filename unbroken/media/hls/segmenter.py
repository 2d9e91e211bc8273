"""Cuts coded units into LL-HLS parts and segments of the playlist."""

from __future__ import annotations

from .muxer import TsMuxer, Unit
from .playlist import Part, Playlist, Segment
from .settings import TS_CLOCK, HlsSettings

__all__ = ["Segmenter"]


class Segmenter:
    """Cuts coded units into parts and segments and muxes each part to MPEG-TS."""

    def __init__(self, playlist: Playlist, settings: HlsSettings, wall_of_pts,
                 request_keyframe) -> None:
        self.playlist = playlist
        self.settings = settings
        self._wall_of_pts = wall_of_pts
        self._request_keyframe = request_keyframe
        self.has_video = True
        self.has_audio = True
        self.audio_extradata: bytes | None = None
        self._seg: Segment | None = None
        self._seg_start = 0
        self._part_units: list[Unit] = []
        self._part_start = 0
        self._part_independent = False
        self._last_video_pts: int | None = None
        self._frame_interval = 3000  # 90 kHz ticks, estimated from the video
        self._keyframe_asked = False
        self._discontinuity = False
        self._source_start = 0
        self._muxer = TsMuxer()
        self.segments_made = 0
        self.forced_cuts = 0

    def new_source(self) -> None:
        """What follows comes from another source: close up, then a discontinuity."""
        self.flush()
        self._discontinuity = True
        self._last_video_pts = None

    # the transcoder asks whether to make the next frame a keyframe
    def wants_keyframe(self, pts: int) -> bool:
        if self._seg is None:
            return True
        return pts - self._seg_start >= self.settings.segment_duration * TS_CLOCK \
            - self._frame_interval * 3 // 2

    def add(self, unit: Unit) -> None:
        driver = unit.kind == "video" or not self.has_video
        if self._seg is None:
            if not driver or (unit.kind == "video" and not unit.keyframe):
                return  # a segment opens with a video keyframe (or audio when audio-only)
            self._open(unit.pts, independent=True)
            self._source_start = unit.pts
        elif unit.pts < self._source_start:
            return  # audio from before the source's first picture (e.g. AAC priming)
        elif driver:
            self._maybe_cut(unit)
        if unit.kind == "video":
            if self._last_video_pts is not None and unit.pts > self._last_video_pts:
                step = unit.pts - self._last_video_pts
                self._frame_interval = (self._frame_interval * 7 + step) // 8
            self._last_video_pts = unit.pts
        self._part_units.append(unit)

    def _maybe_cut(self, unit: Unit) -> None:
        s = self.settings
        age = unit.pts - self._seg_start
        keyframe = unit.kind != "video" or unit.keyframe
        if keyframe and age >= s.segment_duration * TS_CLOCK * (0.5 if unit.kind == "video"
                                                                else 1.0):
            self._close_part(unit.pts)
            self._close_segment()
            self._open(unit.pts, independent=True)
            return
        if age >= s.max_segment * TS_CLOCK:
            # no keyframe came: cut anyway to keep within the target duration
            self.forced_cuts += 1
            self._close_part(unit.pts)
            self._close_segment()
            self._open(unit.pts, independent=False)
            return
        if (unit.kind == "video" and not self._keyframe_asked
                and age >= s.segment_duration * TS_CLOCK - 2 * self._frame_interval):
            self._keyframe_asked = True
            self._request_keyframe()
        if s.part_duration:
            span = unit.pts - self._part_start
            step = self._frame_interval if unit.kind == "video" else 1920
            if span + step > s.part_duration * TS_CLOCK + 1 and span > 0:
                self._close_part(unit.pts)
                self._part_start = unit.pts
                self._part_independent = keyframe

    def _open(self, pts: int, independent: bool) -> None:
        self._seg = self.playlist.open_segment(self._wall_of_pts(pts), self._discontinuity)
        self._discontinuity = False
        self._seg_start = self._part_start = pts
        self._part_independent = independent
        self._keyframe_asked = False

    def _close_part(self, end_pts: int) -> None:
        units, self._part_units = self._part_units, []
        if not units or self._seg is None:
            return
        duration = max(0, end_pts - self._part_start) / TS_CLOCK
        data = self._muxer.mux(units, self.has_video,
                               self.audio_extradata if self.has_audio else None)
        self.playlist.add_part(self._seg, Part(data, duration, self._part_independent))

    def _close_segment(self) -> None:
        if self._seg is None:
            return
        if self._seg.parts:
            self.playlist.close_segment(self._seg)
            self.segments_made += 1
        else:
            self.playlist.drop_segment(self._seg)
        self._seg = None

    def flush(self) -> None:
        """Close the part and segment in progress (the source went away, or the end)."""
        if self._seg is None:
            return
        if self._last_video_pts is not None:
            end = self._last_video_pts + self._frame_interval
        else:
            end = max((u.pts for u in self._part_units), default=self._part_start) + 1920
        self._close_part(end)
        self._close_segment()
