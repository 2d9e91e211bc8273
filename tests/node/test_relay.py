"""Origin → edge relay with real node processes: edges pull streams over WHEP, forward
them without transcoding, and keep their viewers through an origin failure."""

import asyncio
import contextlib
import signal
import time

import aiohttp
import pytest

from unbroken.client.framecode import counters_advance
from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whep import WhepError, WhepViewer
from unbroken.client.whip import WhipPublisher

pytestmark = pytest.mark.timeout(90)

LINGER = "1"


async def publish(url, stream, codec, audio=True):
    tracks = [TestPatternVideoTrack()]
    if audio:
        tracks.append(ToneAudioTrack())
    return await WhipPublisher(url, stream, tracks=tracks, video_codec=codec).start()


async def streams(url):
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/api/v1/streams") as r:
            return {s["name"]: s for s in (await r.json())["streams"]}


async def metrics(url) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as r:
            return await r.text()


def edge_of(start_node, *upstreams, linger=LINGER, extra=()):
    return start_node("--role", "edge", "--upstream", ",".join(u.url for u in upstreams),
                      "--relay-linger", linger, *extra)


@contextlib.asynccontextmanager
async def session_events(location: str):
    """The event names of a WHEP session's server-sent events, as they come."""
    events: list[str] = []
    ready = asyncio.Event()

    async def read():
        async with aiohttp.ClientSession() as http:
            async with http.get(location + "/events") as r:
                ready.set()
                async for line in r.content:
                    text = line.decode().strip()
                    if text.startswith("event:"):
                        events.append(text.split(":", 1)[1].strip())

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(ready.wait(), 5)
        yield events
    finally:
        reader.cancel()


async def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_viewers_on_two_edges_decode_the_origins_stream(start_node, codec):
    origin = start_node("--role", "origin")
    edges = [edge_of(start_node, origin), edge_of(start_node, origin)]
    pub = await publish(origin.url, "cam", codec)
    viewers = [await WhepViewer(edge.url, "cam").start() for edge in edges for _ in range(2)]
    try:
        await asyncio.gather(*(v.wait_frames(45, 20) for v in viewers))
        for v in viewers:
            assert counters_advance(v.counters), list(v.counters)[-20:]
            assert v.audio_frames > 20
            assert v.codec.lower() == f"video/{codec}"
        # one pull per stream per edge, whatever its number of viewers
        at_origin = (await streams(origin.url))["cam"]
        assert at_origin["viewers"] == 2
        for edge in edges:
            info = (await streams(edge.url))["cam"]
            assert info["viewers"] == 2 and info["publisher"] is None
            upstream = info["upstream"]
            assert upstream["url"] == origin.url and upstream["state"] == "live"
            assert upstream["packets"] > 100 and upstream["since"] > 0
            assert upstream["tracks"]["video"]["codec"].lower() == codec
            text = await metrics(edge.url)
            assert 'unbroken_relay_pulls{state="live"} 1.0' in text
            assert 'unbroken_relay_pull_attempts_total{outcome="live"} 1.0' in text
    finally:
        for v in viewers:
            await v.stop()
        await pub.stop()


async def test_one_edge_pulls_several_streams_from_one_origin(start_node):
    """Three pulls between the same two nodes: each is a session of its own on both sides
    (the nodes' shared ICE sockets must not mix them up), every viewer decodes its own
    stream, and no pull is ever lost or made again."""
    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin)
    names = ["multi-a", "multi-b", "multi-c"]
    pubs = [await publish(origin.url, name, "vp8", audio=False) for name in names]
    viewers = [await WhepViewer(edge.url, name, audio=False).start() for name in names]
    try:
        await asyncio.gather(*(v.wait_frames(30, 20) for v in viewers))
        await asyncio.sleep(4)  # two media-silence windows of the pulls' watchdog
        await asyncio.gather(*(v.wait_frames(v.frames + 30, 10) for v in viewers))
        for v in viewers:
            assert counters_advance(list(v.counters)[-60:])
        text = await metrics(edge.url)
        assert 'unbroken_relay_pull_attempts_total{outcome="live"} 3.0' in text, text
        assert 'outcome="lost"' not in text or \
            'unbroken_relay_pull_attempts_total{outcome="lost"} 0.0' in text, text
        for name in names:
            assert (await streams(edge.url))[name]["upstream"]["packets"] > 100
    finally:
        for v in viewers:
            await v.stop()
        for pub in pubs:
            await pub.stop()


