"""Record a played stream to a file as received: encoded frames are muxed, never re-encoded.

The file format follows the extension: `.ts` (MPEG-TS: H264 or VP8... as FFmpeg allows),
`.webm` (VP8 + Opus), `.mkv` (any). Across restores the recording continues in the same
file, its timestamps carried on by the wall clock.
"""

from __future__ import annotations

import fractions
import time

import av

from unbroken.media import rtc_internals


FORMATS = {".ts": "mpegts", ".webm": "webm", ".mkv": "matroska"}
MAX_PENDING = 300  # frames held while waiting for every track's first frame


def vp8_dimensions(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386 9.1)."""
    if len(frame) >= 10 and not frame[0] & 1 and frame[3:6] == b"\x9d\x01\x2a":
        return (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF
    return None


class EncodedRecorder:
    """Writes the encoded frames a peer connection receives to one file, as received,
    across every session attached to it (see ``attach``)."""

    def __init__(self, path: str) -> None:
        suffix = path[path.rfind("."):].lower() if "." in path else ""
        if suffix not in FORMATS:
            raise ValueError(f"record to one of {', '.join(FORMATS)} (got {path!r})")
        self.path = path
        self.format = FORMATS[suffix]
        self.frames = 0
        self._container = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._expected: set[str] = set()
        self._pending: list[tuple[str, str, int, bytes, int]] = []
        self._bases: dict[str, int] = {}
        self._last_pts: dict[str, int] = {}
        self._started = time.monotonic()

    def attach(self, pc) -> None:
        """Record what this peer connection's receivers get (call before connecting).

        Frames are taken where aiortc hands them to its decoder thread (a private
        hook of aiortc 1.16, in unbroken.media.rtc_internals)."""
        self._bases = {}
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            kind = transceiver.kind
            self._expected.add(kind)
            rtc_internals.tee_decoder_queue(
                receiver, lambda codec, frame, kind=kind: self._frame(kind, codec, frame))

    def _frame(self, kind: str, codec, frame) -> None:
        name = codec.mimeType.split("/")[1].lower()
        clock = codec.clockRate
        if kind not in self._bases:
            # a new session starts its timestamps at 0: continue from the wall clock
            elapsed = int((time.monotonic() - self._started) * clock)
            self._bases[kind] = max(elapsed, self._last_pts.get(kind, -1) + 1) - frame.timestamp
        pts = self._bases[kind] + frame.timestamp
        if self._container is None:
            self._pending.append((kind, name, clock, bytes(frame.data), pts))
            have = {p[0] for p in self._pending}
            if have >= self._expected or len(self._pending) > MAX_PENDING:
                self._open()
            return
        self._write(kind, name, clock, bytes(frame.data), pts)

    def _open(self) -> None:
        self._container = av.open(self.path, "w", format=self.format)
        for kind, name, clock, data, _ in self._pending:
            if kind in self._streams:
                continue
            stream = self._container.add_stream(name, rate=clock if kind == "audio" else 30)
            if kind == "video":
                size = vp8_dimensions(data) if name == "vp8" else None
                stream.width, stream.height = size or (640, 360)
            stream.time_base = fractions.Fraction(1, clock)
            self._streams[kind] = stream
        pending, self._pending = self._pending, []
        for item in pending:
            self._write(*item)

    def _write(self, kind: str, name: str, clock: int, data: bytes, pts: int) -> None:
        stream = self._streams.get(kind)
        if stream is None or pts <= self._last_pts.get(kind, -1):
            return
        packet = av.Packet(data)
        packet.stream = stream
        packet.pts = packet.dts = pts
        packet.time_base = fractions.Fraction(1, clock)
        self._container.mux(packet)
        self._last_pts[kind] = pts
        self.frames += 1

    def close(self) -> None:
        if self._container is None and self._pending:
            self._open()
        if self._container is not None:
            self._container.close()
            self._container = None
