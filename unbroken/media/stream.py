"""A live stream: at most one publishing source, any number of subscribers.

The stream outlives its publishers: when a source goes away, subscribers stay
attached and continue on the next source's first keyframe (same sessions,
continuous sequence numbers and timestamps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .downtrack import DownTrack
from .packet import ForwardPacket
from .receiver import TrackReceiver

log = logging.getLogger("unbroken.media.stream")

KINDS = ("audio", "video")


class Source:
    """The tracks of one publisher, as attached to a stream."""

    def __init__(self, source_id: str, receivers: dict[str, TrackReceiver]) -> None:
        self.id = source_id
        self.receivers = receivers
        self.started_at = time.monotonic()

    def codecs(self) -> dict[str, RTCRtpCodecParameters]:
        return {kind: r.codec for kind, r in self.receivers.items()}

    def last_packet_at(self) -> float | None:
        times = [r.last_packet_at for r in self.receivers.values() if r.last_packet_at]
        return max(times) if times else None


class Stream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source: Source | None = None
        self.created_at = time.monotonic()
        # per kind: the subscribers' tracks, replaced (not mutated) on change
        self._downtracks: dict[str, tuple[DownTrack, ...]] = {k: () for k in KINDS}
        self.subscriber_ids: set[str] = set()
        # called with ("active" | "inactive" | "codec", stream)
        self.listeners: list[Callable[[str, "Stream"], None]] = []

    @property
    def live(self) -> bool:
        return self.source is not None

    def codecs(self) -> dict[str, RTCRtpCodecParameters]:
        return self.source.codecs() if self.source else {}

    def attach(self, source: Source) -> None:
        """Make `source` the stream's publisher; subscribers continue on it."""
        if self.source is not None:
            self.detach(self.source)
        self.source = source
        for kind, receiver in source.receivers.items():
            receiver.on_packet = self._forwarder(kind, source)
            receiver.on_codec_change = lambda codec: self._drop_mismatched_codecs()
            receiver.on_discontinuity = lambda kind=kind: self._skip_hole(kind)
        self._emit("active")
        self._drop_mismatched_codecs()

    def _skip_hole(self, kind: str) -> None:
        """The source lost a long run of packets: subscribers continue from its next
        keyframe (audio: next packet) with contiguous sequence numbers."""
        for track in self._downtracks[kind]:
            track.source_changed()

    def _drop_mismatched_codecs(self) -> None:
        """Stop feeding subscriber tracks negotiated for another codec than the source's;
        the "codec" event tells their owners to renegotiate."""
        changed = False
        for kind, codec in self.codecs().items():
            mime = codec.mimeType.lower()
            kept = tuple(t for t in self._downtracks[kind] if t.mime == mime)
            if len(kept) != len(self._downtracks[kind]):
                self._downtracks[kind] = kept
                changed = True
        if changed:
            self._emit("codec")

    def detach(self, source: Source) -> None:
        if self.source is not source:
            return
        for receiver in source.receivers.values():
            receiver.on_packet = None
            receiver.on_discontinuity = None
        self.source = None
        for kind in KINDS:
            for track in self._downtracks[kind]:
                track.source_changed()
        self._emit("inactive")

    def _forwarder(self, kind: str, source: Source) -> Callable[[ForwardPacket], None]:
        def forward(packet: ForwardPacket) -> None:
            if self.source is not source:
                return
            now = packet.arrival
            for track in self._downtracks[kind]:
                try:
                    track.write(packet, now)
                except Exception:  # one broken subscriber must not stop the others
                    log.exception("forwarding to a subscriber failed")

        return forward

    def add_downtrack(self, track: DownTrack) -> None:
        self._downtracks[track.kind] = self._downtracks[track.kind] + (track,)

    def remove_downtrack(self, track: DownTrack) -> None:
        self._downtracks[track.kind] = tuple(t for t in self._downtracks[track.kind]
                                             if t is not track)

    def downtracks(self, kind: str) -> tuple[DownTrack, ...]:
        return self._downtracks[kind]

    def request_keyframe(self, kind: str = "video") -> None:
        if self.source is not None and kind in self.source.receivers:
            self.source.receivers[kind].request_keyframe()

    def refresh_sender_reports(self) -> list[tuple[DownTrack, int, int]]:
        """(track, ntp, rtp) sender-report values for every subscriber track."""
        out = []
        for kind in KINDS:
            receiver = self.source.receivers.get(kind) if self.source else None
            for track in self._downtracks[kind]:
                if track.munger.source_ssrc is None:
                    continue
                report = None
                if receiver is not None:
                    report = receiver.sender_reports.get(track.munger.source_ssrc)
                ntp, rtp = track.sender_report_values(report)
                out.append((track, ntp, rtp))
        return out

    def _emit(self, event: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, self)
            except Exception:
                log.exception("stream listener failed")

    @property
    def idle(self) -> bool:
        return self.source is None and not self.subscriber_ids
