"""WebRTC peers of the node: a publisher's ingest and a subscriber's egress.

Both negotiate with aiortc but move media as forwarded RTP packets (see
rtc_internals). No HTTP here: the node hands SDP in and gets SDP out.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import HeaderExtensionsMap

from . import fastpath, rtc_internals
from .downtrack import DownTrack
from .nack import RetryingNackGenerator
from .packet import OutputProfile
from .receiver import TrackReceiver
from .stream import Source, Stream

__all__ = ["FORWARDED_MIME_TYPES", "IngestPeer", "MEDIA_KINDS", "NegotiationError", "Peer", "PublisherPeer", "SubscriberPeer",
           "media_transceivers", "media_codecs", "tap_ingest"]

log = logging.getLogger("unbroken.media.peer")

MEDIA_KINDS = ("audio", "video")


class NegotiationError(Exception):
    """The offer cannot be served; `status` says how (400 bad offer, 406 codec)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def media_transceivers(pc: RTCPeerConnection) -> list:
    transceivers = [t for t in pc.getTransceivers() if t.kind in MEDIA_KINDS]
    kinds = [t.kind for t in transceivers]
    if not transceivers:
        raise NegotiationError("offer has no audio or video section")
    if len(kinds) != len(set(kinds)):
        raise NegotiationError("offer has more than one section of the same kind")
    return transceivers


# what the node forwards; anything else in an offer is left out of the answer
FORWARDED_MIME_TYPES = ("audio/opus", "video/vp8", "video/h264")


async def _apply_offer(pc: RTCPeerConnection, sdp: str) -> None:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    except NegotiationError:
        raise
    except Exception as exc:  # aiortc raises assorted errors on malformed SDP
        raise NegotiationError(f"invalid SDP offer: {exc}") from exc


async def _make_answer(pc: RTCPeerConnection) -> str:
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # offers aiortc accepts but cannot answer (e.g. a broken BUNDLE)
        raise NegotiationError(f"cannot answer this offer: {exc}") from exc
    return pc.localDescription.sdp


def media_codecs(transceiver) -> list[RTCRtpCodecParameters]:
    return [c for c in rtc_internals.negotiated_codecs(transceiver) if not is_rtx(c)]


def tap_ingest(transceiver, codecs: list[RTCRtpCodecParameters],
               on_first_packet: Callable[[], None] | None = None) -> TrackReceiver:
    """A TrackReceiver fed the decrypted RTP of `transceiver`'s receiver (aiortc's receiver
    stays for NACK and receiver reports, and sends our keyframe requests);
    `on_first_packet` is called when its first packet arrives."""
    rtc_receiver = transceiver.receiver

    def send_pli(media_ssrc: int) -> None:
        asyncio.ensure_future(rtc_internals.send_pli(rtc_receiver, media_ssrc))

    track_receiver = TrackReceiver(
        transceiver.kind, {c.payloadType: c for c in codecs}, codecs[0], send_pli)
    track_receiver.on_first_packet = on_first_packet
    rtc_internals.tap_receiver(rtc_receiver, track_receiver.handle_rtp)
    if transceiver.kind == "video":  # a packet whose NACK was lost is asked for again
        rtc_internals.use_nack_generator(rtc_receiver, RetryingNackGenerator())

    async def on_rtcp(packet) -> None:
        track_receiver.handle_sender_report(packet)

    rtc_internals.wrap_receiver_rtcp(rtc_receiver, on_rtcp)
    return track_receiver


class Peer:
    """What both peer kinds share: the connection, its state, and closing once."""

    def __init__(self, session_id: str, stream: Stream,
                 ice: RTCConfiguration | None = None) -> None:
        self.id = session_id
        self.stream = stream
        self.pc = rtc_internals.new_peer_connection(ice or RTCConfiguration(iceServers=[]))
        self.closed = asyncio.Event()
        # set when media first flows: received (a publisher, a pull) or sent (a viewer)
        self.media_flowing = asyncio.Event()
        self.close_reason = ""
        self.connected_at: float | None = None
        self.on_close: Callable[["Peer"], None] | None = None
        self.pc.on("connectionstatechange", self._on_connection_state)

    @property
    def connection_state(self) -> str:
        return self.pc.connectionState

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.connected_at is None:
            self.connected_at = asyncio.get_running_loop().time()
        elif state in ("failed", "closed"):
            asyncio.ensure_future(self.close(f"connection {state}"))

    async def close(self, reason: str = "closed") -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self._detach()
        if self.on_close:
            self.on_close(self)
        try:
            await self.pc.close()
        except Exception:
            log.exception("closing peer connection failed")

    def _detach(self) -> None:
        raise NotImplementedError


