"""The relay's parts without processes: the static locator, the retry schedule, the
edge settings."""

import pytest

from unbroken.node.config import NodeConfig
from unbroken.node.relay import StaticUpstreams, Upstream
from unbroken.node.relay.pull import RETRY_SCHEDULE, retry_delay


async def test_static_upstreams_name_every_url_with_the_token():
    locator = StaticUpstreams(["http://a:1/", "http://b:2"], token="t")
    assert await locator.locate("x") == (Upstream("http://a:1", "t"), Upstream("http://b:2", "t"))
    assert locator.describe() == {"kind": "static", "urls": ["http://a:1", "http://b:2"]}
    with pytest.raises(ValueError):
        StaticUpstreams([])


def test_retry_schedule_is_bounded_and_grows():
    delays = [retry_delay(n) for n in range(1, 20)]
    assert delays == sorted(delays)
    assert max(delays) == RETRY_SCHEDULE[-1] <= 5.0
    assert delays[0] <= 0.1


def test_edge_settings():
    config = NodeConfig.load(role="edge", upstream="http://o1:8080, http://o2:8080/")
    assert config.upstream_urls == ["http://o1:8080", "http://o2:8080"]
    assert NodeConfig().role == "standalone" and NodeConfig().relay_linger == 5.0
    for bad in (dict(role="edge"), dict(role="cache"), dict(upstream="http://o:1"),
                dict(role="edge", upstream="o:1"),
                dict(role="edge", upstream="http://o:1", relay_linger=-1.0)):
        with pytest.raises(ValueError):
            NodeConfig.load(**bad)


async def test_following_upstream_events_stops_when_cancelled_as_an_event_arrives():
    """A pull's event follower must end when cancelled, whatever the moment: also in the
    instant a line has arrived but the follower has not run yet (Python 3.11's
    `asyncio.wait_for` returns the line then and drops the cancellation; a node shutting
    down then waited for its pull for ever). Every offset of the cancel after a real event
    over real HTTP, each bounded."""
    import asyncio

    from aiohttp import web

    from tests.conftest import free_port
    from unbroken.node.relay.upstream_client import UpstreamClient, UpstreamSession

    connected: asyncio.Queue = asyncio.Queue()  # one write queue per event stream

    async def events(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        writes: asyncio.Queue = asyncio.Queue()
        await connected.put(writes)
        while True:
            await writes.get()
            await response.write(b"event: active\ndata: {}\n\n")
            writes.task_done()

    app = web.Application()
    app.router.add_get("/events", events)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = UpstreamClient()
    session = UpstreamSession(Upstream(f"http://127.0.0.1:{port}"), "", "",
                              f"http://127.0.0.1:{port}/events")
    stuck = []
    try:
        for turns in range(8):
            seen = asyncio.Event()

            async def follow():
                async for _ in client.events(session, 250, 10.0):
                    seen.set()

            follower = asyncio.create_task(follow())
            writes = await asyncio.wait_for(connected.get(), 5)
            await writes.put(None)  # a first event: the follower is reading
            await asyncio.wait_for(seen.wait(), 5)
            await writes.put(None)
            await writes.join()  # the second event is on the wire
            for _ in range(turns):
                await asyncio.sleep(0)
            follower.cancel()
            done, _ = await asyncio.wait({follower}, timeout=2.0)
            if not done:
                stuck.append(turns)
                follower.cancel()
                await asyncio.wait({follower}, timeout=2.0)
    finally:
        await client.close()
        await runner.cleanup()
    assert not stuck, f"the follower ignored a cancel {turns} loop turns after an event"
