"""EventChannel: every reader gets every event; what comes while none reads waits."""

from unbroken.node.events import EventChannel


async def test_events_wait_for_a_reader_and_every_reader_gets_every_event():
    channel = EventChannel()
    channel.push("inactive", {"n": 1})  # nobody reads yet (a proxy restarting)
    first = channel.attach()
    assert await channel.next(first, 0.1) == ("inactive", {"n": 1})
    second = channel.attach()  # a re-attach while the old reader still hangs on
    channel.push("active")
    assert await channel.next(first, 0.1) == ("active", {})
    assert await channel.next(second, 0.1) == ("active", {})
    assert await channel.next(second, 0.01) == ("", {})  # keep-alive time
    channel.detach(first)
    channel.detach(second)
    channel.push("reconnect", {"code": "draining"})
    channel.close()
    late = channel.attach()
    assert await channel.next(late, 0.1) == ("reconnect", {"code": "draining"})
    assert await channel.next(late, 0.1) is None
    assert await channel.next(channel.attach(), 0.1) is None  # ended: nothing more


async def test_unsubscribed_events_reach_listeners_only():
    channel = EventChannel()
    heard = []
    channel.listeners.append(lambda e, d: heard.append(e))
    channel.subscribed = {"active"}
    reader = channel.attach()
    channel.push("viewercount", {"viewercount": 2})
    channel.push("active")
    assert heard == ["viewercount", "active"]
    assert await channel.next(reader, 0.1) == ("active", {})
