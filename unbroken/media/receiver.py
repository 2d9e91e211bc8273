"""Ingest of one published track: tapped RTP packets in, shared ForwardPackets out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpSrPacket, RtpPacket

from .keyframe import keyframe_detector
from .packet import ForwardPacket
from .stats import IngestStats

__all__ = ["KEYFRAME_REQUEST_INTERVAL", "MAX_SEQUENCE_GAP", "TrackReceiver"]

# fewest seconds between two keyframe requests sent to the publisher
KEYFRAME_REQUEST_INTERVAL = 0.25
# packets lost in one run beyond which subscribers skip the hole (e.g. the publisher's path
# was silent for a while): they continue at the next keyframe, with no sequence gap that
# their receivers would wait on in vain
MAX_SEQUENCE_GAP = 30


class TrackReceiver:
    """Ingest of one published track: owns its codec, keyframe detection and throttled
    keyframe requests, ingest stats and the publisher's sender reports."""

    def __init__(self, kind: str, codecs: dict[int, RTCRtpCodecParameters],
                 primary: RTCRtpCodecParameters,
                 send_keyframe_request: Callable[[int], None]) -> None:
        self.kind = kind
        self.codecs = codecs
        self.codec = primary
        self._is_keyframe_start = keyframe_detector(primary.mimeType)
        self._send_keyframe_request = send_keyframe_request
        self.on_packet: Callable[[ForwardPacket], None] | None = None
        self.on_codec_change: Callable[[RTCRtpCodecParameters], None] | None = None
        # called before a packet that follows a loss too long for NACK to repair
        self.on_discontinuity: Callable[[], None] | None = None
        # called once, with the first packet (the peer's "media flows" signal)
        self.on_first_packet: Callable[[], None] | None = None
        self.stats = IngestStats()
        self.last_packet_at: float | None = None
        self.ssrc: int | None = None
        self.keyframes = 0
        self._keyframe_timestamp: int | None = None
        self.keyframe_requests = 0
        self._last_keyframe_request = 0.0
        self._deferred_request: asyncio.TimerHandle | None = None
        # latest sender report from the publisher: ssrc -> (ntp, rtp timestamp)
        self.sender_reports: dict[int, tuple[int, int]] = {}

    def handle_rtp(self, packet: RtpPacket) -> None:
        now = time.monotonic()
        codec = self.codecs.get(packet.payload_type)
        if codec is None:
            return
        if codec is not self.codec:
            self.codec = codec
            self._is_keyframe_start = keyframe_detector(codec.mimeType)
            if self.on_codec_change:
                self.on_codec_change(codec)
        detector = self._is_keyframe_start
        keyframe = detector(packet.payload) if detector is not None else True
        if detector is not None and keyframe:
            # an H264 keyframe may open with several such packets (SPS/PPS, then the
            # IDR's start): only the first of its frame starts it
            if packet.timestamp == self._keyframe_timestamp and packet.ssrc == self.ssrc:
                keyframe = False
            else:
                self._keyframe_timestamp = packet.timestamp
        if detector is not None and keyframe:
            self.keyframes += 1
            if self._deferred_request is not None:  # this keyframe serves that request
                self._deferred_request.cancel()
                self._deferred_request = None
        self.ssrc = packet.ssrc
        if self.last_packet_at is None and self.on_first_packet is not None:
            self.on_first_packet()
        self.last_packet_at = now
        gap = self.stats.add(packet.ssrc, packet.sequence_number, len(packet.payload),
                             packet.marker, now)
        if self.on_packet is not None:
            if gap > MAX_SEQUENCE_GAP and self.on_discontinuity is not None:
                self.on_discontinuity()
            self.on_packet(ForwardPacket(packet, keyframe, now))

    def handle_sender_report(self, packet) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self.sender_reports[packet.ssrc] = (info.ntp_timestamp, info.rtp_timestamp)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (PLI), at most every KEYFRAME_REQUEST_INTERVAL.

        A request inside the interval is sent when the interval ends, unless a keyframe
        arrives first: a late joiner never waits for some later request."""
        if self._is_keyframe_start is None or self.ssrc is None:
            return
        wait = self._last_keyframe_request + KEYFRAME_REQUEST_INTERVAL - time.monotonic()
        if wait <= 0:
            self._send_now()
        elif self._deferred_request is None:
            self._deferred_request = asyncio.get_running_loop().call_later(
                wait, self._send_now)

    def _send_now(self) -> None:
        self._deferred_request = None
        if self.ssrc is None:
            return
        self._last_keyframe_request = time.monotonic()
        self.keyframe_requests += 1
        self._send_keyframe_request(self.ssrc)

    def close(self) -> None:
        if self._deferred_request is not None:
            self._deferred_request.cancel()
            self._deferred_request = None

    def snapshot(self) -> dict:
        return {
            "codec": self.codec.mimeType.split("/")[1],
            "clock_rate": self.codec.clockRate,
            **self.stats.snapshot(time.monotonic()),
            "keyframes": self.keyframes,
            "keyframe_requests": self.keyframe_requests,
        }
