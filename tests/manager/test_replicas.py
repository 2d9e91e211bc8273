"""Several managers over one Redis, with real processes: any replica serves any session's
follow-up requests, a SIGKILLed manager stops no media, a SIGKILLed node leaves routing
within its lease, a Redis restart loses nothing."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from cluster_helpers import pinned_http, wait_nodes

from unbroken.client.testsrc import TestPatternVideoTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher

pytestmark = pytest.mark.timeout(120)
_prefix = ""


def shared(redis_server) -> list[str]:
    """Manager options for one cluster in the tests' Redis (a prefix of this test's own)."""
    return ["--redis", redis_server.url, "--redis-prefix", _prefix]


@pytest.fixture(autouse=True)
def _cluster_prefix():
    global _prefix
    _prefix = f"t{uuid.uuid4().hex[:8]}"


async def test_two_managers_one_redis(redis_server, start_manager, start_node):
    first = start_manager(*shared(redis_server))
    second = start_manager(*shared(redis_server))
    # nodes register with the first; the second knows them through Redis
    start_node(*first.node_args("origin"))
    start_node(*first.node_args("origin"))
    start_node(*first.node_args("edge"))
    async with pinned_http(first.fingerprint) as http_a, pinned_http(second.fingerprint) as http_b:
        await wait_nodes(http_a, first.url, 3)
        nodes = await wait_nodes(http_b, second.url, 3)
        assert sorted(n["role"] for n in nodes) == ["edge", "origin", "origin"]
        publisher = await WhipPublisher(first.url, "cam", tracks=[TestPatternVideoTrack(320, 180, 15)],
                                        video_codec="vp8", http=http_a).start()
        try:
            await publisher.wait_connected(10)
            # both managers route the stream to the same origin, and play to the edge
            answers = []
            for http, manager in ((http_a, first), (http_b, second)):
                async with http.get(f"{manager.url}/api/v1/route/publish/cam") as resp:
                    answers.append((await resp.json())["node_id"])
            assert answers[0] == answers[1]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                async with http_b.get(f"{second.url}/api/v1/route/play/cam") as resp:
                    if resp.status == 200:
                        assert (await resp.json())["role"] == "edge"
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the second manager never saw the stream live")
            # the session's follow-up through the *other* replica: PATCH reaches the node
            location = publisher.location.replace(first.url, second.url)
            async with http_b.patch(location, data="a=end-of-candidates\r\n",
                                    headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as resp:
                assert resp.status == 204, await resp.text()
            async with http_b.get(f"{second.url}/api/v1/streams") as resp:
                streams = (await resp.json())["streams"]
            assert streams[0]["origin"] == answers[0]
        finally:
            await publisher.stop()


async def test_manager_killed_media_continues_other_answers(redis_server, start_manager, start_node):
    first = start_manager(*shared(redis_server))
    second = start_manager(*shared(redis_server))
    start_node(*first.node_args("origin"))
    async with pinned_http(first.fingerprint) as http_a, pinned_http(second.fingerprint) as http_b:
        await wait_nodes(http_a, first.url, 1)
        await wait_nodes(http_b, second.url, 1)
        publisher = await WhipPublisher(first.url, "live", tracks=[TestPatternVideoTrack(320, 180, 15)],
                                        video_codec="vp8", http=http_a).start()
        viewer = await WhepViewer(first.url, "live", decode=False, http=http_a, wait_live_ms=3000).start()
        try:
            await viewer.wait_frames(5, 10)
            first.kill()  # SIGKILL
            before = viewer.frames
            await asyncio.sleep(1.0)
            assert viewer.frames > before + 5, "media never passes through the manager"
            async with http_b.get(f"{second.url}/api/v1/route/play/live") as resp:
                assert resp.status == 200
            # the viewer's session ends through the surviving replica
            location = viewer.location.replace(first.url, second.url)
            async with http_b.delete(location) as resp:
                assert resp.status == 200
            viewer.location = None
        finally:
            await viewer.stop()
            await publisher.stop()


async def test_node_killed_leaves_routing_within_its_lease(redis_server, start_manager, start_node):
    manager = start_manager(*shared(redis_server))
    node = start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
        node.kill()
        killed = time.monotonic()
        while time.monotonic() - killed < 5:
            async with http.get(f"{manager.url}/api/v1/route/publish/x") as resp:
                if resp.status == 404:
                    break
            await asyncio.sleep(0.05)
        assert time.monotonic() - killed <= 3.5


async def test_node_failing_a_proxied_request_is_suspect_at_once(start_manager, start_node):
    manager = start_manager()
    node = start_node(*manager.node_args("origin"))
    start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 2)
        node.kill()
        # the next offers never fail: a dead node found while connecting is retried elsewhere
        for i in range(10):  # power of two choices: the dead node is among the picks
            async with http.post(f"{manager.url}/whip/s{i}", data="v=0\r\n",
                                 headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status == 400, await resp.text()  # the live node's SDP verdict
        async with http.get(f"{manager.url}/api/v1/nodes") as resp:
            states = {n["node_id"]: n["state"] for n in (await resp.json())["nodes"]}
        assert states.get(f"origin-127.0.0.1-{node.port}") in (None, "suspect")


async def test_redis_restart_rebuilds_from_heartbeats(redis_server, start_manager, start_node):
    first = start_manager(*shared(redis_server))
    second = start_manager(*shared(redis_server))
    start_node(*first.node_args("origin"))
    async with pinned_http(first.fingerprint) as http_a, pinned_http(second.fingerprint) as http_b:
        await wait_nodes(http_b, second.url, 1)
        publisher = await WhipPublisher(first.url, "keep", tracks=[TestPatternVideoTrack(320, 180, 15)],
                                        video_codec="vp8", http=http_a).start()
        try:
            await publisher.wait_connected(10)
            redis_server.kill()
            redis_server.start()  # empty: no persistence
            await asyncio.sleep(2.5)  # heartbeats refill it
            for http, manager in ((http_a, first), (http_b, second)):
                async with http.get(f"{manager.url}/api/v1/route/play/keep") as resp:
                    assert resp.status == 200, await resp.text()
                nodes = await wait_nodes(http, manager.url, 1)
                assert nodes[0]["streams"] == ["keep"]
            viewer = await WhepViewer(second.url, "keep", decode=False, http=http_b).start()
            await viewer.wait_frames(3, 10)
            await viewer.stop()
        finally:
            await publisher.stop()
