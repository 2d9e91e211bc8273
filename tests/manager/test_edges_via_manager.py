"""Edges that ask the manager where a stream is (``--role edge --manager`` without
``--upstream``): viewers routed to an edge through the manager get the stream the edge
pulls from the stream's origin, and keep their session when the publisher moves to
another origin after its first one was SIGKILLed; SDK viewers whose edge is SIGKILLed get
a new route from the manager and play on from the other edge."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest
from cluster_helpers import NODE_TOKEN, pinned_http, wait_nodes

from unbroken.client import ClientEvent, Publisher, Subscriber, sources
from unbroken.client.testsrc import TestPatternVideoTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher
from unbroken.manager.paths import split_segment
from unbroken.protocol.whip_whep import Resource

pytestmark = pytest.mark.timeout(90)


async def publish(base: str, stream: str, http: aiohttp.ClientSession) -> WhipPublisher:
    tracks = [TestPatternVideoTrack(320, 180, 15)]
    publisher = await WhipPublisher(base, stream, tracks=tracks, video_codec="vp8", http=http).start()
    await publisher.wait_connected(10)
    return publisher


async def publish_and_watch(manager_url: str, stream: str, http: aiohttp.ClientSession
                            ) -> tuple[WhipPublisher, str, WhepViewer]:
    """A publisher and a viewer, both through the manager: the publisher's origin (its
    node id) and the viewer, which the manager routes to an edge."""
    publisher = await publish(manager_url, stream, http)
    origin = split_segment(Resource.parse(publisher.location).session).node_id
    viewer = await WhepViewer(manager_url, stream, decode=False, http=http,
                              wait_live_ms=3000).start()
    return publisher, origin, viewer


async def locate(http: aiohttp.ClientSession, manager_url: str, stream: str) -> list[dict]:
    async with http.get(f"{manager_url}/api/v1/locate/{stream}",
                        headers={"Authorization": f"Bearer {NODE_TOKEN}"}) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["upstreams"]


async def wait_for(check, timeout: float, what: str):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_locate_needs_the_node_token(start_manager):
    manager = start_manager()
    async with pinned_http(manager.fingerprint) as http:
        async with http.get(f"{manager.url}/api/v1/locate/cam") as resp:
            assert resp.status == 401
        assert await locate(http, manager.url, "cam") == []
        async with http.get(f"{manager.url}/api/v1/locate/..bad",
                            headers={"Authorization": f"Bearer {NODE_TOKEN}"}) as resp:
            assert resp.status == 400


async def test_an_edge_pulls_from_the_origin_the_manager_names(start_manager, start_node):
    manager = start_manager()
    origins = [start_node(*manager.node_args("origin")) for _ in range(2)]
    edge = start_node(*manager.node_args("edge", "--relay-linger", "1"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 3)
        publisher, first_origin, viewer = await publish_and_watch(manager.url, "cam", http)
        second = None
        try:
            await viewer.wait_frames(10, 10)
            # the viewer went to the edge, which pulls from the publisher's origin
            assert split_segment(Resource.parse(viewer.location).session).node_id.startswith("edge-")
            upstreams = await locate(http, manager.url, "cam")
            assert [u["node"] for u in upstreams] == [first_origin]
            async with http.get(f"{edge.url}/api/v1/streams/cam") as resp:
                info = await resp.json()
            origin = next(o for o in origins if first_origin.endswith(f"-{o.port}"))
            assert info["upstream"]["url"] == origin.url

            # the origin dies; the publisher comes back through the manager on the other
            # origin; the edge finds it there and its viewer goes on, same session
            origin.proc.kill()
            origin.proc.wait(5)
            second = await wait_for(lambda: _republish(manager.url, http), 10, "a second origin")
            frames = viewer.frames
            await viewer.wait_frames(frames + 15, 15)
            assert viewer.pc.connectionState == "connected"
            upstreams = await locate(http, manager.url, "cam")
            assert upstreams and upstreams[0]["node"] != first_origin
        finally:
            await viewer.stop()
            if second is not None:
                await second.stop()
            await publisher.stop()


async def test_an_edge_reports_a_frozen_origin_to_the_manager(start_manager, start_node):
    """SIGSTOP: the origin's port still takes connections and its heartbeats stop only
    quietly. The edge's pull finds it first (its event stream falls silent) and names it
    to the manager in its next locate; the manager checks it at once and routes the
    publisher's new session to the other origin; the edge's viewer goes on."""
    manager = start_manager()
    origins = [start_node(*manager.node_args("origin")) for _ in range(2)]
    start_node(*manager.node_args("edge", "--relay-linger", "1"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 3)
        publisher, first_origin, viewer = await publish_and_watch(manager.url, "frozen", http)
        second = None
        try:
            await viewer.wait_frames(10, 10)
            origin = next(o for o in origins if first_origin.endswith(f"-{o.port}"))
            origin.proc.send_signal(signal.SIGSTOP)
            await wait_for(lambda: _logged(manager, f"node {first_origin} suspect: a client found "
                                                    "it unresponsive"), 5, "the edge's report")
            second = await wait_for(lambda: _republish(manager.url, http, "frozen"), 10,
                                    "a second origin")
            await viewer.wait_frames(viewer.frames + 15, 15)
            upstreams = await locate(http, manager.url, "frozen")
            assert upstreams and upstreams[0]["node"] != first_origin
        finally:
            await viewer.stop()
            if second is not None:
                await second.stop()
            await publisher.stop()


async def _logged(manager, text: str) -> bool:
    return text in manager.log()


async def _republish(manager_url: str, http: aiohttp.ClientSession,
                     stream: str = "cam") -> WhipPublisher | None:
    try:
        return await publish(manager_url, stream, http)
    except (ConnectionError, aiohttp.ClientError, TimeoutError):
        return None


async def test_sdk_viewers_restore_on_another_edge_after_an_edge_sigkill(start_manager, start_node):
    manager = start_manager()
    start_node(*manager.node_args("origin"))
    edges = {f"edge-127.0.0.1-{n.port}": n for n in
             (start_node(*manager.node_args("edge", "--relay-linger", "1")) for _ in range(2))}
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 3)
    through = {"manager": manager.url, "manager_fingerprint": manager.fingerprint}
    events: list[ClientEvent] = []
    pub = await Publisher(None, "edgekill", source=sources.testsrc(320, 180, 15, audio=False),
                          codec="vp8", **through).start()
    subs = [await Subscriber(None, "edgekill", on_event=events.append, **through).start()
            for _ in range(3)]
    try:
        for sub in subs:
            await sub.viewer.wait_frames(sub.viewer.frames + 10, 15)
        assert all(sub.node in edges for sub in subs), [sub.node for sub in subs]
        victim_id = subs[0].node
        on_victim = [sub for sub in subs if sub.node == victim_id]
        edges[victim_id].proc.kill()
        await wait_for(lambda: _restored(events, len(on_victim)), 15, "every viewer restored")
        for event in (e for e in events if e.kind == "restored"):
            assert event.report.node != victim_id and event.report.node in edges, event
            print(f"edge SIGKILL: restore {event.report.restore_ms} ms, "
                  f"gap {event.report.gap_ms} ms, tries {event.report.tries}")
        for sub in subs:
            await sub.viewer.wait_frames(sub.viewer.frames + 10, 15)
        assert not [e for e in events if e.kind == "gave_up"]
    finally:
        for sub in subs:
            await sub.stop()
        await pub.stop()


async def _restored(events: list[ClientEvent], count: int) -> bool:
    return sum(e.kind == "restored" for e in events) >= count
