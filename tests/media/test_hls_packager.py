"""The HLS packager on synthetic RTP (aiortc's own encoders and packetizers), no network:
segments cut at keyframes, parts, discontinuities, the end, loss, audio only, and the
playlist model's blocking-reload answers."""

import fractions
import io
import time

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from unbroken.client.framecode import read_counter
from unbroken.client.hls import parse_playlist
from unbroken.client.testsrc import TestPatternVideoTrack
from unbroken.media.hls import HlsPackager, HlsSettings, Part, Playlist, rewrite_continuity
from unbroken.media.keyframe import keyframe_detector
from unbroken.media.packet import ForwardPacket

pytestmark = pytest.mark.timeout(60)

MIMES = {"h264": "video/h264", "vp8": "video/vp8"}


def rtp_stream(codec: str, seconds: float, keyframe_every: float | None = 1.0,
               audio: bool = True, ssrc: int = 1000, t0: float | None = None, skip=()):
    """(kind, mime, clock rate, ForwardPacket) in arrival order, like a publisher's
    (arrival times on the monotonic clock from `t0`, default now)."""
    t0 = time.monotonic() if t0 is None else t0
    mime = MIMES[codec]
    out = []
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000,
                                                payloadType=96))
    detect = keyframe_detector(mime)
    pattern = TestPatternVideoTrack()
    seq = 0
    for i in range(int(seconds * 30)):
        frame = pattern._draw(i)
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        force = i == 0 or (keyframe_every and i % int(keyframe_every * 30) == 0)
        payloads, ts = encoder.encode(frame, bool(force))
        for j, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=ts,
                               ssrc=ssrc, marker=j == len(payloads) - 1, payload=payload)
            seq += 1
            if i in skip:
                continue
            out.append(("video", mime, 90000, ForwardPacket(packet, detect(payload),
                                                            t0 + i / 30)))
    if audio:
        opus = get_encoder(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000,
                                                 channels=2, payloadType=111))
        tone = (3000 * np.sin(2 * np.pi * 440 * np.arange(960) / 48000)).astype(np.int16)
        for k in range(int(seconds * 50)):
            frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16",
                                               layout="mono")
            frame.sample_rate, frame.pts = 48000, k * 960
            frame.time_base = fractions.Fraction(1, 48000)
            payloads, ts = opus.encode(frame)
            for payload in payloads:
                packet = RtpPacket(payload_type=111, sequence_number=k & 0xFFFF, timestamp=ts,
                                   ssrc=ssrc + 1, payload=payload)
                out.append(("audio", "audio/opus", 48000,
                            ForwardPacket(packet, True, t0 + k * 0.02)))
    out.sort(key=lambda item: item[3].arrival)
    return out


class Recorder:
    def __init__(self):
        self.keyframe_requests = 0

    def __call__(self):
        self.keyframe_requests += 1


def package(packets_by_source, settings=None, end=True):
    """Run a packager over sources (lists of packets; None = the publisher went away)."""
    asks = Recorder()
    packager = HlsPackager("t", settings or HlsSettings(), request_keyframe=asks)
    for packets in packets_by_source:
        if packets is None:
            packager.set_source(None)
            continue
        kinds = {kind: mime for kind, mime, _, _ in packets}
        packager.set_source(kinds)
        for item in packets:
            packager.push(*item)
    if end:
        packager.end()
    deadline = time.monotonic() + 30
    while not packager.playlist.ended and end:
        assert time.monotonic() < deadline and packager.alive
        time.sleep(0.02)
    packager.close()
    return packager, asks


def decode(data: bytes):
    with av.open(io.BytesIO(data), format="mpegts") as c:
        video = [read_counter(f) for f in c.decode(video=0)] if c.streams.video else []
    with av.open(io.BytesIO(data), format="mpegts") as c:
        audio = sum(1 for _ in c.decode(audio=0)) if any(
            s.type == "audio" for s in c.streams) else 0
    return video, audio


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_segments_cut_at_keyframes_with_parts(codec):
    packager, _ = package([rtp_stream(codec, 4.0)])
    pl = packager.playlist
    text = pl.render()
    parsed = parse_playlist(text)
    assert parsed.ended and parsed.target_duration == 1
    assert len(parsed.segments) >= 3
    everything = b""
    for seg in parsed.segments:
        data = pl.data(seg.msn)
        assert seg.duration <= 1.5
        if seg.msn >= parsed.segments[-1].msn - 3:  # parts are listed for the last 4
            assert seg.parts and seg.parts[0].independent
            assert all(p.duration <= 0.5 + 1e-6 for p in seg.parts)
            assert b"".join(pl.data(seg.msn, i) for i in range(len(seg.parts))) == data
        else:
            assert not seg.parts
        video, _ = decode(data)
        assert video[0] is not None  # each segment starts with a decodable keyframe
        everything += data
    video, audio = decode(everything)
    assert len(video) >= 110 and audio >= 150
    steps = [b - a for a, b in zip(video, video[1:])]
    assert set(steps) == {1}, steps
    assert packager.stats()["mode"] == ("passthrough" if codec == "h264" else "transcode")


