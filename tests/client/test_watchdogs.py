"""Watchdogs on stand-ins: a counter that stops growing, an event stream that goes quiet
or ends."""

import asyncio
import time

import pytest
from aiohttp import web

from unbroken.client.reattach import ReattachPolicy
from unbroken.client.watchdogs import EventStreamWatch, FrameStallWatchdog, StallWatchdog
from unbroken.protocol.faults import Fault

pytestmark = pytest.mark.timeout(10)


class Faults:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self.arrived = asyncio.Event()

    def __call__(self, name: str, last_good: float) -> None:
        self.seen.append((name, last_good))
        self.arrived.set()


async def test_a_counter_that_stops_growing_is_a_fault_after_max_tries_samples():
    count, faults = [0], Faults()
    watchdog = StallWatchdog(Fault.BITRATE_ZERO, lambda: count[0], 0.02, 3, faults)
    watchdog.start()
    for _ in range(5):
        count[0] += 1
        await asyncio.sleep(0.02)
    assert not faults.seen
    stalled_at = time.monotonic()
    await asyncio.wait_for(faults.arrived.wait(), 2)
    (name, last_growth), = faults.seen
    assert name == Fault.BITRATE_ZERO and last_growth <= stalled_at


async def test_a_paused_watchdog_and_an_async_sample_report_nothing_while_paused():
    faults = Faults()

    async def flat() -> int:
        return 7

    watchdog = StallWatchdog(Fault.MEDIA_SILENCE, flat, 0.02, 2, faults)
    watchdog.paused = True
    watchdog.start()
    await asyncio.sleep(0.15)
    assert not faults.seen
    watchdog.paused = False
    await asyncio.wait_for(faults.arrived.wait(), 2)
    watchdog.stop()


async def test_frames_that_stop_while_packets_arrive_ask_for_a_keyframe_then_fault():
    frames, packets, faults, asked = [0], [0], Faults(), []

    async def request_keyframe() -> None:
        asked.append(time.monotonic())

    watchdog = FrameStallWatchdog(Fault.FRAMES_STALLED, lambda: frames[0], lambda: packets[0],
                                  0.4, request_keyframe, faults)
    watchdog.start()
    try:
        for _ in range(10):  # both flow
            frames[0] += 1
            packets[0] += 2
            await asyncio.sleep(0.02)
        stopped_at = time.monotonic()
        async with asyncio.timeout(2):
            while not faults.seen:  # packets only
                packets[0] += 2
                await asyncio.sleep(0.02)
        found_at = time.monotonic()
        (name, last_frame), = faults.seen  # when the watchdog last saw frames grow
        assert name == Fault.FRAMES_STALLED and last_frame <= stopped_at
        assert 0.4 <= found_at - last_frame < 1.0
        # keyframes asked for from half the window on, every quarter of it, before the fault
        assert asked and asked[0] - last_frame >= 0.2 and asked[-1] < found_at
        assert len(asked) <= 2 and all(b - a >= 0.1 for a, b in zip(asked, asked[1:]))
    finally:
        watchdog.stop()


async def test_frames_and_packets_stopping_together_is_not_a_frame_stall():
    """That is silence (the media-silence check's), or a paused stream."""
    frames, packets, faults = [0], [0], Faults()

    async def request_keyframe() -> None:
        raise AssertionError("no keyframe request without packets")

    watchdog = FrameStallWatchdog(Fault.FRAMES_STALLED, lambda: frames[0], lambda: packets[0],
                                  0.2, request_keyframe, faults)
    watchdog.start()
    try:
        for _ in range(5):
            frames[0] += 1
            packets[0] += 1
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # both stopped
        watchdog.paused = True  # paused (stream inactive): packets without frames are fine
        for _ in range(25):
            packets[0] += 1
            await asyncio.sleep(0.02)
        assert not faults.seen
    finally:
        watchdog.stop()


