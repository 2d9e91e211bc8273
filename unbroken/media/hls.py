"""HLS packaging of one stream: forwarded RTP packets in, MPEG-TS segments and a playlist out.

No HTTP in here (the node serves what this makes). One `HlsPackager` per stream:

- the event loop only queues packets (`push`) and source changes; a worker thread does
  the rest: RTP → frames (depacketize), frames → H264/AAC packets, packets → parts and
  segments (PyAV MPEG-TS muxer, in memory), segments → `Playlist`;
- H264 video is passed through (depacketized to Annex-B and muxed as it comes, no
  decoding); VP8 video is decoded and encoded once to H264 (libx264); Opus audio is
  decoded and encoded once to AAC (browsers' HLS stacks do not take Opus in MPEG-TS);
- segments are cut at keyframes: the packager asks the publisher for one (PLI) when a
  segment reaches its target duration, and a transcoder makes one itself;
- Low-Latency HLS: every segment is made of parts (each a standalone MPEG-TS with
  PAT/PMT; a segment is the concatenation of its parts, continuity counters rewritten
  to run on across them), listed with EXT-X-PART, with a preload hint for the next;
- the playlist stays valid through everything: EXT-X-DISCONTINUITY when the source
  changes (publisher restore, codec change), EXT-X-ENDLIST at the end, a sliding
  window whose older segments are dropped from memory (nothing is written to disk).
"""

from __future__ import annotations

import io
import logging
import math
import queue
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction

import av
from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload

from .packet import ForwardPacket

log = logging.getLogger("unbroken.media.hls")

TS_CLOCK = 90_000
TS_TIME_BASE = Fraction(1, TS_CLOCK)
# output timestamps start here (seconds), so that early audio (encoder priming) stays positive
BASE_SECONDS = 10.0
AAC_RATE = 48_000
MAX_QUEUE = 2000  # queued packets before the worker is considered behind (then resyncs)
TS_PACKET = 188
AAC_CODER = "fast"


@dataclass
class HlsSettings:
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


# --- playlist model ----------------------------------------------------------------------

@dataclass
class Part:
    data: bytes
    duration: float
    independent: bool


@dataclass
class Segment:
    msn: int
    wall_start: float  # time.time() of its first frame
    discontinuity: bool = False
    parts: list[Part] = field(default_factory=list)
    data: bytes | None = None  # set when complete
    duration: float = 0.0

    @property
    def complete(self) -> bool:
        return self.data is not None


