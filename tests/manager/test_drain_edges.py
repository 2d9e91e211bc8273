"""Zero-gap drain of an edge, with real processes: SDK viewers (the Python Subscriber,
decoding, through a plain-HTTP manager) on an edge that gets SIGTERM move to the other
edge make-before-break; their decoded frame counters have no hole."""

from __future__ import annotations

import asyncio
import time

import pytest
from drain_cluster import HttpManager, clocked_source, exited, start_viewers, until

from cluster_helpers import wait_nodes
from unbroken.client import Publisher
from unbroken.client.options import RestoreOptions
from unbroken.manager.paths import split_segment
from unbroken.protocol.whip_whep import Resource

pytestmark = pytest.mark.timeout(120)

VIEWERS = 3
OPTIONS = dict(network_watch=False)


def node_of(client) -> str:
    """The node id a client's current session is on (from its manager-made Location)."""
    return split_segment(Resource.parse(client.attempt.viewer.location).session).node_id


async def restored(events: list, timeout: float) -> None:
    await until(lambda: _has(events, "restored"), timeout, "a restore")


async def _has(events: list, kind: str) -> bool:
    return any(e.kind == kind for e in events)


async def test_viewers_leave_a_draining_edge_without_a_missing_frame(start_node):
    manager = HttpManager().start()
    try:
        start_node(*manager.node_args("origin"))
        edges = [start_node(*manager.node_args("edge", "--relay-linger", "1",
                                               "--drain-timeout", "8")) for _ in range(2)]
        import aiohttp
        async with aiohttp.ClientSession() as http:
            await wait_nodes(http, manager.url, 3)
        epoch = time.monotonic()
        publisher = await Publisher(manager.url, "cam", source=clocked_source(epoch), codec="vp8",
                                    options=RestoreOptions(**OPTIONS)).start()
        viewers: list = []
        try:
            viewers, logs, events = await start_viewers(manager.url, VIEWERS, **OPTIONS)
            await asyncio.sleep(2)
            on = [node_of(v) for v in viewers]
            assert all(n.startswith("edge-") for n in on), on
            busiest = max(set(on), key=on.count)
            victim = next(e for e in edges if busiest.endswith(f"-{e.port}"))
            moving = [i for i, n in enumerate(on) if n == busiest]
            marks = [log.mark() for log in logs]
            victim.proc.send_signal(15)
            sigterm_at = time.monotonic()
            for i in moving:
                await restored(events[i], 10)
            await asyncio.sleep(1.5)
            for i in moving:
                assert node_of(viewers[i]) != busiest
                report = next(e.report for e in events[i] if e.kind == "restored")
                gap = logs[i].largest_gap(marks[i])
                print(f"viewer {i}: restore {report.restore_ms} ms, gap_ms {report.gap_ms}, "
                      f"largest counter gap {gap} frames, missing {logs[i].missing(marks[i])}, "
                      f"{logs[i].fps(marks[i]):.1f} fps, steps {logs[i].steps(marks[i], sigterm_at)}")
                assert report.fault == "node_draining"
                assert logs[i].fps(marks[i]) > 20
                assert gap == 0, logs[i].missing(marks[i])
            # the edge exits once its viewers are gone (well before its drain deadline)
            await exited(victim.proc, 8)
            print(f"edge exited {time.monotonic() - sigterm_at:.2f} s after SIGTERM")
            assert time.monotonic() - sigterm_at < 6
        finally:
            for viewer in viewers:
                await viewer.stop()
            await publisher.stop()
    finally:
        manager.kill()
