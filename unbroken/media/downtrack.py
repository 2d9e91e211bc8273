"""One subscriber's track: rewrites shared packets for its session and answers its RTCP."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc import clock
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
)

from .history import PacketHistory
from .munger import RtpMunger, seq_delta
from .packet import ForwardPacket, OutputProfile
from .rtc_internals import PacketWriter, sender_cname, sender_report
from .sink import SenderReports, TrackSink

__all__ = ["DownTrack"]

MAX_HELD_PACKETS = 300
# a track seeded with a keyframe at most this old (s) asks for no new one; an older seed
# is played if the connection is up before the fresh keyframe it asks for arrives (a
# browser's playout keeps the age of the first frame it shows as extra latency)
FRESH_KEYFRAME_S = 0.1


class DownTrack(TrackSink):
    """One subscriber's track of one kind: owns its sequence/timestamp rewriting (munger),
    its hold of packets until the connection is up, its RTCP from the subscriber (NACK →
    RTX from the stream's shared history, PLI/FIR, receiver reports) and the values of
    its sender reports.

    On the native path, once connected and anchored on a source, the track arms its
    `slot` (a _fastpath.Slot): the stream then forwards its packets in C (Sender.spread),
    which does the munger's rewrite on the slot's copy of its state, until a packet of
    another source hands the track back here (`write` disarms it first). Whatever reads
    the munger or the counters syncs from the slot (`_sync`)."""

    def __init__(self, kind: str, mime: str, profile: OutputProfile, ssrc: int,
                 clock_rate: int, writer: PacketWriter, request_keyframe: Callable[[], None],
                 rtx_payload_type: int | None = None, rtx_ssrc: int | None = None,
                 sender=None, history: PacketHistory | None = None) -> None:
        self.kind = kind
        self.mime = mime
        self.sender = sender  # the aiortc sender whose sender reports we feed (or None)
        self.profile = profile
        self.ssrc = ssrc
        self.rtx_payload_type = rtx_payload_type
        self.rtx_ssrc = rtx_ssrc
        self.clock_rate = clock_rate
        self.writer = writer
        self.request_keyframe = request_keyframe
        self.munger = RtpMunger(clock_rate)
        # the stream's packets of this kind by source sequence number (Stream.history)
        self.history = history if history is not None else PacketHistory()
        self.slot = None  # the native path's Slot, once armed the first time
        self._closed = False
        self._slot_dropped = 0  # a closed slot's drops
        self._rtx_seq = 1
        # called once, when the first packet went out (the peer's "media flows" signal)
        self.on_first_packet: Callable[[], None] | None = None
        self._connected = False
        self._held: list[ForwardPacket] | None = None
        self.last_in_ts = 0
        self._packets = 0  # written here (the slot counts its own)
        self._octets = 0
        self.nacks = 0
        self.retransmits = 0
        self.keyframe_requests = 0
        self.remote_loss = 0
        self.remote_jitter = 0

    def start(self) -> None:
        """The subscription begins: ask for a keyframe now, while ICE and DTLS connect;
        its packets are held until the connection is up (first frame sooner). A track
        seeded with the stream's latest keyframe plays from it if the connection is up
        before a fresher one arrives, and asks for none if it is fresh
        (FRESH_KEYFRAME_S): joiners never wait for a keyframe, and a burst of them asks
        the publisher for at most one per KEYFRAME_REQUEST_INTERVAL (receiver.py)."""
        if self.kind != "video":
            return
        if self._held is None or time.monotonic() - self._held[0].arrival > FRESH_KEYFRAME_S:
            self.request_keyframe()

    def seed(self, packets: tuple[ForwardPacket, ...]) -> None:
        """Start from the stream's latest keyframe (held like the packets that arrive
        before the connection is up): the first frame need not wait for a new keyframe."""
        if (self.kind == "video" and not self._connected and self._held is None and packets
                and packets[0].keyframe_start):
            self._held = list(packets[:MAX_HELD_PACKETS])

    def write(self, fp: ForwardPacket, now: float) -> None:
        slot = self.slot
        if slot is not None and slot.armed:  # handed back by Sender.spread: another source
            self._disarm()
        if not self._connected:
            if not self.writer.ready:
                self._hold(fp)
                return
            self._go(now)
        self._forward(fp, now)

    def connection_up(self) -> None:
        """The peer connection is up: send what is held now, not at the next packet (up
        to a frame interval later)."""
        if not self._connected and self.writer.ready:
            self._go(time.monotonic())

    def _go(self, now: float) -> None:
        self._connected = True
        held, self._held = self._held, None
        if held:
            for packet in held:
                self._forward(packet, now)
        elif self.kind == "video":
            self.request_keyframe()

    def _hold(self, fp: ForwardPacket) -> None:
        """Before the connection is up, keep the video from its latest keyframe on."""
        if self.kind != "video":
            return
        if fp.keyframe_start:
            self._held = [fp]
        elif self._held is not None:
            if len(self._held) < MAX_HELD_PACKETS:
                self._held.append(fp)
            else:
                self._held = None  # too long a wait: start at a fresh keyframe instead

    def _forward(self, fp: ForwardPacket, now: float) -> None:
        munger = self.munger
        if fp.ssrc != munger.source_ssrc:
            if self.kind == "video" and not fp.keyframe_start:
                munger.unanchor()
                self.request_keyframe()
                return
            munger.anchor(fp.ssrc, fp.sequence_number, fp.timestamp, now)
        mapped = munger.rewrite(fp.sequence_number, fp.timestamp, now)
        if mapped is None:
            return
        seq, ts = mapped
        if self.writer.write(fp.template(self.profile), seq, ts, self.ssrc):
            self.last_in_ts = fp.timestamp
            if not self.packets and self.on_first_packet is not None:
                self.on_first_packet()
            self._packets += 1
            self._octets += len(fp.payload)
            if self.writer.native and not self._closed:
                self._arm()

    def _arm(self) -> None:
        """Hand the steady state to the native path: the slot takes the munger's state."""
        slot = self.slot
        if slot is None:
            slot = self.slot = self.writer.make_slot(self.ssrc)
            if slot is None:
                return
        m = self.munger
        slot.source_ssrc = m.source_ssrc
        slot.seq_offset = m.seq_offset
        slot.ts_offset = m.ts_offset
        slot.highest_in_seq = m.highest_in_seq
        slot.start_in_seq = m.start_in_seq
        slot.last_out_seq = m.last_out_seq
        slot.last_out_ts = m.last_out_ts
        slot.last_out_time = m.last_out_time
        slot.last_in_ts = self.last_in_ts
        slot.armed = 1

    def _sync(self) -> None:
        """Bring the munger up to date with what the armed slot sent."""
        slot = self.slot
        if slot is not None and slot.armed:
            m = self.munger
            m.highest_in_seq = slot.highest_in_seq
            m.last_out_seq = slot.last_out_seq
            m.last_out_ts = slot.last_out_ts
            m.last_out_time = slot.last_out_time
            self.last_in_ts = slot.last_in_ts

    def _disarm(self) -> None:
        if self.slot is not None and self.slot.armed:
            self._sync()
            self.slot.armed = 0

    def close(self) -> None:
        """The track is no longer fed: its slot (and the slot's socket descriptor) goes,
        its counts stay."""
        self._closed = True
        slot = self.slot
        if slot is not None:
            self._disarm()
            self._packets += slot.packets
            self._octets += slot.octets
            self._slot_dropped += slot.dropped
            self.slot = None

    @property
    def packets(self) -> int:
        """Packets handed to the writer or sent by the slot."""
        return self._packets + (self.slot.packets if self.slot is not None else 0)

    @property
    def octets(self) -> int:
        return self._octets + (self.slot.octets if self.slot is not None else 0)

    @property
    def sent(self) -> int:
        """Packets sent: those the writer accepted, less those it then could not send
        (a batched writer learns that at the batch's flush), and the slot's."""
        return self.packets - self.writer.unsent

    @property
    def dropped(self) -> int:
        slot = self.slot
        return self.writer.dropped + self._slot_dropped + (slot.dropped if slot is not None else 0)

    def source_changed(self) -> None:
        """The publisher behind this track went away: continue at its successor's start."""
        self._disarm()
        self.munger.unanchor()

    async def handle_rtcp(self, packet) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            for seq in packet.lost:
                self.nacks += 1
                self._retransmit(seq)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.keyframe_requests += 1
            self.request_keyframe()
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    self.remote_loss = report.packets_lost
                    self.remote_jitter = report.jitter

    def _retransmit(self, seq: int) -> None:
        """Send again the packet this track sent as `seq`, if the stream still holds it
        and it came from the source the track is anchored on now."""
        self._sync()
        m = self.munger
        if m.source_ssrc is None:
            return
        in_seq = (seq - m.seq_offset) & 0xFFFF
        if seq_delta(in_seq, m.start_in_seq) < 0 or seq_delta(in_seq, m.highest_in_seq) > 0:
            return
        held = self.history.get(in_seq)
        if held is None or held[0].ssrc != m.source_ssrc:
            return
        fp = held[0]
        ts = (fp.timestamp + m.ts_offset) & 0xFFFFFFFF
        if self.rtx_payload_type is not None:
            data = fp.build_rtx(self.profile, self.rtx_payload_type, self._rtx_seq, seq, ts,
                                self.rtx_ssrc)
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            sent = self.writer.write_plain(data)
        else:
            sent = self.writer.write(fp.template(self.profile), seq, ts, self.ssrc)
        if sent:
            self.retransmits += 1

    def send_sender_report(self, source_reports: SenderReports) -> None:
        """Send the subscriber this track's RTCP sender report (with its CNAME), once it
        has sent media and while it is anchored on a source. The node calls this for
        every track from one timer; aiortc's own timer per sender is off
        (rtc_internals.quiet_sender_rtcp)."""
        if self.sender is None or self.munger.source_ssrc is None or not self.sent:
            return
        self._sync()
        ntp, rtp = self.sender_report_values(source_reports.get(self.munger.source_ssrc))
        self.writer.write_rtcp(sender_report(self.ssrc, ntp, rtp, self.sent, self.octets,
                                             sender_cname(self.sender)))

    def sender_report_values(self, source_report: tuple[int, int] | None) -> tuple[int, int]:
        """(NTP time, outgoing RTP timestamp) of the last packet sent, for sender reports.

        With the publisher's own sender report the NTP time is the publisher's capture
        clock, which keeps audio and video of one publisher in sync at the viewer.
        """
        self._sync()
        out_ts = self.munger.last_out_ts
        if source_report is not None:
            sr_ntp, sr_rtp = source_report
            delta = (self.last_in_ts - sr_rtp) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 1 << 32
            return sr_ntp + (delta << 32) // self.clock_rate, out_ts
        last = self.munger.last_out_time
        age = 0.0 if last is None else max(0.0, time.monotonic() - last)
        return clock.current_ntp_time() - int(age * (1 << 32)), out_ts

    def snapshot(self) -> dict:
        return {
            "packets": self.sent,
            "bytes": self.octets,
            "nacks": self.nacks,
            "retransmits": self.retransmits,
            "keyframe_requests": self.keyframe_requests,
            "dropped": self.dropped,
            "remote_packets_lost": self.remote_loss,
        }
