"""WHEP viewer on aiortc: plays ``POST {url_base}/whep/{stream}`` and checks what arrives.

With ``decode=True`` aiortc decodes the media and every video frame's counter
(see ``framecode``) is read. With ``decode=False`` (a load viewer for
benchmarks) nothing is depayloaded or decoded: RTP packets are only counted,
video frames by the RTP marker bit; such a viewer sends no receiver reports,
NACKs or PLIs.

Both modes count packets through a private aiortc hook
(``rtc_internals.tap_received_rtp``, whose ``check_hooks`` fails loudly if it
disappears; aiortc is pinned). A decoding viewer's video receiver recovers from loss
with ``jitter.py``: NACKs asked again, and a jitter buffer that gives up on a lost packet
after a while (asks for a keyframe, goes on from it) instead of after 512 packets.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable

import av
from aiortc import RTCPeerConnection
from aiortc.codecs import depayload
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from unbroken.client.framecode import read_counter
from unbroken.client.jitter import VideoJitterBuffer
from unbroken.media import rtc_internals
from unbroken.media.keyframe import keyframe_detector
from unbroken.media.nack import RetryingNackGenerator
from unbroken.client.whip import OfferAnswerSession, WhipError
from unbroken.protocol.whip_whep import WAIT_LIVE_MS

HISTORY = 2000  # counters and arrival times kept


class WhepError(WhipError):
    """The server refused playback (409 + Retry-After while the stream is not live)."""


class WhepViewer(OfferAnswerSession):
    """Receives a stream over WHEP and keeps counts of what arrived.

    ``frames``: video frames (decoded, or marker bits when not decoding);
    ``counters``: framecode values of the last decoded frames (None when
    unreadable); ``arrivals``: their ``time.monotonic()``; ``first_frame_at``;
    ``audio_frames``; ``packets``/``bytes`` (RTP payload bytes, audio and
    video); ``video_packets`` (video media packets, retransmissions left out);
    ``codec``: the video mime type, from the answer and then from
    the payload type of the packets received; ``jitter``/``nacks``: the decoding video
    receiver's jitter buffer and NACK generator (their figures).
    ``on_frame(frame, counter)`` is called for each decoded video frame;
    ``on_receivers(pc)`` once the receivers exist, before the offer (e.g.
    ``EncodedRecorder.attach``).
    """

    path = "whep"
    error_class = WhepError

    def __init__(self, url_base: str, stream: str, token: str | None = None, *,
                 video: bool = True, audio: bool = True, decode: bool = True,
                 on_frame: Callable[[av.VideoFrame, int | None], None] | None = None,
                 wait_live_ms: int = 0,
                 on_receivers: Callable[[RTCPeerConnection], None] | None = None,
                 **kwargs) -> None:
        if not (video or audio):
            raise ValueError("a viewer needs video or audio")
        super().__init__(url_base, stream, token, **kwargs)
        self.wait_live_ms = int(wait_live_ms)
        if wait_live_ms:
            # the node holds the request until the stream is live (an unbroken extension)
            self.post_query = f"?{WAIT_LIVE_MS}={self.wait_live_ms}"
        self.video, self.audio, self.decode = video, audio, decode
        self.on_frame = on_frame
        self.on_receivers = on_receivers
        self.frames = 0
        self.audio_frames = 0
        self.packets = 0
        self.bytes = 0
        self.video_packets = 0
        self.video_ssrc: int | None = None
        self.jitter: VideoJitterBuffer | None = None
        self.nacks: RetryingNackGenerator | None = None
        self._video_receiver = None
        self._codec_parameters: dict[int, RTCRtpCodecParameters] = {}
        self.counters: deque[int | None] = deque(maxlen=HISTORY)
        self.arrivals: deque[float] = deque(maxlen=HISTORY)
        self.first_frame_at: float | None = None
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    @property
    def time_to_first_frame(self) -> float | None:
        """Seconds from the WHEP POST to the first video frame."""
        if self.first_frame_at is None or self.posted_at is None:
            return None
        return self.first_frame_at - self.posted_at

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await super().stop()

    async def wait_frames(self, n: int, timeout: float) -> None:
        """Wait until ``frames >= n`` (a total, not n more); TimeoutError says how far it got."""
        try:
            async with asyncio.timeout(timeout):
                while self.frames < n:
                    await self._wait_progress()
        except TimeoutError:
            raise TimeoutError(f"{self.url}: {self.frames} of {n} frames after {timeout} s "
                               f"(connection {self.connection_state})") from None

    async def wait_first_frame(self, timeout: float) -> float:
        """Wait for the first video frame; returns ``first_frame_at``."""
        await self.wait_frames(1, timeout)
        return self.first_frame_at

    def fps(self, window: float = 1.0) -> float:
        """Video frames per second over the last ``window`` seconds."""
        since = time.monotonic() - window
        recent = 0
        for t in reversed(self.arrivals):
            if t <= since:
                break
            recent += 1
        return recent / window

    def stats(self) -> dict:
        figures = dict(frames=self.frames, packets=self.packets, bytes=self.bytes,
                       audio_frames=self.audio_frames, fps=self.fps(), codec=self.codec)
        if self.jitter is not None:
            figures.update(holes_skipped=self.jitter.skips,
                           keyframe_requests=self.jitter.keyframe_requests)
        return figures

    async def request_keyframe(self) -> bool:
        """Send a PLI for the video (decoding viewers, once video arrived); False if not."""
        if self._video_receiver is None or self.video_ssrc is None:
            return False
        await rtc_internals.send_pli(self._video_receiver, self.video_ssrc)
        return True

    def _add_transceivers(self, pc: RTCPeerConnection) -> None:
        rtc_internals.check_hooks()
        kinds = [k for k, wanted in (("video", self.video), ("audio", self.audio)) if wanted]
        for kind in kinds:
            receiver = pc.addTransceiver(kind, direction="recvonly").receiver
            rtc_internals.tap_received_rtp(receiver, self._rtp_counter(kind), self.decode)
            if kind == "video" and self.decode:
                self._recover_losses(receiver)
        if self.decode:
            pc.on("track", self._consume)
        if self.on_receivers:
            self.on_receivers(pc)

    def _recover_losses(self, receiver) -> None:
        self._video_receiver = receiver
        self.nacks = RetryingNackGenerator()
        self.jitter = VideoJitterBuffer(self._depayload, self._is_keyframe_start,
                                        on_skip=self.nacks.forget_before)
        rtc_internals.use_nack_generator(receiver, self.nacks)
        rtc_internals.use_video_jitter_buffer(receiver, self.jitter)

    def _depayload(self, packet: RtpPacket) -> bytes:
        codec = self._codec_parameters.get(packet.payload_type)
        if codec is None:
            mime = self.video_codecs.get(packet.payload_type, "video/unknown")
            codec = self._codec_parameters[packet.payload_type] = RTCRtpCodecParameters(
                mimeType=mime, clockRate=90000, payloadType=packet.payload_type)
        return depayload(codec, packet.payload) if packet.payload else b""

    def _is_keyframe_start(self, packet: RtpPacket) -> bool:
        detector = keyframe_detector(self.video_codecs.get(packet.payload_type, ""))
        return detector is not None and detector(packet.payload)

    def _rtp_counter(self, kind: str) -> Callable[[RtpPacket], None]:
        """Counts each received RTP packet of `kind` (and, without decoding, its frames)."""

        def count(packet: RtpPacket) -> None:
            self.packets += 1
            self.bytes += len(packet.payload)
            if kind == "video":
                mime = self.video_codecs.get(packet.payload_type)  # None for RTX
                if mime is not None:
                    self.codec = mime
                    self.video_packets += 1
                    self.video_ssrc = packet.ssrc
                    if packet.marker and not self.decode:
                        self._video_frame_arrived(None)
            elif not self.decode:
                self.audio_frames += 1

        return count

    def _consume(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._read_track(track)))

    async def _read_track(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    self.audio_frames += 1
                    continue
                counter = read_counter(frame)
                self._video_frame_arrived(counter)
                if self.on_frame:
                    self.on_frame(frame, counter)
        except MediaStreamError:
            pass  # the track ended: the connection closed

    def _video_frame_arrived(self, counter: int | None) -> None:
        now = time.monotonic()
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.frames += 1
        self.arrivals.append(now)
        if self.decode:
            self.counters.append(counter)
        self._progress.set()

    async def _wait_progress(self) -> None:
        self._progress.clear()
        await self._progress.wait()
