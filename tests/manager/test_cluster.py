"""The manager as a process, with real nodes: registration, routing, and WHIP/WHEP, the
session channel and HLS through its TLS proxy (independent clients, pinned certificate)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from cluster_helpers import NODE_TOKEN, pinned_http, wait_nodes

from unbroken.client.session import SessionClient
from unbroken.client.testsrc import TestPatternVideoTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher
from unbroken.manager.paths import split_segment
from unbroken.protocol.whip_whep import Resource

pytestmark = pytest.mark.timeout(90)


async def publish(base: str, stream: str, http: aiohttp.ClientSession) -> WhipPublisher:
    tracks = [TestPatternVideoTrack(320, 180, 15)]
    return await WhipPublisher(base, stream, tracks=tracks, video_codec="vp8", http=http).start()


async def test_nodes_register_and_routes_answer(start_manager, start_node):
    manager = start_manager()
    origin = start_node(*manager.node_args("origin"))
    start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        nodes = await wait_nodes(http, manager.url, 2)
        assert {n["role"] for n in nodes} == {"origin"}
        async with http.get(f"{manager.url}/api/v1/route/publish/cam") as resp:
            assert resp.status == 200
            answer = await resp.json()
        assert answer["role"] == "origin" and answer["whip_url"].endswith("/whip/cam")
        async with http.get(f"{manager.url}/api/v1/route/play/cam") as resp:
            assert resp.status == 409 and resp.headers["Retry-After"] == "1"
        async with http.get(f"{manager.url}/api/v1/route/publish/cam?group=elsewhere") as resp:
            assert resp.status in (200, 404)  # the claimed owner serves whatever the group
        async with http.get(f"{manager.url}/api/v1/route/publish/other?group=elsewhere") as resp:
            assert resp.status == 404
        async with http.get(f"{manager.url}/metrics") as resp:
            text = await resp.text()
        assert 'unbroken_manager_nodes{role="origin",state="serving"} 2.0' in text
        assert "unbroken_manager_route_seconds_bucket" in text
        assert origin.proc.poll() is None


async def test_whip_and_whep_through_the_manager_over_https(start_manager, start_node):
    manager = start_manager()
    origin = start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
        publisher = await publish(manager.url, "cam", http)
        try:
            await publisher.wait_connected(10)
            resource = Resource.parse(publisher.location)
            assert publisher.location.startswith(manager.url)
            ref = split_segment(resource.session)  # the node is named in the path
            assert ref.node_id == f"origin-127.0.0.1-{origin.port}"
            viewers = [await WhepViewer(manager.url, "cam", decode=False, http=http, wait_live_ms=3000).start()
                       for _ in range(2)]
            for viewer in viewers:
                await viewer.wait_frames(5, 10)
                assert viewer.events_url.startswith(manager.url + "/whep/cam/")
                assert viewer.proxied  # the answer said Via: the node may outlive the manager
                # the media is the node's: its ICE candidates, not the manager's port
                assert str(manager.port) not in viewer.answer_sdp.split("a=candidate")[1].split("\n")[0]
            async with http.get(f"{manager.url}/api/v1/streams") as resp:
                streams = (await resp.json())["streams"]
            await asyncio.sleep(1.2)  # a heartbeat with the viewers
            async with http.get(f"{manager.url}/api/v1/streams") as resp:
                streams = (await resp.json())["streams"]
            assert streams[0]["name"] == "cam" and streams[0]["origin"] == ref.node_id
            assert streams[0]["viewers"] == 2
            # the session's events through the manager, unbuffered
            async with http.get(viewers[0].events_url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                assert resp.status == 200
                first = await asyncio.wait_for(resp.content.readline(), 3)
                assert first.startswith(b"event: ")
            for viewer in viewers:
                await viewer.stop()  # DELETE through the manager
            async with http.get(f"{manager.url}/api/v1/streams") as resp:
                assert resp.status == 200
        finally:
            await publisher.stop()


async def test_session_channel_over_wss_through_the_manager(start_manager, start_node):
    manager = start_manager()
    start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
        publisher = await publish(manager.url, "chan", http)
        client = SessionClient(manager.url, http=http)
        try:
            await asyncio.wait_for(client.connect(), 10)
            assert client.welcome is not None
            start = time.monotonic()
            while not client.pings and time.monotonic() - start < 5:
                await asyncio.sleep(0.05)
            assert client.pings, "server pings pass through the manager"
        finally:
            await client.close()
            await publisher.stop()


async def test_bad_input(start_manager, start_node):
    manager = start_manager()
    start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
        base = manager.url
        # forged and unknown session paths: never proxied; a well-formed one naming a node
        # this just-started manager has not heard of is 503 for a heartbeat period (the
        # node may be on its way back), then 404
        for path in ("/whep/cam/abc", "/whip/cam/%2E%2E.x", "/whep/cam/!!.x"):
            async with http.delete(base + path) as resp:
                assert resp.status == 404, path
        for path in ("/whep/cam/Zm9yZ2Vk.abc", "/whep/cam/b3JpZ2lu.abc/events"):
            async with http.get(base + "/healthz") as resp:
                uptime = (await resp.json())["uptime"]
            method = http.get if path.endswith("/events") else http.delete
            async with method(base + path) as resp:
                if uptime < 3.5:
                    assert resp.status == 503, path
                    assert (await resp.json())["error"] == "node_not_known_yet"
                    assert resp.headers["Retry-After"] == "1"
                elif uptime > 4.5:
                    assert resp.status == 404, path
        # registration without (or with a wrong) node token
        record = {"node_id": "evil", "role": "origin", "url": "http://127.0.0.1:1"}
        async with http.put(f"{base}/api/v1/nodes/evil", json=record) as resp:
            assert resp.status == 401
        async with http.put(f"{base}/api/v1/nodes/evil", json=record,
                            headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        async with http.put(f"{base}/api/v1/nodes/evil", data="{not json",
                            headers={"Authorization": f"Bearer {NODE_TOKEN}"}) as resp:
            assert resp.status == 400
        # bad stream names, oversized bodies
        async with http.post(f"{base}/whip/..bad", data="v=0", headers={"Content-Type": "application/sdp"}) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/whip/cam", data="x" * (200 * 1024),
                             headers={"Content-Type": "application/sdp"}) as resp:
            assert resp.status == 413
        async with http.get(f"{base}/api/v1/route/play/cam?group=" + "g" * 65) as resp:
            assert resp.status == 400
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
