"""Real publishers and viewers through a real node process: frames are checked."""

import asyncio
import time

import aiohttp
import pytest

from unbroken.client.framecode import counters_advance
from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher

pytestmark = pytest.mark.timeout(60)



async def publish(url, stream, codec, audio=True, **track_args):
    tracks = [TestPatternVideoTrack(**track_args)]
    if audio:
        tracks.append(ToneAudioTrack())
    return await WhipPublisher(url, stream, tracks=tracks, video_codec=codec).start()


async def streams(url):
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/api/v1/streams") as r:
            return {s["name"]: s for s in (await r.json())["streams"]}


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_several_viewers_decode_correct_advancing_frames(node, codec):
    pub = await publish(node.url, "cam", codec)
    viewers = [await WhepViewer(node.url, "cam").start() for _ in range(3)]
    try:
        await asyncio.gather(*(v.wait_frames(45, 15) for v in viewers))
        for v in viewers:
            assert counters_advance(v.counters), list(v.counters)[-20:]
            assert v.audio_frames > 20
            assert v.codec.lower() == f"video/{codec}"
        info = (await streams(node.url))["cam"]
        assert info["live"] and info["viewers"] == 3
        assert info["codecs"] == {"video": codec.upper() if codec == "h264" else "VP8",
                                  "audio": "opus"}
        video = info["publisher"]["tracks"]["video"]
        assert video["packets"] > 0 and video["fps"] > 10 and video["bitrate"] > 0
    finally:
        for v in viewers:
            await v.stop()
        await pub.stop()


async def health(url):
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz") as r:
            return await r.json()


@pytest.mark.parametrize("native", ["1", "0"], ids=["native-path", "python-path"])
async def test_both_forwarding_paths_deliver_correct_frames(start_node, monkeypatch, native):
    """The node says which path forwards; UNBROKEN_NATIVE=0 falls back to Python, and
    viewers decode the same advancing frames on both."""
    monkeypatch.setenv("UNBROKEN_NATIVE", native)
    node = start_node()
    assert (await health(node.url))["forwarding"] == ("native" if native == "1" else "python")
    pub = await publish(node.url, "paths", "vp8")
    viewers = [await WhepViewer(node.url, "paths").start() for _ in range(3)]
    try:
        await asyncio.gather(*(v.wait_frames(30, 15) for v in viewers))
        for v in viewers:
            assert counters_advance(v.counters), list(v.counters)[-20:]
            assert v.audio_frames > 10
    finally:
        for v in viewers:
            await v.stop()
        await pub.stop()


async def test_late_joiner_gets_a_picture_at_once(node):
    """A viewer joining mid-stream starts at a keyframe the node asks for (PLI)."""
    pub = await publish(node.url, "late", "vp8", audio=False)
    try:
        first = await WhepViewer(node.url, "late").start()
        await first.wait_frames(30, 10)
        await asyncio.sleep(2)  # well past the keyframe the first viewer started on
        late = await WhepViewer(node.url, "late").start()
        await late.wait_first_frame(10)
        # aiortc's encoder sends no periodic keyframes this soon: only a PLI explains it
        assert late.time_to_first_frame < 2.0, late.time_to_first_frame
        await late.wait_frames(20, 5)
        assert counters_advance(late.counters)
        await late.stop()
        await first.stop()
    finally:
        await pub.stop()


async def read_events(url, location, into: list, ready: asyncio.Event):
    async with aiohttp.ClientSession() as http:
        async with http.get(url + location + "/events") as r:
            ready.set()
            async for line in r.content:
                text = line.decode().strip()
                if text.startswith("event:"):
                    into.append(text.split(":", 1)[1].strip())


