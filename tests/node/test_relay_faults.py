"""Origin → edge relay under a real network fault: the origin's path dies silently (no
RST, no ICMP, no route change: a zero-length FIFO drops every packet on the veth in
both directions). The origin runs in a network namespace; the edge, a second origin and
the clients run in the root namespace."""

import asyncio
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import netns_helpers as nh  # noqa: E402
from tests.node.test_relay import edge_of, session_events, streams, wait_for
from unbroken.client import Publisher, sources
from unbroken.client.framecode import counters_advance
from unbroken.client.whep import WhepViewer
from unbroken.node.relay.pull import KEEPALIVE_MS, MEDIA_SILENCE, SILENCE

pytestmark = pytest.mark.timeout(120)

# the edge must see the upstream's silence from its keep-alives, well under a second
DETECT_LIMIT = 1.0  # s from the cut to the edge's viewer hearing `inactive`
PICTURE_BACK_LIMIT = 5.0  # s from the cut to frames again (the publisher restores too)


async def first_event(publisher: Publisher, kind: str, timeout: float):
    """The publisher's next event of `kind` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = await publisher.next_event(left)
        except (TimeoutError, asyncio.TimeoutError):
            break
        if event.kind == kind:
            return event
    raise AssertionError(f"the publisher reported no {kind!r} within {timeout} s")


async def test_origin_path_dies_silently_edge_viewer_keeps_its_session(start_node, netns):
    """The origin's path stops (no RST). The SDK publisher, with both origins in its URL
    list, restores to the second one; the edge finds the upstream's keep-alives missing
    (SILENCE after the last one), looks for the stream on its upstream list again, and
    its viewer continues on the same WHEP session: frames advance, `inactive` then
    `active`, nothing renegotiated."""
    ns = netns("rl")  # removed at teardown, with the origin in it
    link = ns.add_link()
    ns.set_default_route(link)
    far = nh.NodeInNetns(ns, link.ns_ip, "--role", "origin", "--log-level", "warning").start()
    near = start_node("--role", "origin")
    edge = edge_of(start_node, far, near, linger="5")
    publisher = Publisher([far.url, near.url], "cut", source=sources.testsrc(audio=False),
                          codec="vp8")  # default restore options
    await publisher.start()
    viewer = await WhepViewer(edge.url, "cut", audio=False).start()
    try:
        await viewer.wait_frames(30, 20)
        assert publisher.url == far.url
        assert (await streams(edge.url))["cut"]["upstream"]["url"] == far.url
        # the media really crosses the veth: the cut below is on the path in use
        before = link.ns_counters()
        await asyncio.sleep(0.5)
        after = link.ns_counters()
        assert after["tx_packets"] - before["tx_packets"] > 10, (before, after)
        location = viewer.location
        async with session_events(location) as events:
            frames = viewer.frames
            cut_at = time.monotonic()
            link.block()

            async def inactive():
                return "inactive" in events

            await wait_for(inactive, 5, "inactive at the edge's viewer")
            # no RST, no FIN, the origin still runs: only the missing keep-alives
            # can tell, and they tell within SILENCE (+ a keep-alive interval)
            detected = time.monotonic() - cut_at
            restored = await first_event(publisher, "restored", 10)
            assert restored.url == near.url, restored
            await viewer.wait_frames(frames + 30, 15)
            # the first frame after the edge went inactive: the new origin's
            back = min(t for t in viewer.arrivals if t > cut_at + detected) - cut_at

            async def active_again():
                return events[-2:] == ["inactive", "active"]

            await wait_for(active_again, 5, "inactive then active")
        assert viewer.location == location and viewer.connection_state == "connected"
        tail = [c for c in list(viewer.counters)[-20:] if c is not None]
        assert counters_advance(tail), tail
        info = (await streams(edge.url))["cut"]["upstream"]
        assert info["url"] == near.url and info["upstream_losses"] == 1, info
        assert link.dropped() > 0, "the cut dropped nothing: the path was not in use"
        assert far.proc.poll() is None, "the origin behind the cut must still run"
        print(f"\nsilent origin path loss: edge viewer heard inactive after "
              f"{detected * 1000:.0f} ms (keep-alive {KEEPALIVE_MS} ms, silence "
              f"{SILENCE * 1000:.0f} ms); publisher {restored.report}; "
              f"edge viewer's frames back after {back * 1000:.0f} ms")
        assert detected < DETECT_LIMIT, detected
        assert back < PICTURE_BACK_LIMIT, back
    finally:
        link.unblock()
        await viewer.stop()
        await publisher.stop()
        far.kill()


async def test_media_gone_while_events_flow_is_a_lost_upstream(start_node, netns):
    """The origin's path drops every UDP packet but carries TCP: the upstream session's
    events and keep-alives keep coming while no media does (as when an origin stops
    sending to a pull it still has). The edge's media watchdog takes the upstream as lost
    after MEDIA_SILENCE, pulls again (in vain while UDP is cut, then on the same origin)
    and its viewer plays again on the same WHEP session."""
    ns = netns("mu")
    link = ns.add_link()
    ns.set_default_route(link)
    origin = nh.NodeInNetns(ns, link.ns_ip, "--role", "origin", "--log-level", "warning").start()
    publisher = nh.CliClient("publish", origin.url, "mute", "--codec", "vp8",
                             prefix=ns.argv(), name="ns-publisher")  # beside the origin
    await publisher.start()
    edge = edge_of(start_node, origin, linger="5")
    viewer = None
    try:
        async def live_at_origin():
            return (await streams(origin.url)).get("mute", {}).get("live", False)

        await wait_for(live_at_origin, 20, "the stream live at the origin")
        viewer = await WhepViewer(edge.url, "mute", audio=False).start()
        await viewer.wait_frames(20, 20)
        location = viewer.location
        link.block_udp()
        cut_at = time.monotonic()

        async def lost():
            return (await streams(edge.url))["mute"]["upstream"]["upstream_losses"] >= 1

        await wait_for(lost, MEDIA_SILENCE + 3, "the edge taking the silent upstream as lost")
        detected = time.monotonic() - cut_at
        info = (await streams(edge.url))["mute"]["upstream"]
        assert "no media" in (info["last_error"] or ""), info
        link.unblock()
        frames = viewer.frames
        await viewer.wait_frames(frames + 30, 20)
        assert viewer.location == location and viewer.connection_state == "connected"
        print(f"\nmedia gone, events flowing: upstream lost after {detected:.2f} s "
              f"(MEDIA_SILENCE {MEDIA_SILENCE} s)")
        assert detected < MEDIA_SILENCE + 1.5, detected
    finally:
        link.unblock()
        if viewer is not None:
            await viewer.stop()
        await publisher.stop()
        origin.kill()
