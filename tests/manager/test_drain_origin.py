"""Zero-gap drain of an origin, with real processes: the publisher (Python SDK, through
a plain-HTTP manager) on an origin that gets SIGTERM moves to the other origin; the
draining origin keeps it until the edge pulling the stream has switched upstream; the
edge's viewers keep their sessions and their decoded frame counters have no hole."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from drain_cluster import HttpManager, clocked_source, exited, start_viewers, until

from cluster_helpers import wait_nodes
from unbroken.client import Publisher
from unbroken.client.options import RestoreOptions
from unbroken.manager.paths import split_segment
from unbroken.protocol.whip_whep import Resource

pytestmark = pytest.mark.timeout(120)

VIEWERS = 2
OPTIONS = dict(network_watch=False)


def node_of(location: str) -> str:
    return split_segment(Resource.parse(location).session).node_id


async def test_a_draining_origin_hands_its_publisher_over_without_a_missing_frame(start_node):
    manager = HttpManager().start()
    try:
        origins = [start_node(*manager.node_args("origin", "--drain-timeout", "8"))
                   for _ in range(2)]
        edge = start_node(*manager.node_args("edge", "--relay-linger", "1"))
        async with aiohttp.ClientSession() as http:
            await wait_nodes(http, manager.url, 3)
        pub_events: list = []
        publisher = await Publisher(manager.url, "cam", source=clocked_source(time.monotonic()),
                                    codec="vp8", on_event=pub_events.append,
                                    options=RestoreOptions(**OPTIONS)).start()
        viewers: list = []
        try:
            viewers, logs, events = await start_viewers(manager.url, VIEWERS, **OPTIONS)
            await asyncio.sleep(2)
            first = node_of(publisher.attempt.session.location)
            sessions = [v.attempt.viewer.location for v in viewers]
            assert all(node_of(s).startswith("edge-") for s in sessions)
            victim = next(o for o in origins if first.endswith(f"-{o.port}"))
            marks = [log.mark() for log in logs]
            victim.proc.send_signal(15)
            sigterm_at = time.monotonic()
            await until(lambda: _has(pub_events, "restored"), 10, "the publisher's restore")
            assert node_of(publisher.attempt.session.location) != first
            await exited(victim.proc, 10)  # (the publisher and viewers run meanwhile)
            exited_s = time.monotonic() - sigterm_at
            await asyncio.sleep(1.5)
            for i, viewer in enumerate(viewers):
                gap = logs[i].largest_gap(marks[i])
                print(f"viewer {i}: largest counter gap {gap} frames, "
                      f"missing {logs[i].missing(marks[i])}, events "
                      f"{[(e.kind, e.reason) for e in events[i]][-6:]}")
            print(f"viewer 0: {logs[0].fps(marks[0]):.1f} fps, steps "
                  f"{logs[0].steps(marks[0], sigterm_at)[:10]}")
            print("\n".join(line[:300] for line in edge.log().splitlines()
                            if "pull" in line or "upstream" in line))
            print(f"origin exited {exited_s:.2f} s after SIGTERM")
            # it let the publisher go once the edge had switched (well before its deadline)
            assert exited_s < 6
            for i, viewer in enumerate(viewers):
                # the same WHEP session at the edge all along, and no frame missing
                assert viewer.attempt.viewer.location == sessions[i]
                assert not [e for e in events[i] if e.kind == "restored"]
                assert logs[i].fps(marks[i]) > 20
                assert logs[i].largest_gap(marks[i]) == 0, logs[i].missing(marks[i])
        finally:
            for viewer in viewers:
                await viewer.stop()
            await publisher.stop()
    finally:
        manager.kill()


async def _has(events: list, kind: str) -> bool:
    return any(e.kind == kind for e in events)
