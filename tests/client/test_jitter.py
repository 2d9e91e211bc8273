"""The SDK viewer's loss recovery parts (unbroken.client.jitter) on real encoder output:
VP8 and H264 frames from aiortc's own encoders and packetizers, decoded by aiortc's own
decoders. Time is a clock the test moves (the buffer's waits are what is tested)."""

from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from unbroken.client.jitter import VideoJitterBuffer
from unbroken.media.nack import RetryingNackGenerator
from unbroken.media.keyframe import keyframe_detector

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=99,
                             parameters={"packetization-mode": "1",
                                         "profile-level-id": "42e01f"})
KEYFRAMES = (0, 40)  # frames encoded as keyframes
FRAME_S = 1 / 30


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def encoded(codec, n=16, first_seq=1000):
    """[(frame index, [RtpPacket...])]: noisy 320x240 pictures (several packets each)."""
    encoder = get_encoder(codec)
    rng = np.random.default_rng(7)
    seq = first_seq
    out = []
    for i in range(n):
        img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i * 3000, Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=i in KEYFRAMES)
        packets = []
        for j, payload in enumerate(payloads):
            packets.append(RtpPacket(payload_type=codec.payloadType, sequence_number=seq,
                                     timestamp=timestamp, marker=j == len(payloads) - 1,
                                     payload=payload))
            seq = (seq + 1) & 0xFFFF
        out.append((i, packets))
    return out


def new_buffer(codec, clock, **kwargs):
    detector = keyframe_detector(codec.mimeType)
    return VideoJitterBuffer(lambda p: depayload(codec, p.payload),
                             lambda p: detector(p.payload), clock=clock, **kwargs)


def decodes(codec, frames) -> int:
    """How many of `frames` (JitterFrames) aiortc's decoder turns into pictures."""
    decoder = get_decoder(codec)
    pictures = 0
    for frame in frames:
        pictures += len(decoder.decode(frame))
    return pictures


@pytest.mark.parametrize("codec", [VP8, H264], ids=["vp8", "h264"])
def test_in_order_packets_give_aiortcs_frames(codec):
    stream = encoded(codec)
    assert sum(len(packets) > 1 for _, packets in stream) > 8  # frames of several packets
    ours, stock = new_buffer(codec, Clock()), JitterBuffer(capacity=512, is_video=True)
    mine, theirs = [], []
    for _, packets in stream:
        for packet in packets:
            packet._data = depayload(codec, packet.payload)  # what aiortc's receiver does
            pli, frame = ours.add(packet)
            assert not pli
            if frame:
                mine.append(frame)
            _, frame = stock.add(packet)
            if frame:
                theirs.append(frame)
    assert [(f.data, f.timestamp) for f in mine] == [(f.data, f.timestamp) for f in theirs]
    assert len(mine) == len(stream) - 1  # the last one waits for the next frame's start
    assert decodes(codec, mine) == len(mine)


@pytest.mark.parametrize("codec", [VP8, H264], ids=["vp8", "h264"])
def test_a_packet_lost_for_good_costs_a_keyframe_request_then_goes_on_from_the_keyframe(codec):
    clock = Clock()
    skipped_to = []
    buffer = new_buffer(codec, clock, on_skip=skipped_to.append)
    stream = encoded(codec, n=44)
    lost = stream[3][1][1]  # a packet of the 4th frame (a delta frame) never arrives
    out, plis = [], []
    for index, packets in stream:
        clock.now += FRAME_S
        for packet in packets:
            if packet is lost:
                continue
            pli, frame = buffer.add(packet)
            if pli:
                plis.append((index, clock.now))
            if frame:
                out.append((index, frame))
    timestamps = {packets[0].timestamp: index for index, packets in stream}
    indexes = [timestamps[f.timestamp] for _, f in out]
    # the first keyframe after the loss: 40 (forced), or one x264 put in by itself
    detector = keyframe_detector(codec.mimeType)
    key = next(i for i, packets in stream if i > 3 and detector(packets[0].payload))
    assert key >= 20
    # frames 0-2, then nothing until that keyframe came complete: it and what follows
    assert indexes == [0, 1, 2] + list(range(key, len(stream) - 1)), indexes
    # a keyframe was asked for once the hole had held frames `hole_wait`, and again every
    # `pli_interval` while it still did
    started = 100.0 + 5 * FRAME_S  # the 5th frame's first packet shows the hole
    assert plis and all(index < key for index, _ in plis), plis
    assert plis[0][1] - started == pytest.approx(buffer.hole_wait, abs=FRAME_S + 1e-9)
    gaps = [b - a for (_, a), (_, b) in zip(plis, plis[1:])]
    assert all(buffer.pli_interval - 1e-9 <= gap <= buffer.pli_interval + FRAME_S for gap in gaps)
    assert buffer.skips == 1 and skipped_to == [stream[key][1][0].sequence_number]
    assert buffer.keyframe_requests == len(plis)
    # what comes out decodes: the decoder starts again at the keyframe
    assert decodes(codec, [f for _, f in out[3:]]) == len(out) - 3


