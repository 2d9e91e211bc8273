"""An edge's ingest of a stream it pulls from an upstream node over WHEP.

The pull is the offering side: it offers to receive audio and video in the codecs the
node forwards, and taps what arrives exactly like a publisher's media (see
``peer.tap_ingest``): its Source feeds the edge's stream, packets forwarded, never
decoded. Keyframe requests from the edge's viewers go upstream as PLI over this peer;
aiortc's receivers NACK losses on the hop and take the upstream's sender reports.
No HTTP here: the relay (``unbroken.node.relay``) carries the offer and answer.
"""

from __future__ import annotations

from aiortc import RTCRtpReceiver, RTCSessionDescription
from aiortc.codecs import is_rtx

from .peer import (
    FORWARDED_MIME_TYPES,
    MEDIA_KINDS,
    IngestPeer,
    NegotiationError,
    media_codecs,
    media_transceivers,
    tap_ingest,
)
from .stream import Source

__all__ = ["PullPeer"]


def _receivable_codecs(kind: str) -> list:
    """aiortc's receive codecs of `kind` that the node forwards, with their RTX."""
    codecs = RTCRtpReceiver.getCapabilities(kind).codecs
    return [c for c in codecs
            if c.mimeType.lower() in FORWARDED_MIME_TYPES or is_rtx(c)]


class PullPeer(IngestPeer):
    """One pull of one stream from an upstream: owns the receiving peer connection and the
    Source its tapped tracks make. The source is attached to the stream by the relay
    (``Stream.attach``), detached when the peer closes."""

    async def offer(self) -> str:
        """A recvonly offer for audio and video (ICE candidates gathered, no trickle)."""
        for kind in MEDIA_KINDS:
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(_receivable_codecs(kind))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> Source:
        """Apply the upstream's answer; returns the Source of what it will send."""
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except Exception as exc:  # aiortc raises assorted errors on an unusable answer
            raise NegotiationError(f"invalid SDP answer: {exc}") from exc
        receivers = {}
        for transceiver in media_transceivers(self.pc):
            codecs = media_codecs(transceiver)
            if codecs and transceiver.currentDirection != "inactive":
                receivers[transceiver.kind] = tap_ingest(transceiver, codecs,
                                                         self.media_flowing.set)
        if not receivers:
            raise NegotiationError("the upstream's answer has no codec this node forwards",
                                   status=406)
        self.source = Source(self.id, receivers)
        return self.source
