"""The SDK's Publisher and Subscriber restore by themselves after real faults."""

import asyncio
import signal

import aiohttp
import pytest

from unbroken.client.events import ClientEvent
from unbroken.client.options import RestoreOptions
from unbroken.client.publisher import Publisher
from unbroken.client.subscriber import Subscriber

pytestmark = pytest.mark.timeout(60)


class Recorder:
    def __init__(self) -> None:
        self.events: list[ClientEvent] = []

    def __call__(self, event: ClientEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def restored(self) -> list[ClientEvent]:
        return [e for e in self.events if e.kind == "restored"]

    async def wait(self, kind: str, count: int = 1, timeout: float = 10) -> ClientEvent:
        async with asyncio.timeout(timeout):
            while sum(e.kind == kind for e in self.events) < count:
                await asyncio.sleep(0.02)
        return [e for e in self.events if e.kind == kind][count - 1]


async def frames_advance(subscriber: Subscriber, n: int = 15, timeout: float = 10) -> None:
    viewer = subscriber.viewer
    await viewer.wait_frames(viewer.frames + n, timeout)


async def stream_codec(url: str, stream: str) -> str | None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/v1/streams/{stream}") as r:
            return (await r.json())["codecs"].get("video") if r.status == 200 else None


def print_report(who: str, event: ClientEvent) -> None:
    r = event.report
    print(f"{who}: {r.fault} detect {r.detect_ms} ms, restore {r.restore_ms} ms, "
          f"gap {r.gap_ms} ms, tries {r.tries}")


@pytest.mark.parametrize("signaling", ["http", "session"])
async def test_node_killed_both_come_back_on_the_second_node(start_node, signaling):
    a, b = start_node(), start_node()
    urls = [a.url, b.url]
    pub_events, sub_events = Recorder(), Recorder()
    pub = await Publisher(urls, "fail", codec="vp8", signaling=signaling,
                          on_event=pub_events).start()
    sub = await Subscriber(urls, "fail", signaling=signaling, on_event=sub_events).start()
    try:
        await frames_advance(sub)
        assert pub.url == a.url and sub.url == a.url
        a.kill()
        for who, events in (("publisher", pub_events), ("subscriber", sub_events)):
            restored = await events.wait("restored")
            print_report(who, restored)
            assert restored.url == b.url
        await frames_advance(sub)
        assert "gave_up" not in sub_events.kinds() + pub_events.kinds()
    finally:
        await sub.stop()
        await pub.stop()


async def test_node_restarted_on_the_same_port(start_node):
    node = start_node()
    pub_events, sub_events = Recorder(), Recorder()
    pub = await Publisher(node.url, "again", codec="h264", on_event=pub_events).start()
    sub = await Subscriber(node.url, "again", on_event=sub_events).start()
    try:
        await frames_advance(sub)
        node.kill()
        await asyncio.sleep(0.5)
        start_node(port=node.port)
        print_report("publisher", await pub_events.wait("restored", timeout=15))
        print_report("subscriber", await sub_events.wait("restored", timeout=15))
        await frames_advance(sub)
    finally:
        await sub.stop()
        await pub.stop()


@pytest.mark.parametrize("change_codec", [False, True])
async def test_publisher_stall_is_found_by_the_bitrate_check(node, change_codec):
    options = RestoreOptions(change_codec=change_codec)
    pub_events, sub_events = Recorder(), Recorder()
    pub = await Publisher(node.url, "stall", codec="h264", options=options,
                          on_event=pub_events).start()
    sub = await Subscriber(node.url, "stall", on_event=sub_events).start()
    try:
        await frames_advance(sub)
        pub.attempt.tracks[0].stall()  # the encoder stops producing: bitrate 0
        restored = await pub_events.wait("restored", timeout=10)
        print_report("publisher", restored)
        assert restored.report.fault == "bitrate_zero"
        assert restored.report.detect_ms < 1500
        expected = "VP8" if change_codec else "H264"
        assert await stream_codec(node.url, "stall") == expected
        assert restored.report.codec == expected.lower()
        if change_codec:
            # the viewer negotiated H264: it is told to reconnect and comes back on VP8
            await sub_events.wait("restored", timeout=10)
            assert sub.viewer.codec.lower() == "video/vp8"
        await frames_advance(sub)
    finally:
        await sub.stop()
        await pub.stop()


async def test_vp8_stalling_too_gives_up_with_an_event(node):
    """An encoder that is broken for good: every republish stalls as well."""
    from unbroken.client.testsrc import TestPatternVideoTrack

    made = []

    def broken_encoder():
        track = TestPatternVideoTrack()
        if made:
            track.stall()
        made.append(track)
        return [track]

    options = RestoreOptions(change_codec=True, max_tries=3)
    events = Recorder()
    pub = await Publisher(node.url, "hopeless", source=broken_encoder, codec="vp8",
                          options=options, on_event=events).start()
    try:
        made[0].stall()
        gave_up = await events.wait("gave_up", timeout=20)
        assert gave_up.reason.startswith("bitrate_zero")
    finally:
        await pub.stop()


@pytest.mark.parametrize("signaling", ["http", "session"])
async def test_unpublish_then_republish_viewer_resumes_by_itself(node, signaling):
    sub_events = Recorder()
    pub = await Publisher(node.url, "again2", codec="vp8", signaling=signaling).start()
    sub = await Subscriber(node.url, "again2", signaling=signaling,
                           on_event=sub_events).start()
    try:
        await frames_advance(sub)
        viewer_before = sub.viewer
        await pub.stop()  # unpublished on purpose
        await asyncio.sleep(0.5)
        pub = await Publisher(node.url, "again2", codec="vp8", signaling=signaling).start()
        await frames_advance(sub)
        # within the inactive timeout the node continued the same session
        assert sub.viewer is viewer_before
        reasons = [e.reason for e in sub_events.events if e.kind == "stream_event"]
        assert reasons[-2:] == ["inactive", "active"]
    finally:
        await sub.stop()
        await pub.stop()


async def test_viewer_started_before_the_publisher_plays_when_it_comes(node):
    sub_events = Recorder()
    starting = asyncio.create_task(Subscriber(node.url, "later", on_event=sub_events).start())
    await asyncio.sleep(1.0)  # 409 not live, retried
    pub = await Publisher(node.url, "later", codec="vp8").start()
    sub = await asyncio.wait_for(starting, 15)
    try:
        await frames_advance(sub)
    finally:
        await sub.stop()
        await pub.stop()


async def test_manual_stop_never_restores(node):
    pub_events, sub_events = Recorder(), Recorder()
    pub = await Publisher(node.url, "manual", codec="vp8", on_event=pub_events).start()
    sub = await Subscriber(node.url, "manual", on_event=sub_events).start()
    await frames_advance(sub)
    await sub.stop()
    await pub.stop()
    await asyncio.sleep(1.5)
    for events in (pub_events, sub_events):
        kinds = events.kinds()
        assert "restoring" not in kinds and "restored" not in kinds and "gave_up" not in kinds
        assert [e.state for e in events.events if e.kind == "session"][-1] == "DISCONNECTED"


async def test_max_tries_exhausted_gives_up_with_an_event(start_node):
    node = start_node()
    options = RestoreOptions(max_tries=3, backoff_ms=(0, 50, 50), timeout_ms=50)
    events = Recorder()
    pub = await Publisher(node.url, "doomed", codec="vp8", options=options,
                          on_event=events).start()
    try:
        node.kill()  # and never back
        gave_up = await events.wait("gave_up", timeout=10)
        assert "max tries" in gave_up.reason
        assert pub.done.is_set()
    finally:
        await pub.stop()


@pytest.mark.parametrize("codec,suffix", [("h264", ".ts"), ("vp8", ".webm")])
async def test_recording_keeps_the_encoded_stream_across_a_restore(start_node, tmp_path,
                                                                   codec, suffix):
    import av

    from unbroken.client.framecode import read_counter

    a, b = start_node(), start_node()
    path = str(tmp_path / f"rec{suffix}")
    pub = await Publisher([a.url, b.url], "rec", codec=codec).start()
    sub = await Subscriber([a.url, b.url], "rec", record=path).start()
    events = Recorder()
    sub.on_event = events
    try:
        await frames_advance(sub, 30)
        a.kill()
        await events.wait("restored")
        await frames_advance(sub, 30)
    finally:
        await sub.stop()
        await pub.stop()
    with av.open(path) as container:
        assert container.streams.video[0].codec_context.name == codec
        counters = [read_counter(f) for f in container.decode(video=0)]
        assert len(container.streams.audio) == 1
    readable = [c for c in counters if c is not None]
    assert len(readable) >= 50
    # frames of both sessions, in order: counters restart once (the new publish)
    restarts = sum(1 for x, y in zip(readable, readable[1:]) if y < x)
    assert restarts == 1, readable


async def test_node_drained_both_move_to_the_other_node(start_node):
    a, b = start_node("--drain-timeout", "3"), start_node()
    urls = [a.url, b.url]
    pub_events, sub_events = Recorder(), Recorder()
    pub = await Publisher(urls, "drain", codec="vp8", on_event=pub_events).start()
    sub = await Subscriber(urls, "drain", on_event=sub_events).start()
    try:
        await frames_advance(sub)
        a.proc.send_signal(signal.SIGTERM)  # scale-in: the node drains
        for who, events in (("publisher", pub_events), ("subscriber", sub_events)):
            restored = await events.wait("restored", timeout=10)
            print_report(who, restored)
            assert restored.url == b.url
        assert pub_events.restored()[0].report.fault == "node_draining"
        await frames_advance(sub)
    finally:
        await sub.stop()
        await pub.stop()


async def test_subscriber_follows_a_publisher_that_moved_to_another_node(start_node):
    a, b = start_node(), start_node()
    sub_events = Recorder()
    first = await Publisher(a.url, "moved", codec="vp8").start()
    sub = await Subscriber([a.url, b.url], "moved", on_event=sub_events).start()
    second = None
    try:
        await frames_advance(sub)
        await first.stop()
        second = await Publisher(b.url, "moved", codec="vp8").start()
        restored = await sub_events.wait("restored", timeout=10)
        assert restored.report.fault == "publisher_moved" and restored.url == b.url
        await frames_advance(sub)
    finally:
        await sub.stop()
        if second:
            await second.stop()
