"""Node process lifecycle: clean SIGTERM, and failing clients that must not hurt others."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import aiohttp
import pytest

from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher

pytestmark = pytest.mark.timeout(60)


async def test_sigterm_drains_and_closes_sessions_cleanly(start_node):
    node = start_node("--drain-timeout", "1")
    pub = await WhipPublisher(node.url, "bye", tracks=[TestPatternVideoTrack()],
                              video_codec="vp8").start()
    viewer = await WhepViewer(node.url, "bye").start()
    await viewer.wait_frames(5, 10)
    events = []

    async def read_events():
        async with aiohttp.ClientSession() as http:
            async with http.get(viewer.location + "/events") as r:
                async for line in r.content:
                    if line.startswith(b"event:"):
                        events.append(line.decode().split(":", 1)[1].strip())

    reader = asyncio.create_task(read_events())
    await asyncio.sleep(0.3)
    started = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(node.proc.wait, 10)
    took = time.monotonic() - started
    await asyncio.wait_for(reader, 5)
    assert code == 0
    assert took < 5, took
    assert "reconnect" in events  # viewers were told to go elsewhere while draining
    lines = [json.loads(line) for line in node.log().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    assert "draining" in messages and "node stopped" in messages
    closed = [line for line in lines if line["msg"] == "session closed"]
    assert len(closed) == 2
    await viewer.stop()
    await pub.stop()


async def test_a_drain_request_with_the_node_token_drains_and_exits_like_sigterm(start_node):
    """POST /api/v1/drain (unbroken.protocol.node_admin): what a manager that did not
    start the node (no pid, maybe another machine) uses to drain it; the request's
    timeout overrides the node's own (30 s here)."""
    node = start_node("--drain-timeout", "30", "--node-token", "cluster-secret")
    pub = await WhipPublisher(node.url, "bye", tracks=[TestPatternVideoTrack()],
                              video_codec="vp8").start()
    viewer = await WhepViewer(node.url, "bye").start()
    await viewer.wait_frames(5, 10)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{node.url}/api/v1/drain", json={"timeout_s": 1}) as resp:
                assert resp.status == 401
            headers = {"Authorization": "Bearer cluster-secret"}
            async with http.post(f"{node.url}/api/v1/drain", json={"timeout_s": -1}, headers=headers) as resp:
                assert resp.status == 400
            async with http.get(f"{node.url}/healthz") as resp:
                assert (await resp.json())["status"] == "ok"  # a refused request drains nothing
            started = time.monotonic()
            async with http.post(f"{node.url}/api/v1/drain", json={"timeout_s": 1}, headers=headers) as resp:
                assert resp.status == 202
                body = await resp.json()
            assert body["status"] == "draining" and 0.5 < body["timeout_s"] <= 1
            # a second request may shorten the deadline, never lengthen it
            async with http.post(f"{node.url}/api/v1/drain", json={"timeout_s": 20}, headers=headers) as resp:
                assert resp.status == 202 and (await resp.json())["timeout_s"] <= 1
        code = await asyncio.to_thread(node.proc.wait, 10)
        took = time.monotonic() - started
        assert code == 0
        assert took < 4, took  # the viewer stayed: the deadline (1 s) ended the drain
        messages = [json.loads(line)["msg"] for line in node.log().splitlines() if line.startswith("{")]
        assert "drain requested" in messages and "draining" in messages and "node stopped" in messages
    finally:
        await viewer.stop()
        await pub.stop()


async def test_a_node_without_node_token_refuses_drain_requests():
    from aiohttp.test_utils import TestClient, TestServer

    from unbroken.node.app import create_app
    from unbroken.node.config import NodeConfig

    async with TestClient(TestServer(create_app(NodeConfig()))) as client:
        resp = await client.post("/api/v1/drain", headers={"Authorization": "Bearer x"})
        assert resp.status == 403
        assert (await client.get("/healthz")).status == 200
        assert (await (await client.get("/healthz")).json())["status"] == "ok"


VIEWER_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from unbroken.client.whep import WhepViewer
    async def main():
        v = await WhepViewer(sys.argv[1], sys.argv[2], decode=False).start()
        await v.wait_frames(10, 10)
        print("playing", flush=True)
        await asyncio.sleep(60)
    asyncio.run(main())
""")


async def test_killed_viewers_do_not_disturb_the_publisher_or_other_viewers(node):
    source = TestPatternVideoTrack()
    pub = await WhipPublisher(node.url, "robust", tracks=[source, ToneAudioTrack()],
                              video_codec="vp8").start()
    viewer = await WhepViewer(node.url, "robust").start()
    doomed = [subprocess.Popen([sys.executable, "-c", VIEWER_SCRIPT, node.url, "robust"],
                               stdout=subprocess.PIPE, env=dict(os.environ))
              for _ in range(3)]
    try:
        for proc in doomed:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line.strip() == b"playing"
        await viewer.wait_frames(10, 10)
        for proc in doomed:
            proc.kill()  # no DELETE, no DTLS close: the path just goes dead
        before = viewer.frames
        await asyncio.sleep(3)
        assert viewer.frames - before >= 75  # ~30 fps all along
        assert viewer.fps() >= 25
        async with aiohttp.ClientSession() as http:
            async with http.get(node.url + "/healthz") as r:
                assert r.status == 200
    finally:
        for proc in doomed:
            proc.kill()
            proc.wait()
        await viewer.stop()
        await pub.stop()


async def test_a_stalled_node_does_not_drop_publishers_whose_media_kept_coming(node):
    """SIGSTOP longer than the media timeout: the packets wait in the socket meanwhile."""
    pub = await WhipPublisher(node.url, "frozen", tracks=[TestPatternVideoTrack()],
                              video_codec="vp8").start()
    try:
        await asyncio.sleep(1)
        os.kill(node.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(1.5)
        os.kill(node.proc.pid, signal.SIGCONT)
        await asyncio.sleep(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(node.url + "/api/v1/streams/frozen") as r:
                assert (await r.json())["live"]
    finally:
        await pub.stop()


async def test_a_viewer_that_never_connects_is_ended_and_connected_ones_stay(start_node):
    """The watchdog times out a subscriber that never connects (ICE never starts); the
    connected viewer beside it, which the watchdog stops looking at, plays on."""
    from tests.node.test_http import offer

    node = start_node("--connect-timeout", "1")
    pub = await WhipPublisher(node.url, "dangling", tracks=[TestPatternVideoTrack()],
                              video_codec="vp8").start()
    viewer = await WhepViewer(node.url, "dangling", audio=False).start()
    try:
        await viewer.wait_frames(5, 10)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{node.url}/whep/dangling", data=await offer("recvonly"),
                                 headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 201
                dangling = r.headers["Location"]
            await asyncio.sleep(2.5)  # > connect timeout + a watchdog tick
            async with http.delete(node.url + dangling) as r:
                assert r.status == 404  # already ended
            async with http.get(f"{node.url}/api/v1/sessions") as r:
                kinds = [s["kind"] for s in (await r.json())["sessions"]]
        assert sorted(kinds) == ["play", "publish"]  # the connected ones, past the timeout
        frames = viewer.frames
        await viewer.wait_frames(frames + 10, 5)
    finally:
        await viewer.stop()
        await pub.stop()