def test_a_hole_repaired_in_time_loses_nothing():
    clock = Clock()
    buffer = new_buffer(VP8, clock)
    stream = encoded(VP8)
    late = stream[3][1][0]
    out = []
    for index, packets in stream:
        clock.now += FRAME_S
        for packet in packets:
            if packet is late:
                continue
            _, frame = buffer.add(packet)
            out += [frame] if frame else []
        if index == 5:  # its retransmission, 2 frames later (before `hole_wait`)
            _, frame = buffer.add(late)
            out += [frame] if frame else []
    assert buffer.skips == buffer.keyframe_requests == 0
    # every frame in order (one per packet added: all of them out before the end)
    timestamps = [packets[0].timestamp for _, packets in stream]
    assert [f.timestamp for f in out] == timestamps[:len(out)]
    assert len(out) == len(stream) - 1
    assert decodes(VP8, out) == len(out)


def test_late_packets_are_dropped_and_a_jump_starts_over():
    clock = Clock()
    buffer = new_buffer(VP8, clock)
    stream = encoded(VP8, n=4)
    for _, packets in stream:
        for packet in packets:
            buffer.add(packet)
    old = stream[2][1][-1]
    assert buffer.add(old) == (False, None)  # a duplicate of what went out: too late
    far = RtpPacket(payload_type=97, sequence_number=(old.sequence_number + 5000) & 0xFFFF,
                    timestamp=old.timestamp + 90000, payload=stream[0][1][0].payload)
    pli, frame = buffer.add(far)
    assert pli and frame is None and buffer.restarts == 1


def test_sequence_numbers_wrap():
    clock = Clock()
    buffer = new_buffer(VP8, clock)
    stream = encoded(VP8, n=8, first_seq=65530)
    out = [f for _, packets in stream for p in packets for _, f in [buffer.add(p)] if f]
    assert len(out) == 7 and decodes(VP8, out) == 7


def test_nacks_are_asked_again_until_the_packet_comes():
    clock = Clock()
    nacks = RetryingNackGenerator(retry_interval=0.1, clock=clock)
    packet = lambda seq: RtpPacket(payload_type=97, sequence_number=seq)  # noqa: E731
    assert nacks.add(packet(10)) is False
    assert nacks.add(packet(12)) is True and nacks.missing == {11}  # a new gap: NACK
    clock.now += 0.05
    assert nacks.add(packet(13)) is False  # asked 50 ms ago
    clock.now += 0.06
    assert nacks.add(packet(14)) is True and nacks.retries == 1  # still missing: again
    clock.now += 0.2
    assert nacks.add(packet(11)) is False and not nacks.missing  # it came
    assert nacks.add(packet(17)) is True and nacks.missing == {15, 16}
    nacks.forget_before(16)  # the jitter buffer went on from 16
    assert nacks.missing == {16}
    nacks.forget_before(18)
    clock.now += 1.0
    assert nacks.add(packet(18)) is False and not nacks.missing
