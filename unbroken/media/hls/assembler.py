"""RTP → frames: depacketizes one forwarded track into whole coded frames."""

from __future__ import annotations

from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload

from ..packet import ForwardPacket

__all__ = ["FrameAssembler"]


class FrameAssembler:
    """Groups one track's packets into frames (by timestamp, closed by the marker bit for
    video); a sequence gap drops the broken frame and, for video, everything up to the
    next keyframe."""

    def __init__(self, kind: str, mime: str) -> None:
        self.kind = kind
        self.mime = mime
        self.ssrc: int | None = None
        self._expected_seq: int | None = None
        self._ts: int | None = None
        self._chunks: list[bytes] = []
        self._keyframe = False
        self._arrival = 0.0
        self._broken = False
        self.need_keyframe = kind == "video"
        if mime == "video/h264":
            self._depayload = h264_depayload
        elif mime == "video/vp8":
            self._depayload = vp8_depayload
        else:
            self._depayload = None

    def reset(self) -> None:
        self.ssrc = None
        self._expected_seq = None
        self._ts = None
        self._chunks = []
        self._broken = False
        self.need_keyframe = self.kind == "video"

    def add(self, fp: ForwardPacket) -> list[tuple[bytes, int, bool, float]]:
        """Returns the frames completed by this packet: (data, rtp ts, keyframe, arrival)."""
        out = []
        if fp.ssrc != self.ssrc:
            self.reset()
            self.ssrc = fp.ssrc
        if self._expected_seq is not None and fp.sequence_number != self._expected_seq:
            delta = (fp.sequence_number - self._expected_seq) & 0xFFFF
            if delta >= 0x8000:
                return out  # late or duplicate packet: its frame is gone already
            self._broken = True  # lost packets: the frame in progress is damaged
            if self.kind == "video":
                self.need_keyframe = True
        self._expected_seq = (fp.sequence_number + 1) & 0xFFFF
        if self._ts is not None and fp.timestamp != self._ts:
            frame = self._finish()  # the marker was lost: close the frame on a new timestamp
            if frame:
                out.append(frame)
        if self._ts is None:
            self._ts = fp.timestamp
            self._arrival = fp.arrival
            self._keyframe = False
            if self.kind == "video" and self._broken:
                self._broken = False  # the damaged frame was dropped; this one is whole
        if fp.keyframe_start:
            self._keyframe = True
        if self.kind == "audio":
            self._chunks.append(fp.payload)
            frame = self._finish()
            if frame:
                out.append(frame)
            return out
        try:
            self._chunks.append(self._depayload(fp.payload) if self._depayload else fp.payload)
        except ValueError:
            self._broken = True
            self.need_keyframe = True
        if fp.marker:
            frame = self._finish()
            if frame:
                out.append(frame)
        return out

    def _finish(self):
        chunks, ts, keyframe, broken = self._chunks, self._ts, self._keyframe, self._broken
        self._chunks, self._ts, self._broken = [], None, False
        if ts is None or not chunks or broken:
            return None
        if self.kind == "video":
            if self.need_keyframe and not keyframe:
                return None
            self.need_keyframe = False
        return b"".join(chunks), ts, keyframe, self._arrival
