"""The Python SDK and the stream manager, with real processes (a manager over HTTPS with a
self-signed certificate, nodes registered with it, real SIGKILL and SIGTERM):

- the SDK asks the manager for a route on every try (seed 000) and connects to the
  routed node; a SIGKILLed node → a new route, restored, the report names the new node;
- two managers in the SDK's list, one SIGKILLed → the other answers, still restores;
- a node's drain notice through the manager names the manager as `redirect`, and the
  SDK restores to another node through a new route;
- HLS through the manager's proxy reaches the node that has the stream;
- a manager's own SIGTERM: it exits 0, sessions made through it keep their media;
- a SIGKILLed node is out of routing at once (its heartbeat connection closes).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from urllib.parse import urljoin

import aiohttp
import pytest
from cluster_helpers import ManagerProcess, free_port, pinned_http, wait_nodes

from unbroken.client import ClientEvent, HlsPlayer, ManagerRoutes, Publisher, Subscriber, sources
from unbroken.client.testsrc import TestPatternVideoTrack
from unbroken.client.options import RestoreOptions
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher
from unbroken.httpkit.tls import client_context
from unbroken.manager.tls import create_self_signed
from unbroken.protocol.states import Kind

pytestmark = pytest.mark.timeout(120)

WAIT_S = 15.0


class Recorder:
    """Collects a client's events; `wait(kind)` bounded."""

    def __init__(self) -> None:
        self.events: list[ClientEvent] = []

    def __call__(self, event: ClientEvent) -> None:
        self.events.append(event)

    async def wait(self, kind: str, count: int = 1, timeout: float = WAIT_S) -> ClientEvent:
        async with asyncio.timeout(timeout):
            while sum(e.kind == kind for e in self.events) < count:
                await asyncio.sleep(0.02)
        return [e for e in self.events if e.kind == kind][count - 1]


def node_id(node) -> str:
    return f"origin-127.0.0.1-{node.port}"


async def frames_advance(subscriber: Subscriber, n: int = 10, timeout: float = WAIT_S) -> None:
    viewer = subscriber.viewer
    await viewer.wait_frames(viewer.frames + n, timeout)


async def test_sdk_through_the_manager_node_killed_new_route_report_names_node(start_manager, start_node):
    manager = start_manager()
    a, b = start_node(*manager.node_args("origin")), start_node(*manager.node_args("origin"))
    pub_events, sub_events = Recorder(), Recorder()
    through = {"manager": manager.url, "manager_fingerprint": manager.fingerprint}
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 2)
    pub = await Publisher(None, "sdk", source=sources.testsrc(320, 180, 15, audio=False), codec="vp8",
                          on_event=pub_events, **through).start()
    sub = await Subscriber(None, "sdk", on_event=sub_events, **through).start()
    try:
        await frames_advance(sub)
        first = pub.node
        assert first in (node_id(a), node_id(b)) and sub.node == first  # the stream's node
        assert pub.url in (a.url, b.url)  # routed, then direct to the node
        victim, survivor = (a, b) if first == node_id(a) else (b, a)
        victim.kill()
        for events in (pub_events, sub_events):
            restored = await events.wait("restored")
            assert restored.report.node == node_id(survivor), restored
            assert restored.url == survivor.url
        assert pub.stats()["node"] == node_id(survivor)
        await frames_advance(sub)
    finally:
        await sub.stop()
        await pub.stop()
    assert not [e for e in pub_events.events + sub_events.events if e.kind == "gave_up"]


