"""Coded frames → standalone MPEG-TS parts (PyAV's muxer, in memory)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av

from .settings import AAC_RATE, TS_TIME_BASE

__all__ = ["TsMuxer", "Unit", "rewrite_continuity"]

TS_PACKET = 188


@dataclass
class Unit:
    """One coded frame for the muxer: H264 access unit (Annex-B) or AAC frame."""

    kind: str
    data: bytes
    pts: int  # 90 kHz
    keyframe: bool = False


class TsMuxer:
    """Muxes each part of one packaging run to a standalone MPEG-TS (PAT/PMT included);
    owns the continuity counters, which run on across parts so that a segment is the
    concatenation of its parts."""

    def __init__(self) -> None:
        self._cc: dict[int, int] = {}

    def mux(self, units: list[Unit], has_video: bool, audio_extradata: bytes | None) -> bytes:
        """`audio_extradata`: the AAC stream's config, None for no audio stream."""
        buf = io.BytesIO()
        container = av.open(buf, "w", format="mpegts")
        try:
            streams = {}
            if has_video:
                vs = container.add_stream("h264")
                vs.time_base = TS_TIME_BASE
                streams["video"] = vs
            if audio_extradata is not None:
                ast = container.add_stream("aac", rate=AAC_RATE)
                ast.codec_context.layout = "stereo"
                ast.codec_context.extradata = audio_extradata
                streams["audio"] = ast
            for unit in units:
                stream = streams.get(unit.kind)
                if stream is None:
                    continue
                packet = av.Packet(unit.data)
                packet.pts = packet.dts = unit.pts
                packet.time_base = TS_TIME_BASE
                packet.stream = stream
                if unit.keyframe:
                    packet.is_keyframe = True
                container.mux(packet)
        finally:
            container.close()
        return rewrite_continuity(buf.getvalue(), self._cc)


def rewrite_continuity(data: bytes, counters: dict[int, int]) -> bytes:
    """Renumber the TS continuity counters so they run on from the previous part's."""
    buf = bytearray(data)
    for i in range(0, len(buf) - TS_PACKET + 1, TS_PACKET):
        b3 = buf[i + 3]
        if b3 & 0x10:  # has payload
            pid = ((buf[i + 1] & 0x1F) << 8) | buf[i + 2]
            cc = (counters.get(pid, -1) + 1) & 0xF
            counters[pid] = cc
            buf[i + 3] = (b3 & 0xF0) | cc
    return bytes(buf)
