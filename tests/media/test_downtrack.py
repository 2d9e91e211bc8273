import asyncio
import time

from aiortc.rtp import (RTCP_PSFB_PLI, RTCP_RTPFB_NACK, HeaderExtensionsMap, RtcpPsfbPacket,
                        RtcpRtpfbPacket, RtpPacket)

from unbroken.media.downtrack import FRESH_KEYFRAME_S, MAX_HELD_PACKETS, DownTrack
from unbroken.media.packet import ForwardPacket, OutputProfile

OUT_SSRC = 5000


class FakeWriter:
    """Stands in for PacketWriter: records (seq, ts, ssrc) of what would be sent."""

    native = False

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.sent: list[tuple[int, int, int]] = []
        self.plain: list[bytes] = []
        self.dropped = 0
        self.unsent = 0

    def write(self, template: bytes, seq: int, ts: int, ssrc: int) -> bool:
        self.sent.append((seq, ts, ssrc))
        return True

    def write_plain(self, data: bytes) -> bool:
        self.plain.append(data)
        return True


def packet(seq, ts, keyframe=False, ssrc=1, arrival=0.0):
    return ForwardPacket(RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts,
                                   ssrc=ssrc, payload=b"\x10\x00" + bytes(20)), keyframe,
                         arrival)


def track(kind="video", writer=None, rtx=False):
    keyframe_requests = []
    t = DownTrack(kind, "video/vp8", OutputProfile.shared(97, "0", HeaderExtensionsMap(), ()),
                  OUT_SSRC, 90000, writer or FakeWriter(), lambda: keyframe_requests.append(1),
                  rtx_payload_type=98 if rtx else None, rtx_ssrc=6000 if rtx else None)
    return t, t.writer, keyframe_requests


def test_video_starts_at_a_keyframe_with_its_own_numbering():
    t, writer, requests = track()
    t.write(packet(100, 9000), 0.0)  # not a keyframe: asks for one, sends nothing
    assert writer.sent == [] and requests
    t.write(packet(101, 12000, keyframe=True), 0.0)
    t.write(packet(102, 15000), 0.0)
    (s1, ts1, ssrc1), (s2, ts2, _) = writer.sent
    assert ssrc1 == OUT_SSRC and (s2 - s1) & 0xFFFF == 1 and ts2 - ts1 == 3000
    assert t.packets == 2


def test_packets_are_held_from_the_latest_keyframe_until_connected():
    writer = FakeWriter(ready=False)
    t, _, requests = track(writer=writer)
    t.start()
    assert requests == [1]  # asked while connecting
    for seq, key in ((10, True), (11, False), (12, True), (13, False)):
        t.write(packet(seq, seq * 3000, keyframe=key), 0.0)
    assert writer.sent == []
    writer.ready = True
    t.write(packet(14, 14 * 3000), 0.0)
    assert len(writer.sent) == 3  # 12 (keyframe), 13, 14
    assert requests == [1]  # the held keyframe serves: no second request


def test_a_too_long_hold_gives_up_and_asks_again_when_connected():
    writer = FakeWriter(ready=False)
    t, _, requests = track(writer=writer)
    t.write(packet(0, 0, keyframe=True), 0.0)
    for seq in range(1, MAX_HELD_PACKETS + 2):
        t.write(packet(seq, seq * 3000), 0.0)
    writer.ready = True
    t.write(packet(1000, 3_000_000), 0.0)
    assert writer.sent == [] and requests  # waits for a fresh keyframe


def test_a_track_seeded_with_a_fresh_keyframe_plays_it_once_connected_and_asks_none():
    writer = FakeWriter(ready=False)
    t, _, requests = track(writer=writer)
    t.seed((packet(20, 60000, keyframe=True, arrival=time.monotonic()), packet(21, 63000)))
    t.start()
    assert requests == []  # the seeded keyframe serves this joiner
    t.write(packet(22, 66000), 0.0)  # still connecting: kept after the seed
    writer.ready = True
    t.write(packet(23, 69000), 0.0)
    seqs = [s for s, _, _ in writer.sent]
    assert len(seqs) == 4 and all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
    assert [ts - writer.sent[0][1] for _, ts, _ in writer.sent] == [0, 3000, 6000, 9000]
    assert requests == []