async def test_two_managers_one_killed_still_restores(redis_server, start_node, tmp_path):
    cert = create_self_signed("127.0.0.1")
    cert_file, key_file = cert.write(tmp_path)
    shared = ["--redis", redis_server.url, "--redis-prefix", f"t{time.monotonic_ns()}"]
    tls = ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    managers = [ManagerProcess(free_port(), shared, tls, fingerprint=cert.fingerprint).start()
                for _ in range(2)]
    first, second = managers
    try:
        # the nodes heartbeat to the second manager; the first learns them through Redis
        a, b = start_node(*second.node_args("origin")), start_node(*second.node_args("origin"))
        async with pinned_http(cert.fingerprint) as http:
            await wait_nodes(http, first.url, 2)
        both = f"{first.url},{second.url}"
        pub_events, sub_events = Recorder(), Recorder()
        pub = await Publisher(None, "pair", source=sources.testsrc(320, 180, 15, audio=False), codec="vp8",
                              manager=both, manager_ca=str(cert_file), on_event=pub_events).start()
        sub = await Subscriber(None, "pair", manager=both, manager_ca=str(cert_file),
                               on_event=sub_events).start()
        try:
            await frames_advance(sub)
            assert pub._own_source.last_route.manager == first.url  # the list's first answered
            victim, survivor = (a, b) if pub.node == node_id(a) else (b, a)
            first.kill()
            victim.kill()
            for events in (pub_events, sub_events):
                restored = await events.wait("restored")
                assert restored.report.node == node_id(survivor)
            assert pub._own_source.last_route.manager == second.url
            await frames_advance(sub)
        finally:
            await sub.stop()
            await pub.stop()
    finally:
        for m in managers:
            m.kill()


async def test_manager_routes_on_its_own_failover_and_refusals(start_manager, start_node):
    manager = start_manager()
    start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
    dead = f"https://127.0.0.1:{free_port()}"
    routes = ManagerRoutes([dead, manager.url], fingerprint=manager.fingerprint)
    try:
        route = await routes.route("cam", Kind.PUBLISH)
        assert route.manager == manager.url and routes.node_of(route.url) == route.node_id
        with pytest.raises(ConnectionError) as refused:  # NoRoute: not live, with Retry-After
            await routes.route("nothing-here", Kind.PLAY)
        assert refused.value.status == 409 and refused.value.retry_after == 1
    finally:
        await routes.close()
    wrong = ManagerRoutes(manager.url, fingerprint=create_self_signed("x").fingerprint)
    try:
        with pytest.raises(ConnectionError):  # the pin does not match: never trusted
            await wrong.route("cam", Kind.PUBLISH)
    finally:
        await wrong.close()


async def test_node_drain_notice_through_the_manager_sdk_restores_elsewhere(start_manager, start_node):
    manager = start_manager()
    a = start_node(*manager.node_args("origin"), "--drain-timeout", "3")
    through = {"manager": manager.url, "manager_fingerprint": manager.fingerprint}
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
        pub_events, sub_events = Recorder(), Recorder()
        pub = await Publisher(None, "drain", source=sources.testsrc(320, 180, 15, audio=False), codec="vp8",
                              on_event=pub_events, **through).start()
        sub = await Subscriber(None, "drain", on_event=sub_events, **through).start()
        b = start_node(*manager.node_args("origin"))
        await wait_nodes(http, manager.url, 2)
        # an independent viewer through the manager's proxy, listening to its session's events
        viewer = await WhepViewer(manager.url, "drain", decode=False, http=http, wait_live_ms=3000).start()
        try:
            await frames_advance(sub)
            assert sub.node == node_id(a)
            async with http.get(viewer.events_url, timeout=aiohttp.ClientTimeout(total=WAIT_S)) as events:
                a.proc.send_signal(signal.SIGTERM)  # scale-in: the node drains
                notice = await asyncio.wait_for(_sse_event(events, "node_draining"), WAIT_S)
            assert notice["redirect"] == "/whep/drain"  # relative: resolved against the manager
            assert urljoin(viewer.events_url, notice["redirect"]) == f"{manager.url}/whep/drain"
            # (a restore before the drain, e.g. a publisher starved while b started, is fine)
            drained = await _restored_by(pub_events, "node_draining")
            assert drained.report.node == node_id(b)
            async with asyncio.timeout(WAIT_S):
                while sub.node != node_id(b):
                    await asyncio.sleep(0.02)
            await frames_advance(sub)
            assert await asyncio.to_thread(a.proc.wait, 10) == 0
        finally:
            await viewer.stop()
            await sub.stop()
            await pub.stop()


async def _restored_by(events: Recorder, fault: str) -> ClientEvent:
    async with asyncio.timeout(WAIT_S):
        while True:
            found = [e for e in events.events if e.kind == "restored" and e.report.fault == fault]
            if found:
                return found[0]
            await asyncio.sleep(0.02)


