"""Transcoders for sources HLS players cannot take as they are (VP8 video, Opus audio)."""

from __future__ import annotations

import logging
from fractions import Fraction

import av

from .muxer import Unit
from .settings import AAC_RATE, TS_CLOCK, TS_TIME_BASE, HlsSettings

__all__ = ["AudioTranscoder", "VideoTranscoder"]

log = logging.getLogger("unbroken.media.hls")

AAC_CODER = "fast"


class VideoTranscoder:
    """VP8 (or any decodable) frames → H264 via libx264, keyframes where the segmenter
    wants them."""

    def __init__(self, mime: str, settings: HlsSettings) -> None:
        self.settings = settings
        self.decoder = av.CodecContext.create(mime.split("/")[1].lower(), "r")
        self.encoder = None
        self._size: tuple[int, int] | None = None

    def _open_encoder(self, width: int, height: int):
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height = width, height
        enc.pix_fmt = "yuv420p"
        enc.time_base = TS_TIME_BASE
        # without a frame rate x264 takes the 90 kHz time base for one (level 6.2 streams)
        enc.framerate = Fraction(30, 1)
        enc.gop_size = 100000  # keyframes only when asked for
        enc.options = {"preset": self.settings.x264_preset, "tune": "zerolatency",
                       "crf": str(self.settings.x264_crf), "threads": "1",
                       "repeat-headers": "1", "scenecut": "0"}
        enc.open()
        return enc

    def transcode(self, data: bytes, pts: int, wants_keyframe) -> list[Unit]:
        out = []
        try:
            frames = self.decoder.decode(av.Packet(data))
        except av.error.FFmpegError as exc:
            log.debug("hls: video decode failed: %s", exc)
            return out
        for frame in frames:
            size = (frame.width, frame.height)
            if self.encoder is None or size != self._size:
                self.encoder = self._open_encoder(*size)
                self._size = size
                force = True
            else:
                force = wants_keyframe(pts)
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            frame.pts = pts
            frame.time_base = TS_TIME_BASE
            frame.pict_type = av.video.frame.PictureType.I if force \
                else av.video.frame.PictureType.NONE
            for packet in self.encoder.encode(frame):
                out.append(Unit("video", bytes(packet), int(packet.pts), packet.is_keyframe))
        return out


class AudioTranscoder:
    """Opus frames → AAC-LC 48 kHz stereo frames on the output timeline."""

    def __init__(self, settings: HlsSettings) -> None:
        self.decoder = av.CodecContext.create("opus", "r")
        self.decoder.sample_rate = AAC_RATE
        self.decoder.layout = "stereo"
        self.encoder = av.CodecContext.create("aac", "w")
        self.encoder.sample_rate = AAC_RATE
        self.encoder.layout = "stereo"
        self.encoder.format = "fltp"
        self.encoder.bit_rate = settings.audio_bitrate
        self.encoder.time_base = Fraction(1, AAC_RATE)
        self.encoder.options = {"aac_coder": AAC_CODER}
        self.encoder.open()
        self.extradata = bytes(self.encoder.extradata or b"")
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AAC_RATE,
                                           frame_size=1024)
        self._anchor: int | None = None  # output pts (90 kHz) of sample 0
        self._samples = 0  # samples given to the resampler since the anchor

    def transcode(self, data: bytes, pts: int) -> list[Unit]:
        expected = None if self._anchor is None else \
            self._anchor + self._samples * TS_CLOCK // AAC_RATE
        if expected is None or abs(pts - expected) > TS_CLOCK // 10:
            # start, or a jump (gap, new timing): restart the sample count at this frame
            self._anchor = pts
            self._samples = 0
            self.resampler = av.AudioResampler(format="fltp", layout="stereo",
                                               rate=AAC_RATE, frame_size=1024)
        try:
            frames = self.decoder.decode(av.Packet(data))
        except av.error.FFmpegError:
            return []
        out = []
        for frame in frames:
            frame.pts = None
            for chunk in self.resampler.resample(frame):
                chunk.pts = self._samples
                chunk.time_base = self.encoder.time_base
                self._samples += chunk.samples
                for packet in self.encoder.encode(chunk):
                    out.append(Unit("audio", bytes(packet),
                                    self._anchor + int(packet.pts) * TS_CLOCK // AAC_RATE))
        return out
