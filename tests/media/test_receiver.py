from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from unbroken.media.receiver import MAX_SEQUENCE_GAP, TrackReceiver

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def receiver():
    holes, packets = [], []
    r = TrackReceiver("video", {96: VP8}, VP8, lambda ssrc: None)
    r.on_packet = packets.append
    r.on_discontinuity = lambda: holes.append(len(packets))
    return r, holes, packets


def feed(r, seqs, ssrc=1):
    for seq in seqs:
        r.handle_rtp(RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, ssrc=ssrc,
                               payload=b"\x90\x80\x01\x00"))


def test_a_long_run_of_lost_packets_is_a_discontinuity():
    r, holes, packets = receiver()
    feed(r, range(100, 110))
    feed(r, range(110 + MAX_SEQUENCE_GAP + 1, 110 + MAX_SEQUENCE_GAP + 5))
    assert holes == [10]  # announced before the packet after the hole is forwarded
    assert len(packets) == 14


def test_short_losses_reordering_wraps_and_new_sources_are_not():
    r, holes, _ = receiver()
    feed(r, [65530, 65531, 65535, 2, 1, 3])  # 3 lost, wrap, one late
    feed(r, range(5000, 5005), ssrc=2)  # a new source starts anywhere
    feed(r, [5005 + MAX_SEQUENCE_GAP])  # exactly MAX_SEQUENCE_GAP missing: NACK's job
    assert holes == []


def test_an_h264_keyframe_starts_once_though_several_packets_look_like_a_start():
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
    packets = []
    r = TrackReceiver("video", {102: h264}, h264, lambda ssrc: None)
    r.on_packet = packets.append
    stap_sps_pps = bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE])
    fu_idr_start, fu_idr_end = bytes([0x7C, 0x85, 0x00]), bytes([0x7C, 0x45, 0x00])
    for seq, (ts, payload) in enumerate([(3000, stap_sps_pps), (3000, fu_idr_start),
                                         (3000, fu_idr_end), (6000, fu_idr_start)]):
        r.handle_rtp(RtpPacket(payload_type=102, sequence_number=seq, timestamp=ts, ssrc=9,
                               payload=payload))
    assert [p.keyframe_start for p in packets] == [True, False, False, True]
    assert r.keyframes == 2