async def test_two_hop_chain(start_node):
    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin)
    far_edge = edge_of(start_node, edge)
    pub = await publish(origin.url, "chain", "vp8")
    viewer = await WhepViewer(far_edge.url, "chain").start()
    try:
        await viewer.wait_frames(45, 20)
        assert counters_advance(viewer.counters)
        assert (await streams(edge.url))["chain"]["upstream"]["url"] == origin.url
        assert (await streams(far_edge.url))["chain"]["upstream"]["url"] == edge.url
    finally:
        await viewer.stop()
        await pub.stop()


async def test_late_joiner_on_an_edge_gets_a_picture_fast(start_node):
    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin)
    pub = await publish(origin.url, "late", "vp8", audio=False)
    try:
        first = await WhepViewer(edge.url, "late").start()
        await first.wait_frames(30, 20)
        await asyncio.sleep(2)  # well past the keyframe the pull started on
        late = await WhepViewer(edge.url, "late").start()
        await late.wait_first_frame(10)
        # only a PLI that went through the edge and the origin to the publisher explains it
        assert late.time_to_first_frame < 1.0, late.time_to_first_frame
        await late.wait_frames(20, 10)
        assert counters_advance(late.counters)
        await late.stop()
        await first.stop()
    finally:
        await pub.stop()


async def test_origin_killed_edge_viewers_keep_their_sessions(start_node):
    """The publisher moves to a second origin; the edge pulls from there and its viewer
    continues on the same WHEP session (inactive, then active)."""
    origins = [start_node("--role", "origin"), start_node("--role", "origin")]
    edge = edge_of(start_node, *origins)
    pub = await publish(origins[0].url, "failover", "vp8")
    viewer = await WhepViewer(edge.url, "failover").start()
    try:
        async with session_events(viewer.location) as events:
            await viewer.wait_frames(30, 20)
            origins[0].kill()  # SIGKILL
            killed_at = time.monotonic()
            await pub.stop()
            pub = await publish(origins[1].url, "failover", "vp8")  # the publisher restores
            frames = viewer.frames
            await viewer.wait_frames(frames + 30, 20)
            back = time.monotonic() - killed_at
            assert viewer.connection_state == "connected"
            tail = [c for c in list(viewer.counters)[-20:] if c is not None]
            assert counters_advance(tail) and min(tail) < 300  # the new publisher's picture

            async def mirrored():
                return events[-2:] == ["inactive", "active"]

            await wait_for(mirrored, 5, "inactive then active")
        info = (await streams(edge.url))["failover"]["upstream"]
        assert info["url"] == origins[1].url and info["upstream_losses"] >= 1
        print(f"edge viewer's picture back {back:.2f} s after the origin was killed")
    finally:
        await viewer.stop()
        await pub.stop()


async def test_refusing_upstream_is_retried_and_reported(start_node):
    origin = start_node("--role", "origin", "--token", "secret")
    edge = edge_of(start_node, origin, extra=("--upstream-token", "wrong"))
    pub = await WhipPublisher(origin.url, "guarded", token="secret",
                              tracks=[TestPatternVideoTrack()], video_codec="vp8").start()
    try:
        started = time.monotonic()
        with pytest.raises(WhepError) as refused:
            await WhepViewer(edge.url, "guarded").start()
        assert refused.value.status == 409
        assert time.monotonic() - started < 5
        info = (await streams(edge.url))["guarded"]["upstream"]
        assert info["refusals"][origin.url]["status"] == 401
        # a bounded schedule: a handful of attempts over a second, not a storm
        await asyncio.sleep(1.0)
        info = (await streams(edge.url)).get("guarded", {}).get("upstream")
        attempts = info["attempts"] if info else 0
        assert attempts <= 6, attempts
        assert 'unbroken_relay_upstream_refusals_total{status="401"}' in await metrics(edge.url)
    finally:
        await pub.stop()


