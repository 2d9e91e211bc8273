"""A manager restart with real processes: media never crosses the manager, so a
publisher and a viewer that came through it keep their media sessions (same Locations,
no restore, no missing frame) while the only manager is SIGKILLed and started again;
their signaling, which does cross it, is attached again through the restarted manager
(503 until it knows the node again): the event streams of WHIP/WHEP sessions, or the
session channel, which the node keeps for a resume; the restarted manager learns the
nodes and the stream back from their heartbeats."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from drain_cluster import FrameLog, HttpManager, clocked_source, until

from cluster_helpers import wait_nodes
from unbroken.client import Publisher, Subscriber
from unbroken.client.options import RestoreOptions

pytestmark = pytest.mark.timeout(90)

OPTIONS = dict(network_watch=False)


@pytest.mark.parametrize("signaling, stop", [("http", "kill"), ("session", "kill"),
                                             ("http", "term"), ("session", "term")])
async def test_the_only_manager_restarts_and_media_goes_on(start_node, signaling, stop):
    """`stop`: SIGKILL, or SIGTERM (the manager drains for 1 s, then closes what it
    relays: the node keeps session channels it was relaying for a resume)."""
    manager = HttpManager(args=["--drain-timeout", "1"]).start()
    try:
        start_node(*manager.node_args("origin"))
        async with aiohttp.ClientSession() as http:
            await wait_nodes(http, manager.url, 1)
            pub_events: list = []
            sub_events: list = []
            log = FrameLog()
            publisher = await Publisher(manager.url, "cam", source=clocked_source(time.monotonic()),
                                        codec="vp8", on_event=pub_events.append, signaling=signaling,
                                        options=RestoreOptions(**OPTIONS)).start()
            viewer = await Subscriber(manager.url, "cam", on_frame=log, on_event=sub_events.append,
                                      signaling=signaling, options=RestoreOptions(**OPTIONS)).start()
            try:
                await asyncio.sleep(1.5)
                sessions = (publisher.attempt.session.location, viewer.attempt.viewer.location)
                mark = log.mark()
                killed_at = time.monotonic()
                if stop == "kill":
                    manager.proc.kill()
                else:
                    manager.proc.terminate()
                assert await asyncio.to_thread(manager.proc.wait, 10) == (-9 if stop == "kill" else 0)
                await asyncio.sleep(0.5)
                # off the loop: start() waits for the manager, and the loop runs our media
                await asyncio.to_thread(manager.restart)
                await wait_nodes(http, manager.url, 1, timeout=10)

                async def stream_known() -> bool:
                    async with http.get(f"{manager.url}/api/v1/streams") as resp:
                        return "cam" in str(await resp.json())

                await until(stream_known, 10, "the restarted manager knows the stream")

                async def reattached() -> bool:
                    return (publisher.attempt.signaling.reattached >= 1
                            and viewer.attempt.signaling.reattached >= 1)

                # their signaling is attached again through the restarted manager
                await until(reattached, 5, "the signaling attached again")
                await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - killed_at)))
                print(f"publisher events {[(e.kind, e.reason) for e in pub_events]}")
                print(f"viewer events {[(e.kind, e.reason) for e in sub_events]}")
                print(f"viewer: {log.fps(mark):.1f} fps, largest counter gap "
                      f"{log.largest_gap(mark)}, steps {log.steps(mark, killed_at)[:8]}")
                assert not [e for e in pub_events + sub_events if e.kind == "restored"]
                assert (publisher.attempt.session.location,
                        viewer.attempt.viewer.location) == sessions
                assert log.fps(mark) > 20 and log.largest_gap(mark) == 0
            finally:
                await viewer.stop()
                await publisher.stop()
    finally:
        manager.kill()
