"""Synthetic sources: counters, timestamps, pacing, stall/resume, tone."""

import asyncio
import time

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from unbroken.client.framecode import read_counter
from unbroken.client.testsrc import ToneAudioTrack, TestPatternVideoTrack


async def test_video_frames_carry_counter_and_paced_timestamps():
    track = TestPatternVideoTrack(fps=50)
    start = time.monotonic()
    frames = [await track.recv() for _ in range(26)]
    took = time.monotonic() - start
    assert 0.45 < took < 0.7  # 25 intervals of 20 ms
    assert [read_counter(f) for f in frames] == list(range(26))
    assert [f.pts for f in frames] == [i * 1800 for i in range(26)]
    assert (frames[0].width, frames[0].height, frames[0].format.name) == (640, 360, "yuv420p")
    assert track.frames_sent == 26


async def test_video_background_moves():
    track = TestPatternVideoTrack(fps=100)
    a, b = await track.recv(), await track.recv()
    assert not np.array_equal(a.to_ndarray()[100:], b.to_ndarray()[100:])


async def test_stall_blocks_recv_and_resume_continues_from_wall_clock():
    track = TestPatternVideoTrack(fps=30)
    first = await track.recv()
    track.stall()
    assert track.stalled
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(track.recv(), 0.3)
    assert track.frames_sent == 1
    track.resume()
    after = await asyncio.wait_for(track.recv(), 0.2)
    assert read_counter(after) == 1
    # the pause shows up in the timestamps (>= 0.3 s at 90 kHz), no catch-up burst
    assert after.pts - first.pts >= 0.3 * 90_000
    t0 = time.monotonic()
    await track.recv()
    assert time.monotonic() - t0 > 0.02


async def test_frame_due_is_each_frames_slot_even_in_a_catch_up_burst():
    track = TestPatternVideoTrack(fps=50)
    assert track.frame_due is None
    await track.recv()
    start = track.frame_due
    assert abs(start - time.monotonic()) < 0.02
    time.sleep(0.1)  # a short pause (below the pacer's re-anchoring lag): frames come at once
    burst_at = time.monotonic()
    due = []
    for _ in range(4):
        await track.recv()
        due.append(track.frame_due)
    assert time.monotonic() - burst_at < 0.02
    # each frame keeps the slot it was due in (20 ms apart), not the time it came out
    assert [round((d - start) / 0.02, 6) for d in due] == [1, 2, 3, 4]


async def test_stop_wakes_a_stalled_recv():
    track = TestPatternVideoTrack()
    track.stall()
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.05)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(pending, 1)


def test_small_frames_have_no_counter():
    track = TestPatternVideoTrack(width=320, height=180)
    assert read_counter(track._draw(5)) is None


@pytest.mark.parametrize("channels", [1, 2])
async def test_tone_frames(channels):
    track = ToneAudioTrack(frequency=1000, channels=channels)
    start = time.monotonic()
    frames = [await track.recv() for _ in range(11)]
    assert 0.18 < time.monotonic() - start < 0.35  # 10 intervals of 20 ms
    assert [f.pts for f in frames] == [i * 960 for i in range(11)]
    f = frames[3]
    assert (f.samples, f.sample_rate, f.format.name) == (960, 48000, "s16")
    assert len(f.layout.channels) == channels
    samples = np.concatenate([fr.to_ndarray().reshape(-1, channels)[:, 0] for fr in frames])
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * 48000 / len(samples)
    assert abs(peak_hz - 1000) < 10


async def test_clocked_pattern_counts_frame_slots_of_a_shared_clock():
    from unbroken.client.testsrc import clocked_source

    epoch = time.monotonic() - 10.0  # slot 300 at 30 fps
    first = clocked_source(epoch)()[0]
    frame = await first.recv()
    assert 299 <= read_counter(frame) <= 302
    await asyncio.sleep(0.2)
    second = clocked_source(epoch)()[0]  # a new session's track goes on from the clock
    frame = await second.recv()
    assert read_counter(frame) >= first.last_index + 5
    assert second.last_index == read_counter(frame)