class Playlist:
    """The live playlist of one packaging run: segments by media sequence number.

    Written by the packager's worker thread, read by the server: every method takes the
    lock. URIs are relative: ``{epoch}-{msn}.ts`` and ``{epoch}-{msn}.{part}.ts``, where
    the epoch is random per run, so that a segment name never means two contents.
    """

    def __init__(self, settings: HlsSettings) -> None:
        self.settings = settings
        self.epoch = secrets.token_hex(4)
        self.segments: deque[Segment] = deque()
        self.next_msn = 0
        self.discontinuity_sequence = 0
        self.ended = False
        self.version = 0  # bumped on every change
        self._lock = threading.Lock()
        # listed segments + a few more kept for clients reading an older playlist
        self._keep = settings.window + 4

    # writer side ---------------------------------------------------------------------
    def open_segment(self, wall_start: float, discontinuity: bool) -> Segment:
        with self._lock:
            seg = Segment(self.next_msn, wall_start, discontinuity and bool(self.segments))
            self.next_msn += 1
            self.segments.append(seg)
            return seg

    def add_part(self, seg: Segment, part: Part) -> None:
        with self._lock:
            seg.parts.append(part)
            self.version += 1

    def close_segment(self, seg: Segment) -> None:
        with self._lock:
            seg.data = b"".join(p.data for p in seg.parts)
            seg.duration = sum(p.duration for p in seg.parts)
            self.version += 1
            self._trim()

    def drop_segment(self, seg: Segment) -> None:
        """Forget an open segment that got no part."""
        with self._lock:
            if self.segments and self.segments[-1] is seg and not seg.parts:
                self.segments.pop()
                self.next_msn -= 1

    def end(self) -> None:
        with self._lock:
            self.ended = True
            self.version += 1

    def _trim(self) -> None:
        complete = [s for s in self.segments if s.complete]
        while len(complete) > self._keep:
            old = self.segments.popleft()
            complete.remove(old)
        # parts are listed (and kept) only for the last few segments
        for seg in complete[:-4]:
            if seg.parts and seg.data is not None:
                seg.parts = [Part(b"", p.duration, p.independent) for p in seg.parts]

    # reader side ---------------------------------------------------------------------
    def _listed(self) -> list[Segment]:
        complete = [s for s in self.segments if s.complete]
        first = complete[-self.settings.window] if len(complete) >= self.settings.window \
            else (self.segments[0] if self.segments else None)
        if first is None:
            return []
        return [s for s in self.segments if s.msn >= first.msn]

    @property
    def ready(self) -> bool:
        """Worth showing a first player: with LL-HLS, parts covering PART-HOLD-BACK (so a
        player can start that far behind the live edge, not at the very first part and
        later), else one whole segment."""
        with self._lock:
            if self.ended:
                return True
            if self.settings.part_duration:
                available = sum(p.duration for s in self.segments for p in s.parts)
                return available >= 3 * self.settings.part_duration - 0.05
            return any(s.complete for s in self.segments)

    def last_position(self) -> tuple[int, int]:
        """(msn, parts) of the newest segment; -1 msn when there is none."""
        with self._lock:
            if not self.segments:
                return -1, 0
            seg = self.segments[-1]
            return seg.msn, len(seg.parts)

    def satisfies(self, msn: int, part: int | None) -> bool:
        """Blocking playlist reload: does the playlist hold segment `msn` (complete) or
        its part `part` (or anything later)?"""
        with self._lock:
            if self.ended:
                return True
            for seg in reversed(self.segments):
                if seg.msn > msn and (seg.parts or seg.complete):
                    return True
                if seg.msn == msn:
                    if seg.complete:
                        return True
                    return part is not None and len(seg.parts) > part
            return False

    def is_pending(self, msn: int, part: int | None) -> bool:
        """Is this the segment or part the packager makes next (worth waiting for)?"""
        with self._lock:
            if self.ended:
                return False
            if not self.segments:
                return msn == self.next_msn and not part
            last = self.segments[-1]
            if last.complete:
                return msn == self.next_msn and not part
            if msn != last.msn:
                return msn == last.msn + 1 and not part
            return part is None or part >= len(last.parts) and part <= len(last.parts) + 1

    def data(self, msn: int, part: int | None = None) -> bytes | None:
        with self._lock:
            for seg in self.segments:
                if seg.msn == msn:
                    if part is None:
                        return seg.data
                    if part < len(seg.parts) and seg.parts[part].data:
                        return seg.parts[part].data
                    return None
            return None

    def uri(self, msn: int, part: int | None = None) -> str:
        return f"{self.epoch}-{msn}.ts" if part is None else f"{self.epoch}-{msn}.{part}.ts"

    def parse_uri(self, name: str) -> tuple[int, int | None] | None:
        """(msn, part) of a segment file name of this run, or None."""
        prefix = self.epoch + "-"
        if not name.startswith(prefix) or not name.endswith(".ts"):
            return None
        core = name[len(prefix):-3].split(".")
        if not 1 <= len(core) <= 2 or not all(c.isdigit() and len(c) < 12 for c in core):
            return None
        return int(core[0]), (int(core[1]) if len(core) == 2 else None)

    def render(self, query: str = "") -> str:
        """The playlist text; `query` (e.g. ``?token=...``) is appended to every URI."""
        s = self.settings
        with self._lock:
            listed = self._listed()
            first_listed = listed[0].msn if listed else self.next_msn
            dropped_disc = 0
            # discontinuities that left the window count into DISCONTINUITY-SEQUENCE
            for seg in self.segments:
                if seg.msn < first_listed and seg.discontinuity:
                    dropped_disc += 1
            lines = ["#EXTM3U", f"#EXT-X-VERSION:{6 if s.part_duration else 3}",
                     f"#EXT-X-TARGETDURATION:{s.target_duration}"]
            if s.part_duration:
                lines.append("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
                             f"PART-HOLD-BACK={3 * s.part_duration:.3f},"
                             f"HOLD-BACK={3 * s.target_duration:.3f}")
                lines.append(f"#EXT-X-PART-INF:PART-TARGET={s.part_duration:.3f}")
            lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_listed}")
            lines.append("#EXT-X-DISCONTINUITY-SEQUENCE:"
                         f"{self.discontinuity_sequence + dropped_disc}")
            with_parts = {seg.msn for seg in listed[-4:]} if s.part_duration else set()
            for seg in listed:
                if not seg.complete and not (seg.parts and s.part_duration):
                    continue
                if seg.discontinuity:
                    lines.append("#EXT-X-DISCONTINUITY")
                lines.append("#EXT-X-PROGRAM-DATE-TIME:" + _iso(seg.wall_start))
                if seg.msn in with_parts:
                    for i, p in enumerate(seg.parts):
                        lines.append(f"#EXT-X-PART:DURATION={p.duration:.5f},"
                                     f'URI="{self.uri(seg.msn, i)}{query}"'
                                     + (",INDEPENDENT=YES" if p.independent else ""))
                if seg.complete:
                    lines.append(f"#EXTINF:{seg.duration:.5f},")
                    lines.append(self.uri(seg.msn) + query)
            if self.ended:
                lines.append("#EXT-X-ENDLIST")
            elif s.part_duration:
                last = self.segments[-1] if self.segments else None
                if last is not None and not last.complete:
                    hint = self.uri(last.msn, len(last.parts))
                else:
                    hint = self.uri(self.next_msn, 0)
                lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}{query}"')
            return "\n".join(lines) + "\n"


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