async def event_server(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/events", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/events"


async def test_events_are_handed_on_and_silence_is_missing_pings():
    async def handler(request):
        assert request.query["keepalive_ms"] == "100"
        assert request.headers["Authorization"] == "Bearer t"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: inactive\ndata: {"stream": "cam"}\n\n')
        await resp.write(b"event: odd\ndata: [1]\n\n")
        await asyncio.sleep(5)  # then silence, the socket still open
        return resp

    runner, url = await event_server(handler)
    events, faults = [], Faults()
    watch = EventStreamWatch(url, "t", 0.1, 3, lambda e, d: events.append((e, d)), faults)
    try:
        watch.start()
        await asyncio.wait_for(faults.arrived.wait(), 3)
        assert events == [("inactive", {"stream": "cam"}), ("odd", {})]
        assert [name for name, _ in faults.seen] == [Fault.MISSING_PINGS]
    finally:
        watch.stop()
        await runner.cleanup()


async def test_an_event_stream_that_ends_is_session_closed():
    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": keep-alive\n\n")
        return resp  # the node ends the stream

    runner, url = await event_server(handler)
    faults = Faults()
    watch = EventStreamWatch(url, None, 1.0, 3, lambda e, d: None, faults)
    try:
        watch.start()
        await asyncio.wait_for(faults.arrived.wait(), 3)
        assert [name for name, _ in faults.seen] == [Fault.SESSION_CLOSED]
    finally:
        watch.stop()
        await runner.cleanup()


async def test_a_proxied_stream_that_ends_is_attached_again_while_media_flows():
    """The proxy (a manager) restarts: the stream ends, the next try gets 503 (it does not
    know the node yet), then the stream again; no fault, the events go on."""
    calls = []

    async def handler(request):
        calls.append(time.monotonic())
        if len(calls) == 2:
            return web.json_response({"error": "node_not_known_yet"}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"event: active\ndata: {{\"n\": {len(calls)}}}\n\n".encode())
        if len(calls) == 1:
            return resp  # the proxy went away
        await asyncio.sleep(5)
        return resp

    runner, url = await event_server(handler)
    events, faults = [], Faults()
    watch = EventStreamWatch(url, None, 1.0, 3, lambda e, d: events.append((e, d)), faults,
                             ReattachPolicy(waits_ms=(0, 50)), lambda: True)
    try:
        watch.start()
        for _ in range(100):
            if len(events) == 2:
                break
            await asyncio.sleep(0.02)
        assert events == [("active", {"n": 1}), ("active", {"n": 3})]
        assert watch.reattached == 1 and not faults.seen and len(calls) == 3
    finally:
        watch.stop()
        await runner.cleanup()


@pytest.mark.parametrize("status, media_alive", [(404, True), (502, True), (503, False)])
async def test_a_proxied_stream_is_given_up_when_the_session_is_gone(status, media_alive):
    """404 (no such session), 502 (the node is failing) or dead media end it at once."""
    calls = []

    async def handler(request):
        calls.append(1)
        if len(calls) > 1:
            return web.json_response({"error": "x"}, status=status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        return resp

    runner, url = await event_server(handler)
    faults = Faults()
    watch = EventStreamWatch(url, None, 1.0, 3, lambda e, d: None, faults,
                             ReattachPolicy(), lambda: media_alive)
    try:
        watch.start()
        await asyncio.wait_for(faults.arrived.wait(), 3)
        assert [name for name, _ in faults.seen] == [Fault.SESSION_CLOSED]
        assert len(calls) == (2 if media_alive else 1)
    finally:
        watch.stop()
        await runner.cleanup()


async def test_every_loss_of_a_proxied_stream_gets_its_own_time_limit():
    """Attached again, then broken again later (a second manager restart): the second
    loss is re-attached too, though the first one started longer ago than the limit."""
    calls = []

    async def handler(request):
        calls.append(1)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": keep-alive\n\n")
        if len(calls) < 3:
            await asyncio.sleep(0.4)  # longer than the policy's limit
            request.transport.abort()  # broken, not ended
            return resp
        await asyncio.sleep(5)
        return resp

    runner, url = await event_server(handler)
    faults = Faults()
    watch = EventStreamWatch(url, None, 1.0, 3, lambda e, d: None, faults,
                             ReattachPolicy(waits_ms=(0,), max_ms=300), lambda: True)
    try:
        watch.start()
        for _ in range(100):
            if watch.reattached == 2:
                break
            await asyncio.sleep(0.02)
        assert watch.reattached == 2 and not faults.seen
    finally:
        watch.stop()
        await runner.cleanup()