def test_continuity_counters_run_on_across_parts():
    packager, _ = package([rtp_stream("h264", 2.0)])
    pl = packager.playlist
    data = b"".join(pl.data(s.msn) for s in pl.segments)
    last = {}
    for i in range(0, len(data), 188):
        assert data[i] == 0x47
        pid = ((data[i + 1] & 0x1F) << 8) | data[i + 2]
        if data[i + 3] & 0x10:
            cc = data[i + 3] & 0x0F
            if pid in last:
                assert cc == (last[pid] + 1) % 16, (i, pid)
            last[pid] = cc
    # the helper itself renumbers from given counters
    assert rewrite_continuity(bytes([0x47, 0, 0, 0x10]) + bytes(184), {0: 5})[3] == 0x16


def test_publisher_asked_for_keyframes_when_it_sends_none():
    """With no periodic keyframes, the packager asks (PLI) about once per segment, and a
    source that never answers gets its segments cut anyway within the target."""
    packager, asks = package([rtp_stream("h264", 4.0, keyframe_every=None, audio=False)])
    assert asks.keyframe_requests >= 2
    parsed = parse_playlist(packager.playlist.render())
    assert all(s.duration < 1.5 for s in parsed.segments)
    assert packager.stats()["forced_cuts"] >= 2
    assert not all(s.parts[0].independent for s in parsed.segments)


def test_new_source_is_a_discontinuity_and_time_runs_on():
    now = time.monotonic()
    first = rtp_stream("h264", 2.0, ssrc=1000, t0=now)
    second = rtp_stream("vp8", 2.0, ssrc=2000, t0=now + 3)
    packager, _ = package([first, None, second])
    text = packager.playlist.render()
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    parsed = parse_playlist(text)
    after = [s for s in parsed.segments if s.discontinuity][0]
    starts = []
    for seg in parsed.segments:
        with av.open(io.BytesIO(packager.playlist.data(seg.msn)), format="mpegts") as c:
            starts.append(next(p.pts for p in c.demux(video=0) if p.pts is not None))
    assert starts == sorted(starts)  # one timeline across the sources
    video, _ = decode(packager.playlist.data(after.msn))
    assert video[0] is not None and video[0] < 5  # the new source's first frames


def test_loss_drops_frames_until_the_next_keyframe():
    packets = rtp_stream("h264", 3.0, audio=False, skip={40})
    packager, asks = package([packets])
    assert asks.keyframe_requests >= 1
    pl = packager.playlist
    video, _ = decode(b"".join(pl.data(s.msn) for s in pl.segments))
    assert 40 not in video and 41 not in video  # nothing decoded from a broken picture
    assert 60 in video and None not in video


def test_audio_only_stream():
    packets = [p for p in rtp_stream("h264", 3.0) if p[0] == "audio"]
    packager, _ = package([packets])
    parsed = parse_playlist(packager.playlist.render())
    assert len(parsed.segments) >= 2
    _, audio = decode(packager.playlist.data(parsed.segments[0].msn))
    assert audio > 30


def test_playlist_window_blocking_answers_and_discontinuity_sequence():
    settings = HlsSettings(window=2)
    pl = Playlist(settings)
    for i in range(5):
        seg = pl.open_segment(time.time(), discontinuity=i == 1)
        assert not pl.satisfies(seg.msn, 0) and pl.is_pending(seg.msn, 0)
        pl.add_part(seg, Part(b"\x47" + bytes(187), 0.5, True))
        assert pl.satisfies(seg.msn, 0) and not pl.satisfies(seg.msn, 1)
        assert pl.is_pending(seg.msn, 1) and not pl.is_pending(seg.msn, 3)
        pl.add_part(seg, Part(b"\x47" + bytes(187), 0.5, False))
        pl.close_segment(seg)
        assert pl.satisfies(seg.msn, 5) and pl.satisfies(seg.msn, None)
        assert pl.is_pending(seg.msn + 1, 0) and not pl.is_pending(seg.msn + 2, 0)
    parsed = parse_playlist(pl.render())
    assert [s.msn for s in parsed.segments] == [3, 4]
    assert parsed.discontinuity_sequence == 1  # the discontinuity left the window
    assert parsed.preload_hint == pl.uri(5, 0)
    assert pl.data(0) is not None  # a few more than listed stay fetchable
    assert pl.data(4, 1) is not None and pl.parse_uri(pl.uri(4, 1)) == (4, 1)
    assert pl.parse_uri("other-4.ts") is None and pl.parse_uri(pl.epoch + "-x.ts") is None
    pl.end()
    assert "#EXT-X-ENDLIST" in pl.render() and "PRELOAD-HINT" not in pl.render()
    assert pl.satisfies(99, 0) and not pl.is_pending(5, 0)
