"""The seam between a stream and what it feeds: each subscriber's WebRTC track, the HLS
tap, a relay. The stream knows only this interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from .packet import ForwardPacket

__all__ = ["SenderReports", "TrackSink"]

# the publisher's latest sender report per source SSRC: (NTP time, RTP timestamp)
SenderReports = Mapping[int, tuple[int, int]]


class TrackSink(ABC):
    """One consumer of one kind of a stream's forwarded packets.

    It owns what it does with them; the stream owns when it is called: `write` for every
    packet of the current source, `source_changed` when that source went away or skipped
    a hole, `send_sender_report` periodically. `mime` is the codec it was set up for:
    the stream stops feeding it when the source's codec changes."""

    kind: str  # "audio" | "video"
    mime: str  # lower-case, e.g. "video/h264"
    # a native Slot (unbroken.media._fastpath) the stream may send this sink's packets
    # through instead of calling `write` (DownTrack on the native path); with it, the
    # sink's `profile` (an OutputProfile) groups it with others of that profile
    slot = None

    @abstractmethod
    def write(self, packet: ForwardPacket, now: float) -> None:
        """Take one forwarded packet (called on the hot path: keep it cheap)."""

    def seed(self, packets: tuple[ForwardPacket, ...]) -> None:
        """Before the first `write`: the current source's packets from its latest keyframe
        on (recent ones), for a sink that can start from them instead of waiting for the
        next keyframe. Ignored by default."""

    def source_changed(self) -> None:
        """The packets that follow come from another source (or after a long hole)."""

    def send_sender_report(self, source_reports: SenderReports) -> None:
        """Send its receiver an RTCP sender report, if it has one to send (from the source's
        own latest ones, `source_reports`)."""