async def test_viewer_waits_while_the_stream_is_not_live_upstream_yet(start_node):
    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin)
    viewer = WhepViewer(edge.url, "soon", wait_live_ms=4000)
    joining = asyncio.create_task(viewer.start())
    await asyncio.sleep(1.5)  # the origin answered 409 (not live) at least once
    pub = await publish(origin.url, "soon", "vp8")
    try:
        await asyncio.wait_for(joining, 10)
        await viewer.wait_frames(20, 20)
        info = (await streams(edge.url))["soon"]["upstream"]
        assert info["refusals"][origin.url]["status"] == 409
    finally:
        await viewer.stop()
        await pub.stop()


async def test_pull_ends_after_the_linger(start_node):
    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin, linger="0.5")
    pub = await publish(origin.url, "brief", "vp8")
    try:
        viewer = await WhepViewer(edge.url, "brief").start()
        await viewer.wait_frames(10, 20)
        await viewer.stop()
        left = time.monotonic()

        async def gone_at_origin():
            return (await streams(origin.url))["brief"]["viewers"] == 0

        await wait_for(gone_at_origin, 5, "the pull to end")
        assert time.monotonic() - left >= 0.4
        assert "brief" not in await streams(edge.url)
    finally:
        await pub.stop()


async def test_a_stopping_edge_ends_its_pulls_at_the_origin(start_node):
    """SIGTERM of an edge with a pull live: the origin's session for that pull ends
    while the edge stops (a WHEP DELETE), not ≈ 25 s later when ICE consent expires."""
    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin, linger="30", extra=("--drain-timeout", "0.5"))
    pub = await publish(origin.url, "leaving", "vp8")
    viewer = await WhepViewer(edge.url, "leaving").start()
    try:
        await viewer.wait_frames(10, 20)
        assert (await streams(origin.url))["leaving"]["viewers"] == 1
        edge.proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()

        async def gone_at_origin():
            return (await streams(origin.url))["leaving"]["viewers"] == 0

        await wait_for(gone_at_origin, 4, "the pull's session to end at the origin")
        assert time.monotonic() - stopped < 4
    finally:
        await viewer.stop()
        await pub.stop()


async def test_codec_change_upstream_moves_edge_viewers_on(start_node):
    """The publisher comes back with VP8 instead of H264: the edge's viewer hears
    `reconnect` (as on one node) and a new viewer of the edge gets VP8."""
    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin)
    pub = await publish(origin.url, "switch", "h264", audio=False)
    viewer = await WhepViewer(edge.url, "switch").start()
    try:
        async with session_events(viewer.location) as events:
            await viewer.wait_frames(10, 20)
            await pub.stop()
            await asyncio.sleep(0.3)
            pub = await publish(origin.url, "switch", "vp8", audio=False)

            async def told_to_reconnect():
                return "reconnect" in events

            await wait_for(told_to_reconnect, 10, "reconnect")
        moved = await WhepViewer(edge.url, "switch").start()
        await moved.wait_frames(10, 20)
        assert moved.codec.lower() == "video/vp8"
        await moved.stop()
    finally:
        await viewer.stop()
        await pub.stop()


