"""The Subscriber fails over WHEP → HLS when WebRTC is refused, keeps playing over HLS,
and moves back to WHEP when WebRTC works again (probe) or when asked."""

import asyncio

import aiohttp
import pytest
from aiohttp import web

from unbroken.client.framecode import counters_advance
from unbroken.client.events import ClientEvent
from unbroken.client.hls import HlsPlayer
from unbroken.client.options import RestoreOptions
from unbroken.client.subscriber import Subscriber
from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher

pytestmark = pytest.mark.timeout(45)


@pytest.fixture
def node(start_node):
    # a loaded machine can starve a publisher past the default 0.8 s media timeout
    return start_node("--media-timeout", "3")

HOP_BY_HOP = {"content-length", "transfer-encoding", "content-encoding", "connection", "host",
              "keep-alive"}


class Gate:
    """An HTTP proxy in front of the node that can refuse WHEP (a network where WebRTC
    is not allowed); everything else, HLS included, goes through."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.block_whep = True
        self.refused = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> "Gate":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._http = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def stop(self) -> None:
        await self._http.close()
        await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.block_whep and request.path.startswith("/whep"):
            self.refused += 1
            return web.json_response({"code": "forbidden", "reason": "no WebRTC here"},
                                     status=403)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._http.request(request.method, self.target + request.path_qs,
                                      headers=headers, data=await request.read(),
                                      timeout=aiohttp.ClientTimeout(total=None)) as r:
            response = web.StreamResponse(status=r.status, headers={
                k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP})
            await response.prepare(request)
            try:
                async for chunk in r.content.iter_any():
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientError):
                pass
            return response


@pytest.fixture
async def gate(node):
    g = await Gate(node.url).start()
    yield g
    await g.stop()


async def publish(url, stream, codec="h264"):
    return await WhipPublisher(url, stream, tracks=[TestPatternVideoTrack(), ToneAudioTrack()],
                               video_codec=codec).start()



async def frames_advance(sub: Subscriber, n: int = 30, timeout: float = 10) -> None:
    viewer = sub.viewer
    await viewer.wait_frames(viewer.frames + n, timeout)


async def until(predicate, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_whep_refused_fails_over_to_hls_and_keeps_playing(node, gate, codec="h264"):
    events: list[ClientEvent] = []
    pub = await publish(node.url, "fo", codec)
    options = RestoreOptions(transports=("whep", "hls"), transport_failures=2,
                             transport_probe_ms=0)
    sub = await Subscriber(gate.url, "fo", options=options, on_event=events.append).start()
    try:
        assert sub.transport == "hls" and isinstance(sub.viewer, HlsPlayer)
        assert gate.refused == 2
        switch = [e for e in events if e.kind == "transport"]
        assert [(e.state, e.reason) for e in switch] == [("hls", "whep failed 2 times")]
        assert sub.stats()["transport"] == "hls"
        await frames_advance(sub, 60, 15)
        assert counters_advance(list(sub.viewer.counters)[-40:])
        assert sub.viewer.audio_frames > 50
        # the publisher restores: HLS playback goes on across the discontinuity
        await pub.stop()
        await asyncio.sleep(0.3)
        pub = await publish(node.url, "fo", codec)
        await frames_advance(sub, 30, 15)
        assert sub.transport == "hls" and sub.viewer.discontinuities >= 1
        assert not [e for e in events if e.kind == "gave_up"]
    finally:
        await sub.stop()
        await pub.stop()


async def test_moves_back_to_whep_when_webrtc_works_again(node, gate):
    events: list[ClientEvent] = []
    pub = await publish(node.url, "back")
    options = RestoreOptions(transports=("whep", "hls"), transport_failures=1,
                             transport_probe_ms=500)
    sub = await Subscriber(gate.url, "back", options=options, on_event=events.append).start()
    try:
        assert sub.transport == "hls"
        await frames_advance(sub, 15)
        refused = gate.refused
        await asyncio.sleep(1.2)
        assert gate.refused > refused  # it keeps probing WHEP, and stays on HLS meanwhile
        assert sub.transport == "hls"
        gate.block_whep = False
        await until(lambda: sub.transport == "whep", 10, "back on WHEP")
        assert isinstance(sub.viewer, WhepViewer)
        await frames_advance(sub, 20)
        assert counters_advance(list(sub.viewer.counters)[-15:])
        assert [e.state for e in events if e.kind == "transport"] == ["hls", "whep"]
        # a transport change is not a failure: no restore was reported
        assert not [e for e in events if e.kind in ("restored", "gave_up")]
    finally:
        await sub.stop()
        await pub.stop()


async def test_switch_when_asked_and_hls_only(node):
    pub = await publish(node.url, "ask")
    sub = await Subscriber(node.url, "ask", options=RestoreOptions(
        transports=("whep", "hls"), transport_probe_ms=0)).start()
    hls_only = await Subscriber(node.url, "ask", options=RestoreOptions(
        transports=("hls",))).start()
    try:
        assert sub.transport == "whep"
        await frames_advance(sub, 10)
        assert await sub.switch_transport("hls")
        assert sub.transport == "hls" and isinstance(sub.viewer, HlsPlayer)
        await frames_advance(sub, 20)
        assert await sub.switch_transport("whep")
        assert isinstance(sub.viewer, WhepViewer)
        await frames_advance(sub, 10)
        # WebRTC disabled: HLS from the start
        assert hls_only.transport == "hls" and isinstance(hls_only.viewer, HlsPlayer)
        await frames_advance(hls_only, 20)
    finally:
        await hls_only.stop()
        await sub.stop()
        await pub.stop()
