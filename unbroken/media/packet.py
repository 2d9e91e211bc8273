"""One ingested RTP packet, shared by every subscriber it is forwarded to.

The payload is kept once; each subscriber header-extension profile (payload
type, mid and extension ids) gets its serialized packet built once per packet,
and each subscriber's writer then only patches sequence number, timestamp and SSRC.
"""

from __future__ import annotations

import struct
import weakref

from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket

__all__ = ["ForwardPacket", "OutputProfile"]


class OutputProfile:
    """How one subscriber's track wants its packets: payload type, mid, extension ids.

    Get them from `shared()`: subscribers that negotiated alike share one profile
    object, which keys the per-packet templates by identity (cheap to hash)."""

    __slots__ = ("payload_type", "mid", "extensions_map", "key", "__weakref__")
    _shared: "weakref.WeakValueDictionary[tuple, OutputProfile]" = weakref.WeakValueDictionary()

    def __init__(self, payload_type: int, mid: str | None, extensions_map: HeaderExtensionsMap,
                 extension_ids: tuple) -> None:
        self.payload_type = payload_type
        self.mid = mid
        self.extensions_map = extensions_map
        self.key = (payload_type, mid, extension_ids)

    @classmethod
    def shared(cls, payload_type: int, mid: str | None, extensions_map: HeaderExtensionsMap,
               extension_ids: tuple) -> "OutputProfile":
        key = (payload_type, mid, extension_ids)
        profile = cls._shared.get(key)
        if profile is None:
            profile = cls(payload_type, mid, extensions_map, extension_ids)
            cls._shared[key] = profile
        return profile


class ForwardPacket:
    """One ingested RTP packet as shared by every sink: its fields, payload, and the
    serialized header templates built once per OutputProfile."""

    __slots__ = ("ssrc", "sequence_number", "timestamp", "marker", "payload", "padding_size",
                 "audio_level", "abs_send_time", "keyframe_start", "arrival", "_templates")

    def __init__(self, packet: RtpPacket, keyframe_start: bool, arrival: float) -> None:
        self.ssrc = packet.ssrc
        self.sequence_number = packet.sequence_number
        self.timestamp = packet.timestamp
        self.marker = packet.marker
        self.payload = packet.payload
        self.padding_size = packet.padding_size
        self.audio_level = packet.extensions.audio_level
        self.abs_send_time = packet.extensions.abs_send_time
        self.keyframe_start = keyframe_start
        self.arrival = arrival
        self._templates: dict = {}

    def template(self, profile: OutputProfile) -> bytes:
        """The serialized packet for this profile, with zero seq/timestamp/SSRC."""
        data = self._templates.get(profile)
        if data is None:
            out = RtpPacket(payload_type=profile.payload_type, marker=self.marker,
                            payload=self.payload)
            out.padding_size = self.padding_size
            ext = HeaderExtensions()
            ext.mid = profile.mid
            ext.abs_send_time = self.abs_send_time
            ext.audio_level = self.audio_level
            out.extensions = ext
            data = out.serialize(profile.extensions_map)
            self._templates[profile] = data
        return data

    def build_rtx(self, profile: OutputProfile, rtx_payload_type: int, rtx_seq: int,
                  original_seq: int, ts: int, rtx_ssrc: int) -> bytes:
        """An RTX packet (RFC 4588) carrying this packet as sent with `original_seq`."""
        out = RtpPacket(payload_type=rtx_payload_type, marker=self.marker,
                        sequence_number=rtx_seq, timestamp=ts, ssrc=rtx_ssrc,
                        payload=struct.pack("!H", original_seq) + self.payload)
        ext = HeaderExtensions()
        ext.mid = profile.mid
        out.extensions = ext
        return out.serialize(profile.extensions_map)