async def test_hls_served_by_an_edge(start_node):
    origin = start_node("--role", "origin", "--media-timeout", "3")
    edge = edge_of(start_node, origin)
    pub = await publish(origin.url, "hlsedge", "h264")
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{edge.url}/hls/hlsedge/index.m3u8"
            deadline = time.monotonic() + 20
            body = ""
            while "#EXTINF" not in body and time.monotonic() < deadline:
                async with http.get(url) as r:
                    body = await r.text() if r.status == 200 else ""
                await asyncio.sleep(0.2)
            assert "#EXTINF" in body, body
            segment = next(line for line in body.splitlines()
                           if line and not line.startswith("#"))
            async with http.get(f"{edge.url}/hls/hlsedge/{segment}") as r:
                assert r.status == 200 and len(await r.read()) > 1000
        info = (await streams(edge.url))["hlsedge"]
        assert info["upstream"]["state"] == "live" and info["viewers"] == 0
    finally:
        await pub.stop()


@pytest.mark.timeout(75)
@pytest.mark.parametrize("first_retransmission_lost", [False, True],
                         ids=["lost-once", "retransmission-lost-too"])
async def test_loss_on_the_relay_hop_is_repaired(start_node, first_retransmission_lost):
    """An in-process edge drops every 15th video packet the origin sends it (once): its
    pull NACKs them and the origin resends them (RTX); the edge's viewer sees a clean
    picture. With the first retransmission of each lost too, and drops further apart
    than aiortc's NACK window (it asks again only when a new gap appears, which then is
    too late), the pull asks again by itself: every dropped packet still arrives."""
    from aiohttp import web

    from tests.conftest import free_port
    from unbroken.media.pull import PullPeer
    from unbroken.node.app import create_app
    from unbroken.node.config import NodeConfig

    origin = start_node("--role", "origin")
    every = 200 if first_retransmission_lost else 15  # video packets between two drops
    dropped: set[int] = set()
    repaired: set[int] = set()
    rtx_dropped: set[int] = set()
    accept = PullPeer.accept

    async def lossy_accept(peer, answer_sdp):
        for transceiver in peer.pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.receiver._handle_rtp_packet = lossy(
                    transceiver.receiver._handle_rtp_packet)
        return await accept(peer, answer_sdp)

    def lossy(handle):
        count = 0
        media_ssrc = None

        async def drop_some(packet, arrival_time_ms):
            nonlocal count, media_ssrc
            media_ssrc = media_ssrc or packet.ssrc
            if packet.ssrc != media_ssrc:  # RTX: the payload starts with the original seq
                original = int.from_bytes(packet.payload[:2], "big")
                if first_retransmission_lost and original not in rtx_dropped:
                    rtx_dropped.add(original)
                    return
                repaired.add(original)
                await handle(packet, arrival_time_ms)
                return
            count += 1
            if count % every == 0 and packet.sequence_number not in dropped:
                dropped.add(packet.sequence_number)
                return
            await handle(packet, arrival_time_ms)

        return drop_some

    PullPeer.accept = lossy_accept
    config = NodeConfig(host="127.0.0.1", port=free_port(), role="edge", upstream=origin.url)
    # as the node's own server: what still runs at cleanup gets a short grace, not 60 s
    runner = web.AppRunner(create_app(config), shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    edge_url = f"http://127.0.0.1:{config.port}"
    pub = await publish(origin.url, "lossy", "vp8", audio=False)
    viewer = None
    try:
        viewer = await WhepViewer(edge_url, "lossy", audio=False).start()
        await viewer.wait_frames(90, 30)
        wanted = 5 if every == 15 else 3

        async def enough_dropped() -> bool:
            return len(dropped) >= wanted

        async def all_repaired() -> bool:  # the last one too, within its NACKs' 100 ms
            return not dropped - repaired

        await wait_for(enough_dropped, 40, f"{wanted} packets dropped")
        await wait_for(all_repaired, 3, "every dropped packet repaired")
        async with aiohttp.ClientSession() as http:
            async with http.get(origin.url + "/api/v1/sessions") as r:
                sessions = (await r.json())["sessions"]
        pull = next(s for s in sessions if s["kind"] == "play")["tracks"]["video"]
        assert pull["nacks"] >= len(dropped) // 2 and pull["retransmits"] > 0, pull
        assert counters_advance(viewer.counters)
    finally:
        PullPeer.accept = accept
        if viewer is not None:
            await viewer.stop()
        await pub.stop()
        await runner.cleanup()


async def test_edge_refuses_publishers_the_same_way_on_whip_and_the_session_channel(
        start_node):
    """An edge serves viewers only: a WHIP POST gets 403 `edge_no_publish` with a reason
    (before the offer is even read), the session channel the same code; nothing is
    created on the edge."""
    from unbroken.client.session import SessionClient, StreamFailed
    from unbroken.client.whip import WhipError
    from unbroken.protocol.refusals import REFUSALS, Refusal

    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin)
    with pytest.raises(WhipError) as refused:
        await publish(edge.url, "nopub", "vp8", audio=False)
    assert refused.value.status == REFUSALS[Refusal.EDGE_NO_PUBLISH].status == 403
    assert refused.value.code == "edge_no_publish"
    assert "edge" in refused.value.reason and "origin" in refused.value.reason
    assert refused.value.retry_after is None  # never here: no point retrying this node
    async with SessionClient(edge.url) as channel:
        with pytest.raises(StreamFailed) as failed:
            await channel.publish("nopub", [TestPatternVideoTrack()])
    assert failed.value.code == "edge_no_publish"
    assert "nopub" not in await streams(edge.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(edge.url + "/api/v1/sessions") as r:
            assert (await r.json())["sessions"] == []
    # the origin still takes the publisher, and the edge serves it
    pub = await publish(origin.url, "nopub", "vp8", audio=False)
    try:
        viewer = await WhepViewer(edge.url, "nopub", audio=False).start()
        await viewer.wait_frames(10, 20)
        await viewer.stop()
    finally:
        await pub.stop()


async def test_viewer_arriving_while_the_pull_ends_gets_frames_not_409(start_node):
    """The cold-join race: a pull's linger runs out just as a new viewer arrives (its
    offer lands while the old pull closes its upstream session). Joins at offsets around
    the linger's end: every one gets 201 (no `not_live`) and frames."""
    origin = start_node("--role", "origin")
    linger = 0.5
    edge = edge_of(start_node, origin, linger=str(linger))
    pub = await publish(origin.url, "race", "vp8", audio=False)
    try:
        for offset in (-0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1, 0.15):
            first = await WhepViewer(edge.url, "race", audio=False).start()
            await first.wait_frames(5, 20)
            await first.stop()
            # the edge checks its viewers every 0.1 s: aim around the end of the linger
            await asyncio.sleep(max(0.0, linger + offset))
            late = WhepViewer(edge.url, "race", audio=False)
            try:
                await late.start()  # a 409 here is the race
                await late.wait_frames(12, 10)
                assert counters_advance(late.counters)
            finally:
                await late.stop()
    finally:
        await pub.stop()


async def test_video_only_stream_edge_viewer_mirrors_the_origin_viewer(start_node):
    """A video-only stream: the edge's viewer negotiates exactly what a viewer at the
    origin does (an Opus section with no packets yet: kept on purpose, see the README),
    and when the publisher restores with a microphone its audio reaches that same edge
    session, with no renegotiation."""
    origin = start_node("--role", "origin")
    edge = edge_of(start_node, origin)
    pub = await publish(origin.url, "mute", "vp8", audio=False)
    viewers = [await WhepViewer(n.url, "mute").start() for n in (origin, edge)]
    try:
        await asyncio.gather(*(v.wait_frames(15, 20) for v in viewers))
        assert [v.audio_frames for v in viewers] == [0, 0]
        location = viewers[1].location
        await pub.stop()
        pub = await publish(origin.url, "mute", "vp8", audio=True)

        async def audio_at_the_edge():
            return viewers[1].audio_frames > 20

        await wait_for(audio_at_the_edge, 20, "audio at the edge's viewer")
        assert viewers[1].location == location and viewers[1].connection_state == "connected"
        assert viewers[0].audio_frames > 0
    finally:
        for v in viewers:
            await v.stop()
        await pub.stop()
