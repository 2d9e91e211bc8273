from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from unbroken.media.packet import ForwardPacket, OutputProfile

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def profile(pt, mid, ids):
    params = RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=ids[0], uri=MID),
        RTCRtpHeaderExtensionParameters(id=ids[1], uri=ABS)])
    m = HeaderExtensionsMap()
    m.configure(params)
    return OutputProfile.shared(pt, mid, m, ids), m


def source_packet():
    p = RtpPacket(payload_type=96, marker=1, sequence_number=42, timestamp=1234, ssrc=999,
                  payload=b"\x10\x00\x9d\x01\x2a" + bytes(100))
    p.extensions.abs_send_time = 0x123456
    return p


def test_rewrites_header_and_extensions_per_profile():
    fp = ForwardPacket(source_packet(), True, 0.0)
    prof_a, map_a = profile(97, "0", (1, 3))
    prof_b, map_b = profile(120, "video", (4, 9))
    a = RtpPacket.parse(fp.template(prof_a), map_a)
    b = RtpPacket.parse(fp.template(prof_b), map_b)
    # the writer patches sequence number, timestamp and SSRC (bytes 2-11) per subscriber
    assert (a.payload_type, a.sequence_number, a.timestamp, a.ssrc) == (97, 0, 0, 0)
    assert (b.payload_type, b.sequence_number, b.timestamp, b.ssrc) == (120, 0, 0, 0)
    assert fp.template(prof_a) is fp.template(prof_a)  # built once per profile
    assert a.extensions.mid == "0" and b.extensions.mid == "video"
    assert a.extensions.abs_send_time == b.extensions.abs_send_time == 0x123456
    assert a.payload == b.payload == fp.payload and a.marker == 1


def test_rtx_carries_the_original_sequence_number():
    fp = ForwardPacket(source_packet(), True, 0.0)
    prof, m = profile(97, "0", (1, 3))
    rtx = RtpPacket.parse(fp.build_rtx(prof, 98, 5, 777, 9000, 0xCCCC), m)
    assert rtx.payload_type == 98 and rtx.ssrc == 0xCCCC and rtx.sequence_number == 5
    assert rtx.payload[:2] == (777).to_bytes(2, "big") and rtx.payload[2:] == fp.payload
