"""A live stream: at most one publishing source, any number of subscribers.

The stream outlives its publishers: when a source goes away, subscribers stay
attached and continue on the next source's first keyframe (same sessions,
continuous sequence numbers and timestamps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from . import fastpath
from .history import PacketHistory
from .packet import ForwardPacket
from .receiver import TrackReceiver
from .sink import TrackSink

__all__ = ["KINDS", "Source", "Stream", "StreamChange"]

log = logging.getLogger("unbroken.media.stream")

KINDS = ("audio", "video")
# A new video sink is given the stream's latest keyframe (and what followed) when that
# keyframe arrived at most this long ago (s): it need not wait for a keyframe of its own
# (DownTrack.seed), so a burst of joiners (all of a node's viewers re-joining after a
# fault) plays as soon as each one's connection is up.
SEED_MAX_AGE = 0.5
# video packets kept from the latest keyframe on (beyond: none are kept until the next one)
MAX_GOP_PACKETS = 300


class StreamChange(StrEnum):
    """What a stream tells its listeners about its source (the node turns these into the
    wire's stream events)."""

    ACTIVE = "active"  # a source attached
    INACTIVE = "inactive"  # the source went away
    CODEC = "codec"  # the source's codec changed: sinks set up for another one were dropped


class Source:
    """The tracks (TrackReceivers) of one publisher, as attached to a stream."""

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
    """One stream name's fan-out: owns its current Source, its sinks per kind (fed every
    packet of that source), and its listeners (told of StreamChanges)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source: Source | None = None
        self.created_at = time.monotonic()
        # per kind: the sinks, replaced (not mutated) on change
        self._sinks: dict[str, tuple[TrackSink, ...]] = {k: () for k in KINDS}
        self.subscriber_ids: set[str] = set()
        self.listeners: list[Callable[[StreamChange, "Stream"], None]] = []
        # the current source's video packets since its latest keyframe (None: none usable)
        self._gop: list[ForwardPacket] | None = None
        # per kind: the packets forwarded lately, by source sequence number (NACK → RTX)
        self._history = {k: PacketHistory() for k in KINDS}
        # per kind: the native path's grouping of the sinks (None: to be built)
        self._fanout: dict[str, fastpath.FanOut | None] = {k: None for k in KINDS}

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
        self._gop = None
        for kind, receiver in source.receivers.items():
            receiver.on_packet = self._forwarder(kind, source)
            receiver.on_codec_change = lambda codec: self._codec_changed()
            receiver.on_discontinuity = lambda kind=kind: self._skip_hole(kind)
        self._emit(StreamChange.ACTIVE)
        self._drop_mismatched_codecs()

    def attach_at_keyframe(self, source: Source) -> None:
        """Make `source` the stream's publisher at its first video keyframe, asked for now;
        the current source feeds the subscribers until then (make-before-break: no frame
        lost in the switch). Without a current source or video, at once."""
        video = source.receivers.get("video")
        if self.source is None or video is None:
            self.attach(source)
            return

        def at_keyframe(packet: ForwardPacket) -> None:
            if packet.keyframe_start and self.source is not source:
                self.attach(source)  # sets this receiver's forwarder...
                if video.on_packet is not None:
                    video.on_packet(packet)  # ...which takes the keyframe that switched

        video.on_packet = at_keyframe
        video.request_keyframe()

    def _skip_hole(self, kind: str) -> None:
        """The source lost a long run of packets: subscribers continue from its next
        keyframe (audio: next packet) with contiguous sequence numbers."""
        if kind == "video":
            self._gop = None  # what was kept cannot be decoded past the hole
        for sink in self._sinks[kind]:
            sink.source_changed()

    def _codec_changed(self) -> None:
        self._gop = None
        self._drop_mismatched_codecs()

    def _drop_mismatched_codecs(self) -> None:
        """Stop feeding sinks set up for another codec than the source's; the CODEC event
        tells their owners (to renegotiate, or set up new ones)."""
        changed = False
        for kind, codec in self.codecs().items():
            mime = codec.mimeType.lower()
            kept = tuple(s for s in self._sinks[kind] if s.mime == mime)
            if len(kept) != len(self._sinks[kind]):
                self._sinks[kind] = kept
                self._fanout[kind] = None
                changed = True
        if changed:
            self._emit(StreamChange.CODEC)

    def detach(self, source: Source) -> None:
        if self.source is not source:
            return
        for receiver in source.receivers.values():
            receiver.on_packet = None
            receiver.on_discontinuity = None
        self.source = None
        self._gop = None
        for kind in KINDS:
            for sink in self._sinks[kind]:
                sink.source_changed()
        self._emit(StreamChange.INACTIVE)

    def _forwarder(self, kind: str, source: Source) -> Callable[[ForwardPacket], None]:
        keep = self._keep_video if kind == "video" else None
        history = self._history[kind]
        batch = fastpath.BATCH  # None: the Python path

        def forward(packet: ForwardPacket) -> None:
            if self.source is not source:
                return
            if keep is not None:
                keep(packet)
            history.add(packet.sequence_number, packet.timestamp, packet)
            now = packet.arrival
            if batch is None:
                for sink in self._sinks[kind]:
                    _write(sink, packet, now)
                return
            fanout = self._fanout[kind]
            if fanout is None:
                fanout = self._fanout[kind] = fastpath.FanOut(self._sinks[kind])
            # armed slots are sent at once by spread; the others' copies at the flush
            batch.begin()
            try:
                for profile, slots, owners in fanout.groups:
                    try:
                        handed_back = batch.spread(packet.template(profile), slots, packet, now)
                    except Exception:
                        log.exception("the native path could not forward a packet")
                        continue
                    for index in handed_back:
                        _write(owners[index], packet, now)
                for sink in fanout.others:
                    _write(sink, packet, now)
                    if sink.slot is not None:  # armed for the first time: regroup
                        self._fanout[kind] = None
            finally:
                batch.flush()

        return forward

    def history(self, kind: str) -> PacketHistory:
        """The stream's recent packets of `kind` by source sequence number (every source's:
        check a packet's ssrc), which subscriber tracks answer NACKs from."""
        return self._history[kind]

    def _keep_video(self, packet: ForwardPacket) -> None:
        """Keep the video packets since the latest keyframe (the start a new sink gets)."""
        if packet.keyframe_start:
            self._gop = [packet]
        elif self._gop is not None:
            if len(self._gop) < MAX_GOP_PACKETS:
                self._gop.append(packet)
            else:
                self._gop = None

    def latest_keyframe(self, max_age: float | None = None) -> tuple[ForwardPacket, ...]:
        """The video packets from the latest keyframe on, if it arrived at most `max_age`
        seconds (default SEED_MAX_AGE) ago; else ()."""
        gop = self._gop
        limit = SEED_MAX_AGE if max_age is None else max_age
        if not gop or time.monotonic() - gop[0].arrival > limit:
            return ()
        return tuple(gop)

    def add_sink(self, sink: TrackSink) -> None:
        """Feed `sink` from now on; a video sink is first given the packets since the
        latest keyframe, if recent (`TrackSink.seed`)."""
        if sink.kind == "video":
            recent = self.latest_keyframe()
            if recent:
                sink.seed(recent)
        self._sinks[sink.kind] = self._sinks[sink.kind] + (sink,)
        self._fanout[sink.kind] = None

    def remove_sink(self, sink: TrackSink) -> None:
        self._sinks[sink.kind] = tuple(s for s in self._sinks[sink.kind] if s is not sink)
        self._fanout[sink.kind] = None

    def sinks(self, kind: str) -> tuple[TrackSink, ...]:
        return self._sinks[kind]

    def request_keyframe(self, kind: str = "video") -> None:
        if self.source is not None and kind in self.source.receivers:
            self.source.receivers[kind].request_keyframe()

    def send_sender_reports(self) -> None:
        """Have every sink send its sender report, derived from the source's latest ones."""
        for kind in KINDS:
            receiver = self.source.receivers.get(kind) if self.source else None
            reports = receiver.sender_reports if receiver is not None else {}
            for sink in self._sinks[kind]:
                sink.send_sender_report(reports)

    def _emit(self, event: StreamChange) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, self)
            except Exception:
                log.exception("stream listener failed")

    @property
    def idle(self) -> bool:
        return self.source is None and not self.subscriber_ids


def _write(sink: TrackSink, packet: ForwardPacket, now: float) -> None:
    try:
        sink.write(packet, now)
    except Exception:  # one broken subscriber must not stop the others
        log.exception("forwarding to a subscriber failed")