async def _sse_event(response: aiohttp.ClientResponse, name: str) -> dict:
    event = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == name:
            return json.loads(line[5:].strip())
    raise AssertionError(f"the event stream ended before {name}")


async def test_hls_through_the_manager(start_manager, start_node):
    manager = start_manager()
    start_node(*manager.node_args("origin"), "--hls", "always")
    start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 2)
        pub = await Publisher(None, "hls", source=sources.testsrc(320, 180, 15, audio=False), codec="h264",
                              manager=manager.url, manager_fingerprint=manager.fingerprint).start()
        player = None
        try:
            await asyncio.sleep(1.2)  # a heartbeat names the stream's node
            player = HlsPlayer(manager.url, "hls", ssl=client_context(fingerprint=manager.fingerprint))
            await asyncio.wait_for(player.start(), WAIT_S)
            await player.wait_frames(10, WAIT_S)
            assert player.frames >= 10
            async with http.get(f"{manager.url}/hls/hls/index.m3u8") as resp:
                assert resp.status == 200 and (await resp.text()).startswith("#EXTM3U")
        finally:
            if player is not None:
                await player.stop()
            await pub.stop()


async def test_manager_sigterm_exits_zero_sessions_keep_their_media(start_manager, start_node):
    manager = start_manager("--drain-timeout", "1")
    start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
        publisher = await WhipPublisher(manager.url, "term", tracks=[TestPatternVideoTrack(320, 180, 15)],
                                        video_codec="vp8", http=http).start()
        viewer = await WhepViewer(manager.url, "term", decode=False, http=http, wait_live_ms=5000).start()
        try:
            await viewer.wait_frames(5, WAIT_S)
            # off the loop: it runs our publisher (a frozen publisher times out at the node)
            assert await asyncio.to_thread(manager.terminate, WAIT_S) == 0
            before = viewer.frames
            await viewer.wait_frames(before + 15, WAIT_S)  # media never crossed the manager
        finally:
            await viewer.stop()
            await publisher.stop()


async def test_sigkilled_node_out_of_routing_at_once(start_manager, start_node):
    manager = start_manager()
    node = start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
        await asyncio.sleep(1.2)  # the kill lands at any point of the heartbeat cycle
        node.kill()
        killed = time.monotonic()
        async with asyncio.timeout(5):
            while True:
                async with http.get(f"{manager.url}/api/v1/nodes") as resp:
                    if not (await resp.json())["nodes"]:
                        break
                await asyncio.sleep(0.01)
        out = time.monotonic() - killed
        assert out < 0.5, out  # not the 3 s lease: the heartbeat connection closed


async def test_a_frozen_node_its_clients_report_is_out_of_routing_at_once(start_manager, start_node):
    """SIGSTOP: the node's port still takes TCP connections and its heartbeat connection
    stays open, so the manager would find it only once its heartbeats are missed (≈ 2 s).
    Its clients find it first (missing pings), and their next route request names it
    (`unresponsive`): the manager checks it at once, routes them elsewhere meanwhile, and
    they play again from the other node."""
    manager = start_manager()
    a, b = start_node(*manager.node_args("origin")), start_node(*manager.node_args("origin"))
    pub_events, sub_events = Recorder(), Recorder()
    options = RestoreOptions(ping_period_ms=250, missing_pings=3, network_watch=False)
    through = {"manager": manager.url, "manager_fingerprint": manager.fingerprint,
               "options": options}
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 2)
    pub = await Publisher(None, "frozen", source=sources.testsrc(320, 180, 15, audio=False),
                          codec="vp8", on_event=pub_events, **through).start()
    sub = await Subscriber(None, "frozen", on_event=sub_events, **through).start()
    victim = None
    try:
        await frames_advance(sub)
        victim, survivor = (a, b) if pub.node == node_id(a) else (b, a)
        victim.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        for events in (pub_events, sub_events):
            restored = await events.wait("restored")
            assert restored.reason == "missing_pings", restored
            assert restored.report.node == node_id(survivor), restored
        print(f"restored {time.monotonic() - stopped:.2f} s after the SIGSTOP")
        assert "a client found it unresponsive" in manager.log()
        await frames_advance(sub)
    finally:
        await sub.stop()
        await pub.stop()
        if victim is not None:
            victim.kill()