async def test_viewers_keep_their_session_across_a_publisher_restore(node):
    pub = await publish(node.url, "restore", "vp8")
    viewer = await WhepViewer(node.url, "restore").start()
    events: list[str] = []
    ready = asyncio.Event()
    location = viewer.location.removeprefix(node.url)
    reader = asyncio.create_task(read_events(node.url, location, events, ready))
    try:
        await viewer.wait_frames(20, 10)
        await asyncio.wait_for(ready.wait(), 5)
        await pub.stop()
        frames_before = viewer.frames
        await asyncio.sleep(0.5)
        pub = await publish(node.url, "restore", "vp8")
        await viewer.wait_frames(frames_before + 30, 10)
        assert viewer.connection_state == "connected"
        # the new publisher's counters restart at 0: the picture is the new source's
        tail = [c for c in list(viewer.counters)[-20:] if c is not None]
        assert counters_advance(tail) and min(tail) < 200
        deadline = time.monotonic() + 5
        while events[-2:] != ["inactive", "active"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert events[0] == "active" and events[-2:] == ["inactive", "active"], events
    finally:
        reader.cancel()
        await viewer.stop()
        await pub.stop()


async def test_restore_with_the_other_codec_moves_viewers_on(node):
    """A viewer negotiated for H264 cannot take VP8: it is told to reconnect, not fed junk."""
    pub = await publish(node.url, "switch", "h264", audio=False)
    viewer = await WhepViewer(node.url, "switch").start()
    try:
        await viewer.wait_frames(10, 10)
        await pub.stop()
        await asyncio.sleep(0.3)
        pub = await publish(node.url, "switch", "vp8", audio=False)
        deadline = time.monotonic() + 10
        while viewer.connection_state not in ("closed", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert viewer.connection_state in ("closed", "failed")
        fresh = await WhepViewer(node.url, "switch").start()
        await fresh.wait_frames(10, 10)
        assert fresh.codec.lower() == "video/vp8"
        await fresh.stop()
    finally:
        await viewer.stop()
        await pub.stop()


async def test_publisher_without_media_times_out(start_node):
    node = start_node("--media-timeout", "0.5")
    source = TestPatternVideoTrack()
    pub = await WhipPublisher(node.url, "stall", tracks=[source], video_codec="vp8").start()
    viewer = await WhepViewer(node.url, "stall").start()
    try:
        await viewer.wait_frames(10, 10)
        source.stall()
        stalled_at = time.monotonic()
        while (await streams(node.url)).get("stall", {}).get("live") and (
                time.monotonic() - stalled_at < 5):
            await asyncio.sleep(0.05)
        gone_after = time.monotonic() - stalled_at
        print(f"publisher found gone {gone_after:.2f} s after its media stopped")
        assert not (await streams(node.url)).get("stall", {}).get("live")
        # the viewer stays, waiting for the stream to come back
        assert "stall" in await streams(node.url)
    finally:
        await viewer.stop()
        await pub.stop()


async def test_nack_repairs_loss_on_the_way_to_a_viewer(node):
    """The viewer drops every 15th video packet on arrival (once): the node resends via RTX."""
    pub = await publish(node.url, "lossy", "vp8", audio=False)
    dropped: set[int] = set()

    class LossyViewer(WhepViewer):
        def _add_transceivers(self, pc):
            super()._add_transceivers(pc)
            for t in pc.getTransceivers():
                t.receiver._handle_rtp_packet = self._lossy(t.receiver._handle_rtp_packet)

        def _lossy(self, handle):
            count = 0

            async def lossy(packet, arrival_time_ms):
                nonlocal count
                count += 1
                if (packet.payload_type in self.video_codecs and count % 15 == 0
                        and packet.sequence_number not in dropped):
                    dropped.add(packet.sequence_number)
                    return
                await handle(packet, arrival_time_ms)

            return lossy

    viewer = LossyViewer(node.url, "lossy", audio=False)
    await viewer.start()
    try:
        await viewer.wait_frames(90, 20)
        async with aiohttp.ClientSession() as http:
            async with http.get(node.url + "/api/v1/sessions") as r:
                sessions = (await r.json())["sessions"]
        video = next(s for s in sessions if s["kind"] == "play")["tracks"]["video"]
        assert len(dropped) >= 5
        assert video["nacks"] >= len(dropped) // 2 and video["retransmits"] > 0, video
        assert counters_advance(viewer.counters)
    finally:
        await viewer.stop()
        await pub.stop()


async def test_sender_reports_keep_audio_and_video_in_sync(node):
    """Viewers' sender reports map RTP time to the publisher's clock for both kinds alike."""
    from aiortc import clock
    from aiortc.rtp import RtcpSrPacket

    class ReportWatchingViewer(WhepViewer):
        def _add_transceivers(self, pc):
            super()._add_transceivers(pc)
            self.reports = {}
            self.latest = {}
            for t in pc.getTransceivers():
                kind, receiver = t.kind, t.receiver
                handle_rtcp, handle_rtp = receiver._handle_rtcp_packet, receiver._handle_rtp_packet

                async def rtcp(packet, kind=kind, handle=handle_rtcp):
                    if isinstance(packet, RtcpSrPacket):
                        info = packet.sender_info
                        self.reports[kind] = (info.ntp_timestamp, info.rtp_timestamp)
                    await handle(packet)

                async def rtp(packet, arrival_time_ms, kind=kind, handle=handle_rtp):
                    self.latest[kind] = (packet.timestamp, clock.current_ntp_time())
                    await handle(packet, arrival_time_ms)

                receiver._handle_rtcp_packet = rtcp
                receiver._handle_rtp_packet = rtp

    pub = await publish(node.url, "sync", "vp8")
    viewer = ReportWatchingViewer(node.url, "sync")
    await viewer.start()
    try:
        deadline = time.monotonic() + 10
        while len(viewer.reports) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert set(viewer.reports) == {"audio", "video"}
        offsets = {}
        for kind, rate in (("audio", 48000), ("video", 90000)):
            sr_ntp, sr_rtp = viewer.reports[kind]
            rtp_ts, arrived_ntp = viewer.latest[kind]
            delta = ((rtp_ts - sr_rtp + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
            capture_ntp = sr_ntp + (delta << 32) // rate
            offsets[kind] = (arrived_ntp - capture_ntp) / (1 << 32)  # seconds in flight
        print("capture→arrival per kind (s):", offsets)
        assert all(-0.2 < v < 0.5 for v in offsets.values()), offsets
        assert abs(offsets["audio"] - offsets["video"]) < 0.1, offsets
    finally:
        await viewer.stop()
        await pub.stop()