class IngestPeer(Peer):
    """A peer whose received tracks feed a stream (a publisher's, or an edge's pull of an
    upstream): owns their Source, detached from the stream when the peer closes."""

    def __init__(self, session_id: str, stream: Stream,
                 ice: RTCConfiguration | None = None) -> None:
        super().__init__(session_id, stream, ice)
        self.source: Source | None = None

    def last_packet_at(self) -> float | None:
        return self.source.last_packet_at() if self.source else None

    def _detach(self) -> None:
        if self.source is not None:
            self.stream.detach(self.source)
            for receiver in self.source.receivers.values():
                receiver.close()


class PublisherPeer(IngestPeer):
    """A publisher's ingest: taps its tracks into the stream as a Source."""

    async def answer(self, offer_sdp: str) -> str:
        """Negotiate; the source is attached to the stream once the answer is made."""
        await _apply_offer(self.pc, offer_sdp)
        transceivers = media_transceivers(self.pc)
        for t in transceivers:
            rtc_internals.restrict_answer_codecs(t, FORWARDED_MIME_TYPES)
            t.direction = "recvonly"
        if not any(media_codecs(t) for t in transceivers):
            raise NegotiationError("offer has no codec this node can receive "
                                   "(H264 packetization-mode=1, VP8, Opus)", status=406)
        answer = await _make_answer(self.pc)
        receivers: dict[str, TrackReceiver] = {}
        for t in transceivers:
            codecs = media_codecs(t)
            if not codecs or t.currentDirection == "inactive":
                continue
            receivers[t.kind] = tap_ingest(t, codecs, self.media_flowing.set)
        self.source = Source(self.id, receivers)
        return answer


class SubscriberPeer(Peer):
    """A subscriber's egress: one DownTrack per kind fed by the stream."""

    def __init__(self, session_id: str, stream: Stream,
                 ice: RTCConfiguration | None = None) -> None:
        super().__init__(session_id, stream, ice)
        self.downtracks: dict[str, DownTrack] = {}

    async def answer(self, offer_sdp: str) -> str:
        await _apply_offer(self.pc, offer_sdp)
        transceivers = media_transceivers(self.pc)
        stream_codecs = self.stream.codecs()
        for t in transceivers:
            wanted = stream_codecs.get(t.kind)
            if wanted is not None:
                rtc_internals.restrict_answer_codecs(t, (wanted.mimeType,))
                if not media_codecs(t):
                    raise NegotiationError(
                        f"stream sends {wanted.mimeType}, which the offer does not accept",
                        status=406)
            t.direction = "sendonly"
            t.sender.replaceTrack(rtc_internals.SilentTrack(t.kind))
        if not any(media_codecs(t) for t in transceivers):
            raise NegotiationError("offer accepts none of the stream's media", status=406)
        answer = await _make_answer(self.pc)
        for t in transceivers:
            codecs = media_codecs(t)
            if codecs:
                self.downtracks[t.kind] = self._downtrack(t, codecs[0])
        for track in self.downtracks.values():
            self.stream.add_sink(track)
            track.start()
        return answer

    def _downtrack(self, transceiver, codec: RTCRtpCodecParameters) -> DownTrack:
        extensions = types.SimpleNamespace(headerExtensions=rtc_internals.negotiated_header_extensions(transceiver))
        extensions_map = HeaderExtensionsMap()
        extensions_map.configure(extensions)
        profile = OutputProfile.shared(
            codec.payloadType, transceiver.mid, extensions_map,
            tuple((e.id, e.uri) for e in rtc_internals.negotiated_header_extensions(transceiver)))
        rtx = next((c for c in rtc_internals.negotiated_codecs(transceiver)
                    if is_rtx(c) and c.parameters.get("apt") == codec.payloadType), None)
        sender = transceiver.sender
        kind = transceiver.kind
        track = DownTrack(
            kind, codec.mimeType.lower(), profile, rtc_internals.sender_ssrc(sender), codec.clockRate,
            fastpath.make_writer(sender.transport),
            request_keyframe=lambda: self.stream.request_keyframe(kind),
            rtx_payload_type=rtx.payloadType if rtx else None,
            rtx_ssrc=rtc_internals.sender_rtx_ssrc(sender) if rtx else None,
            sender=sender, history=self.stream.history(kind))
        track.on_first_packet = self.media_flowing.set
        rtc_internals.take_over_sender_rtcp(sender, track.handle_rtcp)
        rtc_internals.quiet_sender_rtcp(sender)
        return track

    def _on_connection_state(self) -> None:
        super()._on_connection_state()
        if self.pc.connectionState == "connected":
            for track in self.downtracks.values():
                track.connection_up()

    def _detach(self) -> None:
        for track in self.downtracks.values():
            self.stream.remove_sink(track)
            track.close()
