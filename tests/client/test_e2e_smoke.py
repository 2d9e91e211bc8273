"""Smoke test of the Python clients against a real node: publish, play, check frames."""

import asyncio
import uuid

import pytest

from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whep import WhepError, WhepViewer
from unbroken.client.whip import WhipError, WhipPublisher


def stream_name() -> str:
    return f"smoke-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_publish_and_play(node, codec):
    stream = stream_name()
    video = TestPatternVideoTrack()
    async with WhipPublisher(node.url, stream, [video, ToneAudioTrack()],
                             video_codec=codec) as publisher:
        assert publisher.codec == f"video/{codec.upper()}"
        await publisher.wait_connected(5)
        async with (WhepViewer(node.url, stream) as viewer,
                    WhepViewer(node.url, stream, decode=False) as load_viewer):
            await viewer.wait_frames(45, timeout=8)
            await load_viewer.wait_frames(45, timeout=8)

            assert viewer.codec == load_viewer.codec == publisher.codec
            counters = list(viewer.counters)
            assert None not in counters
            steps = [b - a for a, b in zip(counters, counters[1:])]
            assert all(s >= 1 for s in steps), counters  # always advancing
            assert steps.count(1) >= 0.9 * len(steps), counters  # rarely skipping
            assert 0 < counters[-1] < video.frames_sent

            assert viewer.audio_frames > 0 and load_viewer.audio_frames > 0
            stats = load_viewer.stats()
            assert stats["packets"] > stats["frames"] and stats["bytes"] > 10_000
            assert 15 <= stats["fps"] <= 45


async def test_play_before_publish_is_409_with_retry_after(node):
    with pytest.raises(WhepError) as refused:
        await WhepViewer(node.url, stream_name()).start()
    assert refused.value.status == 409
    assert refused.value.retry_after is not None


async def test_token_is_required_when_configured(start_node):
    node = start_node("--token", "secret")
    stream = stream_name()
    with pytest.raises(WhipError) as refused:
        await WhipPublisher(node.url, stream, [TestPatternVideoTrack()]).start()
    assert refused.value.status == 401
    async with WhipPublisher(node.url, stream, [TestPatternVideoTrack()], token="secret"):
        async with WhepViewer(node.url, stream, token="secret", audio=False) as viewer:
            await viewer.wait_first_frame(timeout=5)


async def test_stopped_publisher_ends_the_stream(node):
    stream = stream_name()
    publisher = await WhipPublisher(node.url, stream, [TestPatternVideoTrack()]).start()
    async with WhepViewer(node.url, stream, audio=False) as viewer:
        await viewer.wait_first_frame(timeout=5)
    await publisher.stop()
    assert publisher.connection_state == "closed"
    for _ in range(20):
        try:
            async with WhepViewer(node.url, stream, audio=False):
                await asyncio.sleep(0.1)
        except WhepError as refused:
            assert refused.status == 409
            return
    pytest.fail("stream still live after its publisher sent DELETE")


async def test_sources_outlive_a_session_and_the_viewer_keeps_playing(node):
    stream = stream_name()
    video = TestPatternVideoTrack()
    publisher = await WhipPublisher(node.url, stream, [video], video_codec="vp8").start()
    async with WhepViewer(node.url, stream, audio=False) as viewer:
        await viewer.wait_frames(15, timeout=5)
        await publisher.stop()
        assert video.readyState == "live"
        async with WhipPublisher(node.url, stream, [video], video_codec="vp8"):
            await viewer.wait_frames(viewer.frames + 15, timeout=5)
        counters = list(viewer.counters)
        assert counters == sorted(counters) and counters[-1] > 15
