"""Packet loss on a viewer's path must not freeze its picture (real sessions, real loss).

- bursts of 10 % random loss on the viewer's path (a network namespace, `Link.lose`):
  its decoded frames never stop for more than 2 s. Before the fix a packet whose NACK or
  retransmission was lost as a burst ended was never asked for again, and aiortc's
  jitter buffer held every frame behind it until 512 newer packets had come (5-11 s here,
  20 s in the chaos benchmark).
- a video packet lost for good (it and every retransmission of it dropped at the
  viewer's receiver): the viewer asks for a keyframe and goes on from it.
- frames that stay stuck although packets arrive (there, every keyframe's first packet
  is dropped too): the Subscriber restores with `frames_stalled` and plays again.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import netns_helpers as nh  # noqa: E402

from unbroken.client.framecode import counters_advance  # noqa: E402
from unbroken.client.options import RestoreOptions  # noqa: E402
from unbroken.client.subscriber import Subscriber  # noqa: E402
from unbroken.client.testsrc import TestPatternVideoTrack  # noqa: E402
from unbroken.client.whep import WhepViewer  # noqa: E402
from unbroken.client.whip import WhipPublisher  # noqa: E402
from unbroken.media.keyframe import keyframe_detector  # noqa: E402
from unbroken.protocol.faults import Fault  # noqa: E402

pytestmark = pytest.mark.timeout(60)

LONGEST_GAP_S = 2.0


def stream_name(kind: str) -> str:
    return f"loss-{kind}-{uuid.uuid4().hex[:8]}"


def longest_gap(arrivals, start: float, end: float) -> tuple[float, float]:
    """The longest time without a decoded frame in [start, end]: (length, when it began)."""
    times = [start] + [t for t in arrivals if start < t < end] + [end]
    return max((b - a, a) for a, b in zip(times, times[1:]))


class DropForGood:
    """At a viewer's video receiver (before anything of the viewer sees it): drops the
    media packets `choose(packet)` picks, and every retransmission (RTX) of them, so they
    are lost for good, as after a loss the NACKs could not repair."""

    def __init__(self, viewer: WhepViewer, pc, choose) -> None:
        self.viewer = viewer
        self.choose = choose
        self.dropped: set[int] = set()
        self.dropped_at: list[float] = []
        self.retransmissions_dropped = 0
        receiver = next(t.receiver for t in pc.getTransceivers() if t.kind == "video")
        self._handle = receiver._handle_rtp_packet
        receiver._handle_rtp_packet = self._handle_rtp_packet

    async def _handle_rtp_packet(self, packet, arrival_time_ms: int) -> None:
        if self.viewer.video_codecs.get(packet.payload_type) is None:  # RTX
            if int.from_bytes(packet.payload[:2], "big") in self.dropped:
                self.retransmissions_dropped += 1
                return
        elif packet.sequence_number in self.dropped or self.choose(packet):
            self.dropped.add(packet.sequence_number)
            self.dropped_at.append(time.monotonic())
            return
        await self._handle(packet, arrival_time_ms)


async def play_session(url: str, stream: str) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        async with http.get(f"{url}/api/v1/sessions") as resp:
            sessions = (await resp.json())["sessions"]
    return next(s for s in sessions if s["kind"] == "play" and s["stream"] == stream)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_a_video_packet_lost_for_good_costs_a_keyframe_not_a_freeze(start_node, codec):
    node = start_node()
    stream = stream_name(codec)
    pub = await WhipPublisher(node.url, stream, tracks=[TestPatternVideoTrack()],
                              video_codec=codec).start()
    drop: DropForGood | None = None
    armed = asyncio.Event()

    def one_delta_packet(packet) -> bool:  # the first media packet once armed, not a keyframe's
        detector = keyframe_detector(viewer.video_codecs.get(packet.payload_type, ""))
        return armed.is_set() and not drop.dropped and not detector(packet.payload)

    def install(pc) -> None:
        nonlocal drop
        drop = DropForGood(viewer, pc, one_delta_packet)

    viewer = WhepViewer(node.url, stream, audio=False, on_receivers=install)
    try:
        await viewer.start()
        await viewer.wait_frames(30, 10)
        armed.set()
        async with asyncio.timeout(5):
            while not drop.dropped:
                await asyncio.sleep(0.01)
        lost_at = drop.dropped_at[0]
        await viewer.wait_frames(viewer.frames + 45, 10)
        gap, began = longest_gap(viewer.arrivals, lost_at, viewer.arrivals[-1])
        print(f"\n{codec}: packet {sorted(drop.dropped)} lost for good "
              f"({drop.retransmissions_dropped} retransmissions dropped): longest frame gap "
              f"{gap * 1000:.0f} ms; viewer {viewer.stats()}")
        assert viewer.jitter.skips == 1 and viewer.jitter.keyframe_requests >= 1
        assert drop.retransmissions_dropped >= 1  # its NACKs were answered: really lost
        assert gap < 1.0, f"frames stopped {gap:.2f} s after the loss"
        session = await play_session(node.url, stream)
        assert session["tracks"]["video"]["keyframe_requests"] >= 1
        # the picture is right and live after the keyframe
        assert counters_advance(list(viewer.counters)[-30:])
    finally:
        await viewer.stop()
        await pub.stop()


async def test_frames_stalled_while_packets_arrive_restores_the_subscriber(start_node,
                                                                            monkeypatch):
    """The first session loses a packet for good and then every keyframe's first packet
    (so neither its jitter buffer nor the keyframes it asks for bring a frame back):
    packets keep arriving, frames stop: `frames_stalled` after `frame_stall_ms`, and the
    new session plays."""
    node = start_node()
    stream = stream_name("stall")
    pub = await WhipPublisher(node.url, stream, tracks=[TestPatternVideoTrack()],
                              video_codec="vp8").start()
    drops: list[DropForGood] = []
    add_transceivers = WhepViewer._add_transceivers

    def lossy_first_session(self, pc) -> None:
        add_transceivers(self, pc)
        if drops:
            return
        viewer = self

        def choose(packet) -> bool:
            if viewer.frames < 30:
                return False
            detector = keyframe_detector(viewer.video_codecs.get(packet.payload_type, ""))
            return not drops[0].dropped or detector(packet.payload)

        drops.append(DropForGood(self, pc, choose))

    monkeypatch.setattr(WhepViewer, "_add_transceivers", lossy_first_session)
    events = []
    sub = Subscriber(node.url, stream, on_event=events.append,
                     options=RestoreOptions(network_watch=False))
    try:
        await sub.start()
        first = sub.viewer
        async with asyncio.timeout(10):
            while not drops or not drops[0].dropped:
                await asyncio.sleep(0.02)
        lost_at = drops[0].dropped_at[0]
        lost_wall = time.time() - (time.monotonic() - lost_at)
        async with asyncio.timeout(10):
            while not any(e.kind == "restored" for e in events):
                await asyncio.sleep(0.02)
        restored = next(e for e in events if e.kind == "restored")
        failed = next(e for e in events if e.kind == "stream" and e.state == "FAILED")
        stalled_for = first.arrivals[-1] if first.arrivals else lost_at
        print(f"\nframes_stalled: found {failed.t - lost_wall:.2f} s after the loss, "
              f"restored {restored.t - lost_wall:.2f} s after it; report {restored.report}; "
              f"first session {first.stats()}")
        assert restored.report.fault == Fault.FRAMES_STALLED == failed.reason
        # it was stuck with packets arriving, and asked for keyframes before giving up
        assert first.jitter.keyframe_requests >= 1 and first.jitter.skips == 0
        assert first.video_packets > 0 and stalled_for <= lost_at + 0.1
        assert sub.viewer is not first
        await sub.viewer.wait_frames(sub.viewer.frames + 30, 10)
        assert counters_advance(list(sub.viewer.counters)[-20:])
    finally:
        await sub.stop()
        await pub.stop()


@pytest.mark.timeout(60)
async def test_viewer_frames_never_stop_long_under_bursts_of_loss(netns, missing):
    """The node and the publisher in a namespace (the publisher's path is local there),
    the Subscriber in the root namespace: every packet between them crosses the veth.
    Seven bursts of 10 % random loss (1.5 s each, 2.5 s apart: as a burst ends, a packet
    whose NACK or retransmission was lost used to stay lost)."""
    reason = nh.loss_unavailable()
    if reason:
        missing(reason)
    ns = netns("lr")
    link = ns.add_link()
    ns.set_default_route(link)
    node = nh.NodeInNetns(ns, link.ns_ip).start()
    stream = stream_name("bursts")
    publisher = nh.CliClient("publish", node.url, stream, "--codec", "vp8",
                             "--no-network-watch", prefix=ns.argv(), name="ns-publisher")
    arrivals: list[float] = []
    sub = Subscriber(node.url, stream, on_frame=lambda f, c: arrivals.append(time.monotonic()),
                     options=RestoreOptions(network_watch=False))
    try:
        await publisher.start()
        await publisher.wait_for(nh.is_event("stream", "PUBLISHING"), 15)
        await sub.start()
        await sub.viewer.wait_frames(30, 10)
        start = time.monotonic()
        dropped = 0
        for _ in range(7):
            link.lose(10)
            await asyncio.sleep(1.5)
            dropped += link.dropped()
            link.unblock()
            await asyncio.sleep(2.5)
        end = time.monotonic()
        gap, began = longest_gap(arrivals, start, end)
        viewer = sub.viewer
        print(f"\n10 % loss bursts: longest frame gap {gap * 1000:.0f} ms "
              f"(at {began - start:.1f} s), {dropped} packets dropped on the path, "
              f"restores {[r.fault for r in sub.restores]}, NACKs asked again "
              f"{getattr(viewer.nacks, 'retries', None)}, viewer {viewer.stats()}")
        assert dropped > 100  # the loss was real
        assert gap <= LONGEST_GAP_S, f"frames stopped {gap:.2f} s"
    finally:
        await sub.stop()
        await publisher.stop()
