"""The frame counter survives real VP8/H264 encode + decode and rejects non-patterns."""

import fractions

import av
import numpy as np
import pytest

from unbroken.client.framecode import (
    draw_counter,
    read_counter,
    read_counter_luma,
    read_counter_rgb,
)

W, H = 640, 360
EDGE_VALUES = [0, 1, 0x8000, 0xFFFF, 0xAAAA, 0x5555, 0x00FF, 0xFF00]


def busy_frame(rng: np.random.Generator, t: int) -> av.VideoFrame:
    """A yuv420p frame with a moving gradient plus noise: hard to encode."""
    x = np.arange(W, dtype=np.int32)
    y = np.arange(H, dtype=np.int32)[:, None]
    luma = ((x + 4 * t) * 3 + y) % 256 + rng.integers(-25, 25, size=(H, W))
    arr = np.empty((H * 3 // 2, W), dtype=np.uint8)
    arr[:H] = np.clip(luma, 0, 255)
    arr[H:] = ((x[None, :] + 2 * t) % 256).astype(np.uint8)
    return av.VideoFrame.from_ndarray(arr, format="yuv420p")


def encoder(name: str) -> av.CodecContext:
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.framerate = fractions.Fraction(30, 1)
    ctx.bit_rate = 300_000
    if name == "libx264":
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    else:
        ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    return ctx


@pytest.mark.parametrize("enc_name,dec_name", [("libvpx", "vp8"), ("libx264", "h264")])
def test_round_trip_through_codec(enc_name, dec_name):
    rng = np.random.default_rng(1)
    values = EDGE_VALUES + [int(v) for v in rng.integers(0, 65536, size=140)]
    values += list(range(1000, 1060))  # the normal case: consecutive frames
    enc, dec = encoder(enc_name), av.CodecContext.create(dec_name, "r")
    decoded = []
    for i, n in enumerate(values):
        frame = draw_counter(busy_frame(rng, i), n)
        frame.pts = i
        for packet in enc.encode(frame):
            decoded += dec.decode(packet)
    for packet in enc.encode(None):
        decoded += dec.decode(packet)
    assert [read_counter(f) for f in decoded] == values


def test_rgb_round_trip_and_conversion():
    frame = draw_counter(busy_frame(np.random.default_rng(2), 0), 0xC3A5)
    assert read_counter(frame) == 0xC3A5
    assert read_counter(frame.reformat(format="rgb24")) == 0xC3A5
    assert read_counter_rgb(frame.to_ndarray(format="rgb24")) == 0xC3A5

    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    assert read_counter_rgb(draw_counter(rgb, 4242)) == 4242


def test_values_wrap_modulo_65536():
    luma = np.zeros((H, W), dtype=np.uint8)
    assert read_counter_luma(draw_counter(luma, 65536 + 7)) == 7


def test_packed_yuv420p_array():
    arr = np.full((H * 3 // 2, W), 100, dtype=np.uint8)
    draw_counter(arr, 321)
    assert read_counter(av.VideoFrame.from_ndarray(arr, format="yuv420p")) == 321


def test_implausible_patterns_read_as_none():
    grey = np.full((H, W), 128, dtype=np.uint8)
    assert read_counter_luma(grey) is None
    small = av.VideoFrame.from_ndarray(np.zeros((240, 320), np.uint8), format="gray")
    assert read_counter(small) is None
    noise = np.random.default_rng(3).integers(0, 256, size=(H, W), dtype=np.uint8)
    assert read_counter_luma(noise) is None


def test_drawing_into_a_too_small_frame_fails():
    with pytest.raises(ValueError):
        draw_counter(np.zeros((360, 480), np.uint8), 1)


def test_counters_advance():
    from unbroken.client.framecode import counters_advance

    assert counters_advance(list(range(65530, 65536)) + list(range(0, 6)))  # wraps
    assert counters_advance([1, None, 2, 4, 5, 6, 7, 8, 9, 10, 11])  # a lost frame, unreadable
    assert not counters_advance([1, 2, 3])  # too few
    assert not counters_advance(list(range(10)) + [3])  # went backwards
    assert not counters_advance(list(range(0, 60, 6)))  # skipped too much
    assert not counters_advance(list(range(12)), minimum=20)


def test_frame_log_finds_the_missing_counters_across_sessions_and_the_wrap():
    from unbroken.client.framecode import FrameLog, unwrap_counters

    log = FrameLog()
    # an old and a new session overlap (make-before-break), then one frame is lost
    for counter in [65533, 65534, 65535, 0, 65535, 0, 1, 2, 4, 5]:
        log(None, counter)
    assert unwrap_counters([65535, 0, 1]) == [65535, 65536, 65537]
    assert log.missing() == [65536 + 3]
    assert log.largest_gap() == 1
    assert log.missing(start=log.mark()) == []
