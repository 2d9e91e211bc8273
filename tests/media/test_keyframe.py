import av
import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from unbroken.media.keyframe import h264_is_keyframe_start, keyframe_detector, vp8_is_keyframe_start

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=99,
                             parameters={"packetization-mode": "1",
                                         "profile-level-id": "42e01f"})


def _frames(n=12):
    for i in range(n):
        img = np.full((240, 320, 3), (i * 20) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i * 3000
        frame.time_base = __import__("fractions").Fraction(1, 90000)
        yield frame


def _packetize(codec):
    """(payloads, keyframe?) per encoded frame, from aiortc's own encoder/packetizer."""
    encoder = get_encoder(codec)
    out = []
    for i, frame in enumerate(_frames()):
        force = i in (0, 7)
        payloads, _ = encoder.encode(frame, force_keyframe=force)
        out.append((payloads, force))
    return out


def test_vp8_keyframes_found_only_at_their_first_packet():
    for payloads, is_key in _packetize(VP8):
        flags = [vp8_is_keyframe_start(p) for p in payloads]
        assert flags[0] == is_key
        assert not any(flags[1:])


def test_h264_keyframes_found_at_start():
    for payloads, is_key in _packetize(H264):
        assert h264_is_keyframe_start(payloads[0]) == is_key
        if not is_key:
            assert not any(h264_is_keyframe_start(p) for p in payloads)


def test_h264_packet_kinds():
    assert h264_is_keyframe_start(bytes([0x67, 0x42]))  # SPS
    assert h264_is_keyframe_start(bytes([0x65, 0x88]))  # IDR slice
    assert not h264_is_keyframe_start(bytes([0x41, 0x9A]))  # non-IDR slice
    fu_start_idr = bytes([0x7C, 0x85, 0x00])
    fu_middle_idr = bytes([0x7C, 0x05, 0x00])
    assert h264_is_keyframe_start(fu_start_idr)
    assert not h264_is_keyframe_start(fu_middle_idr)
    stap = bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE])
    assert h264_is_keyframe_start(stap)
    broken_stap = bytes([0x78, 0x00, 0x40, 0x67])
    assert not h264_is_keyframe_start(broken_stap)
    assert not h264_is_keyframe_start(b"")


def test_vp8_malformed_payloads_do_not_raise():
    for payload in (b"", b"\x90", b"\x90\x80", b"\x90\x80\x80", b"\x10"):
        vp8_is_keyframe_start(payload)


def test_detector_per_codec():
    assert keyframe_detector("video/VP8") is vp8_is_keyframe_start
    assert keyframe_detector("video/H264") is h264_is_keyframe_start
    assert keyframe_detector("audio/opus") is None