# --- RTP → frames ------------------------------------------------------------------------

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


# --- the segmenter ----------------------------------------------------------------------

@dataclass
class Unit:
    """One coded frame for the muxer: H264 access unit (Annex-B) or AAC frame."""

    kind: str
    data: bytes
    pts: int  # 90 kHz
    keyframe: bool = False


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
        self._cc: dict[int, int] = {}
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
        data = self._mux(units)
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

    def _mux(self, units: list[Unit]) -> bytes:
        buf = io.BytesIO()
        container = av.open(buf, "w", format="mpegts")
        try:
            streams = {}
            if self.has_video:
                vs = container.add_stream("h264")
                vs.time_base = TS_TIME_BASE
                streams["video"] = vs
            if self.has_audio and self.audio_extradata is not None:
                ast = container.add_stream("aac", rate=AAC_RATE)
                ast.codec_context.layout = "stereo"
                ast.codec_context.extradata = self.audio_extradata
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


# --- codecs -----------------------------------------------------------------------------

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


# --- the packager -----------------------------------------------------------------------

class HlsPackager:
    """Packages one stream; `push` (from the event loop) is cheap, the worker does the rest.

    `on_update()` is called from the worker thread after each playlist change;
    `request_keyframe()` too (the caller forwards it to its event loop);
    `transcode`: whether VP8/Opus sources are transcoded (else only H264 video is
    packaged, without audio).
    """

    def __init__(self, name: str, settings: HlsSettings, on_update=None,
                 request_keyframe=None, transcode: bool = True) -> None:
        settings.validate()
        self.name = name
        self.settings = settings
        self.transcode_allowed = transcode
        self.playlist = Playlist(settings)
        self.on_update = on_update or (lambda: None)
        self._request_keyframe = request_keyframe or (lambda: None)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._t0 = time.monotonic()
        self._t0_wall = time.time()
        self.segmenter = Segmenter(self.playlist, settings, self._wall_of_pts,
                                   self._ask_keyframe)
        self.mode = "waiting"  # "passthrough" | "transcode" | "waiting" | "unsupported"
        self.dropped = 0
        self.frames_in = 0
        self.cpu_seconds = 0.0
        self._last_pts = 0
        self._thread = threading.Thread(target=self._run, name=f"hls-{name}", daemon=True)
        self._thread.start()

    # event-loop side ---------------------------------------------------------------
    def push(self, kind: str, mime: str, clock_rate: int, fp: ForwardPacket) -> None:
        if self._queue.qsize() > MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.put(("rtp", kind, mime, clock_rate, fp))

    def set_source(self, codecs: dict[str, str] | None) -> None:
        """A new publisher (kind -> mime type), or None when the publisher went away."""
        self._queue.put(("source", codecs))

    def end(self) -> None:
        """The stream is over: finish the playlist with EXT-X-ENDLIST."""
        self._queue.put(("end",))

    def close(self, timeout: float = 2.0) -> None:
        self._queue.put(("stop",))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> dict:
        msn, parts = self.playlist.last_position()
        return {"mode": self.mode, "segments": self.segmenter.segments_made,
                "last_msn": msn, "forced_cuts": self.segmenter.forced_cuts,
                "dropped_packets": self.dropped, "frames_in": self.frames_in,
                "worker_cpu_s": round(self.cpu_seconds, 3), "ended": self.playlist.ended}

    # worker side -------------------------------------------------------------------
    def _wall_of_pts(self, pts: int) -> float:
        return self._t0_wall + pts / TS_CLOCK - BASE_SECONDS

    def _out_of_arrival(self, arrival: float) -> int:
        return int((arrival - self._t0 + BASE_SECONDS) * TS_CLOCK)

    def _ask_keyframe(self) -> None:
        if self.mode == "passthrough":
            self._request_keyframe()

    def _run(self) -> None:
        state = _SourceState(None)
        last_version = self.playlist.version
        while True:
            item = self._queue.get()
            started = time.thread_time()
            try:
                op = item[0]
                if op == "rtp":
                    self._rtp(state, *item[1:])
                elif op == "source":
                    self.segmenter.new_source()
                    state = _SourceState(item[1])
                    state.min_start = self._last_pts + TS_CLOCK // 30
                    self._start_source(state)
                elif op == "end":
                    self.segmenter.flush()
                    self.playlist.end()
                elif op == "stop":
                    return
            except Exception:
                log.exception("hls packaging failed", extra={"stream": self.name})
                state.resync()
            finally:
                self.cpu_seconds += time.thread_time() - started
            if self.playlist.version != last_version:
                last_version = self.playlist.version
                try:
                    self.on_update()
                except Exception:
                    log.exception("hls update callback failed")

    def _start_source(self, state: "_SourceState") -> None:
        codecs = state.codecs or {}
        video, audio = codecs.get("video"), codecs.get("audio")
        if video == "video/h264":
            self.mode = "passthrough"
        elif video is not None and self.transcode_allowed:
            self.mode = "transcode"
            state.video_transcoder = VideoTranscoder(video, self.settings)
        elif video is not None:
            self.mode = "unsupported"
            state.codecs = {}
            return
        else:
            self.mode = "passthrough" if audio else "waiting"
        if audio == "audio/opus" and self.transcode_allowed:
            state.audio_transcoder = AudioTranscoder(self.settings)
            self.segmenter.audio_extradata = state.audio_transcoder.extradata
        else:
            state.codecs.pop("audio", None)
        self.segmenter.has_video, self.segmenter.has_audio = state.kinds()

    def _rtp(self, state: "_SourceState", kind: str, mime: str, clock_rate: int,
             fp: ForwardPacket) -> None:
        if not state.codecs or state.codecs.get(kind) != mime:
            return
        assembler = state.assemblers.get(kind)
        if assembler is None:
            assembler = state.assemblers[kind] = FrameAssembler(kind, mime)
            state.clocks[kind] = RtpClock(clock_rate)
        was_waiting = assembler.need_keyframe
        frames = assembler.add(fp)
        if kind == "video" and assembler.need_keyframe and not was_waiting:
            self._request_keyframe()  # loss: the picture can only continue at a keyframe
        for data, ts, keyframe, arrival in frames:
            self.frames_in += 1
            self._frame(state, kind, data, ts, keyframe, arrival)

    def _frame(self, state: "_SourceState", kind: str, data: bytes, ts: int, keyframe: bool,
               arrival: float) -> None:
        clock = state.clocks[kind]
        has_video = "video" in state.codecs
        if kind == "audio" and has_video and not state.clocks.get("video", clock).anchored:
            return  # audio starts with the picture
        if not clock.anchored:
            out = self._out_of_arrival(arrival)
            out = max(out, state.min_start)
            clock.anchor(ts, out)
        pts = clock.map(ts)
        if kind == "video":
            if state.video_transcoder is not None:
                units = state.video_transcoder.transcode(data, pts,
                                                         self.segmenter.wants_keyframe)
            else:
                units = [Unit("video", data, pts, keyframe)]
        elif state.audio_transcoder is not None:
            units = state.audio_transcoder.transcode(data, pts)
        else:
            units = []
        for unit in units:
            self.segmenter.add(unit)
            if unit.pts > self._last_pts:
                self._last_pts = unit.pts


class _SourceState:
    """Per-publisher state in the worker: codecs, frame assemblers, clocks, transcoders."""

    def __init__(self, codecs: dict[str, str] | None) -> None:
        self.codecs = dict(codecs) if codecs else {}
        self.assemblers: dict[str, FrameAssembler] = {}
        self.clocks: dict[str, RtpClock] = {}
        self.video_transcoder: VideoTranscoder | None = None
        self.audio_transcoder: AudioTranscoder | None = None
        self.min_start = 0

    def kinds(self) -> tuple[bool, bool]:
        return "video" in self.codecs, "audio" in self.codecs

    def resync(self) -> None:
        for assembler in self.assemblers.values():
            assembler.need_keyframe = assembler.kind == "video"