def test_an_older_seed_asks_for_a_fresh_keyframe_which_replaces_it_if_in_time():
    writer = FakeWriter(ready=False)
    t, _, requests = track(writer=writer)
    old = time.monotonic() - FRESH_KEYFRAME_S - 0.05
    t.seed((packet(20, 60000, keyframe=True, arrival=old), packet(21, 63000, arrival=old)))
    t.start()
    assert requests == [1]
    t.write(packet(22, 66000, keyframe=True), 0.0)  # the fresh one, before the connection
    writer.ready = True
    t.connection_up()
    assert len(writer.sent) == 1  # starts at the fresh keyframe, not the older seed
    late = FakeWriter(ready=False)
    t2, _, _ = track(writer=late)
    t2.seed((packet(20, 60000, keyframe=True, arrival=old), packet(21, 63000, arrival=old)))
    t2.start()
    late.ready = True
    t2.connection_up()  # up before the fresh one: plays the seed at once
    assert len(late.sent) == 2


def test_held_packets_go_out_when_the_connection_is_up_not_at_the_next_packet():
    writer = FakeWriter(ready=False)
    t, _, requests = track(writer=writer)
    t.seed((packet(20, 60000, keyframe=True), packet(21, 63000)))
    t.connection_up()  # not ready yet (no SRTP session): nothing happens
    assert writer.sent == []
    writer.ready = True
    t.connection_up()
    assert len(writer.sent) == 2 and t.packets == 2
    t.connection_up()  # once only
    t.write(packet(22, 66000), 0.0)
    assert len(writer.sent) == 3 and requests == []
    empty = FakeWriter(ready=True)
    t2, _, requests2 = track(writer=empty)
    t2.connection_up()  # nothing held: asks for a keyframe at once
    assert empty.sent == [] and requests2 == [1]


def test_a_seed_without_a_keyframe_start_or_for_audio_is_ignored():
    t, writer, requests = track(writer=FakeWriter(ready=False))
    t.seed((packet(20, 60000), packet(21, 63000)))
    t.start()
    assert requests == [1]  # nothing usable: asks as before
    a, _, _ = track(kind="audio", writer=FakeWriter(ready=False))
    a.seed((packet(20, 60000, keyframe=True),))
    a.writer.ready = True
    a.write(packet(21, 61000, keyframe=True), 0.0)
    assert len(a.writer.sent) == 1


def test_a_new_source_continues_the_numbering():
    t, writer, _ = track()
    t.write(packet(100, 9000, keyframe=True), 0.0)
    t.write(packet(101, 12000), 0.0)
    t.source_changed()
    t.write(packet(7, 500, keyframe=True, ssrc=2), 0.0)
    seqs = [s for s, _, _ in writer.sent]
    assert [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])] == [1, 1]


def test_nack_is_answered_from_history_by_rtx_and_pli_asks_upstream():
    t, writer, requests = track(rtx=True)
    for seq in (100, 101):  # as the stream does: its shared history, then the track
        p = packet(seq, 9000, keyframe=seq == 100)
        t.history.add(seq, p.timestamp, p)
        t.write(p, 0.0)
    sent_seq = writer.sent[0][0]
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=OUT_SSRC)
    nack.lost = [sent_seq, (sent_seq + 50) & 0xFFFF]  # the second was never sent

    asyncio.run(t.handle_rtcp(nack))
    assert t.nacks == 2 and t.retransmits == 1 and len(writer.plain) == 1
    rtx = RtpPacket.parse(writer.plain[0])
    assert rtx.payload[:2] == sent_seq.to_bytes(2, "big") and rtx.ssrc == 6000
    # a packet of another source under the same number is not this track's to resend
    other = packet(101, 9000, ssrc=2)
    t.history.add(101, 9000, other)
    nack.lost = [(sent_seq + 1) & 0xFFFF]
    asyncio.run(t.handle_rtcp(nack))
    assert t.retransmits == 1
    before = len(requests)
    asyncio.run(t.handle_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=OUT_SSRC)))
    assert len(requests) == before + 1 and t.keyframe_requests == 1


def test_sender_report_follows_the_publishers_clock():
    t, _, _ = track()
    t.write(packet(100, 90_000, keyframe=True), 0.0)
    ntp, rtp = t.sender_report_values((5 << 32, 0))  # publisher: ts 0 at NTP 5 s
    assert ntp == 6 << 32  # 90 000 ticks later: one second on
    assert rtp == t.munger.last_out_ts


def test_sender_reports_are_sent_only_with_an_aiortc_sender():
    t, _, _ = track()
    t.write(packet(100, 90_000, keyframe=True), 0.0)
    t.send_sender_report({1: (5 << 32, 0)})  # no sender: nothing to send, no error
