"""The cluster store: one suite that the in-process and the Redis store both pass, plus
what only Redis has (several clients, a server restart)."""

from __future__ import annotations

import asyncio

import pytest

from unbroken.manager.model import NodeRole
from unbroken.manager.store import (
    ClusterEvent,
    EventKind,
    LocalStore,
    RedisStore,
    StoreClosed,
    StoreUnavailable,
    open_store,
)
from unbroken.manager.store.subscription import QueueSubscription

from manager_helpers import drain_events, next_event, record

pytestmark = pytest.mark.timeout(30)

LEASE_S = 3.0
SHORT_S = 0.25


async def test_node_record_round_trips_under_its_lease(store):
    node = record("o1", streams=["cam"], sessions=3, cpu=0.25)
    await store.put_node(node, LEASE_S)
    stored = await store.get_node("o1")
    assert stored is not None and stored.record == node
    assert 0 < stored.lease_left_s <= LEASE_S
    assert await store.get_node("nobody") is None


async def test_lapsed_lease_takes_the_node_out(store):
    await store.put_node(record("o1"), SHORT_S)
    await store.put_node(record("o2"), LEASE_S)
    await asyncio.sleep(SHORT_S + 0.15)
    assert await store.get_node("o1") is None
    snapshot = await store.snapshot()
    assert [n.record.node_id for n in snapshot.nodes] == ["o2"]


async def test_origin_claim_is_set_if_absent(store):
    first = await store.claim_origin("cam", "o1", LEASE_S)
    assert first.owner == "o1" and first.acquired
    second = await store.claim_origin("cam", "o2", LEASE_S)
    assert second.owner == "o1" and not second.acquired and not second.owned_by("o2")
    again = await store.claim_origin("cam", "o1", LEASE_S)  # a refresh
    assert again.owner == "o1" and not again.acquired
    assert await store.origin_of("cam") == "o1"


async def test_only_the_owner_releases_a_claim(store):
    await store.claim_origin("cam", "o1", LEASE_S)
    assert not await store.release_origin("cam", "o2")
    assert await store.origin_of("cam") == "o1"
    assert await store.release_origin("cam", "o1")
    assert await store.origin_of("cam") is None
    assert not await store.release_origin("cam", "o1")
    assert (await store.claim_origin("cam", "o2", LEASE_S)).acquired


async def test_claim_replaces_only_the_named_owner(store):
    await store.claim_origin("cam", "o1", LEASE_S)
    wrong = await store.claim_origin("cam", "o3", LEASE_S, replacing="o2")
    assert wrong.owner == "o1" and not wrong.acquired
    taken = await store.claim_origin("cam", "o3", LEASE_S, replacing="o1")
    assert taken.owner == "o3" and taken.acquired


async def test_claim_lapses_with_its_ttl(store):
    await store.claim_origin("cam", "o1", SHORT_S)
    await asyncio.sleep(SHORT_S + 0.15)
    assert await store.origin_of("cam") is None
    assert (await store.claim_origin("cam", "o2", LEASE_S)).acquired


async def test_heartbeat_claims_what_an_origin_carries(store):
    owners = await store.put_node(record("o1", streams=["a", "b"]), LEASE_S)
    assert owners == {"a": "o1", "b": "o1"}
    # a second origin also reporting "b" does not take it
    owners = await store.put_node(record("o2", streams=["b", "c"]), LEASE_S)
    assert owners == {"b": "o1", "c": "o2"}
    snapshot = await store.snapshot()
    assert dict(snapshot.origins) == {"a": "o1", "b": "o1", "c": "o2"}


async def test_heartbeat_keeps_a_claim_alive(store):
    await store.put_node(record("o1", streams=["cam"]), SHORT_S)
    for _ in range(3):
        await asyncio.sleep(SHORT_S / 2)
        await store.put_node(record("o1", streams=["cam"]), SHORT_S)
    assert await store.origin_of("cam") == "o1"
    await asyncio.sleep(SHORT_S + 0.15)  # no more heartbeats: the claim lapses with the lease
    assert await store.origin_of("cam") is None


async def test_a_nodes_cleanup_never_unroutes_another_nodes_stream(store):
    """LiveKit #4797/#4316: one node's cleanup un-routed rooms live on another node."""
    await store.put_node(record("o1", streams=["mine"]), LEASE_S)
    await store.put_node(record("o2", streams=["theirs"]), LEASE_S)
    # o1 left believing it also carried "theirs" (a stale list, a publisher that moved)
    await store.remove_node(record("o1", streams=["mine", "theirs"]))
    assert await store.origin_of("theirs") == "o2"
    assert await store.origin_of("mine") is None
    assert await store.get_node("o1") is None
    assert (await store.get_node("o2")) is not None


async def test_edge_set_members_hold_their_own_lease(store):
    assert await store.add_stream_edge("cam", "e1", LEASE_S)
    assert not await store.add_stream_edge("cam", "e1", LEASE_S)
    assert await store.add_stream_edge("cam", "e2", SHORT_S)
    assert await store.stream_edges("cam") == {"e1", "e2"}
    await asyncio.sleep(SHORT_S + 0.15)
    assert await store.stream_edges("cam") == {"e1"}
    assert await store.remove_stream_edge("cam", "e1")
    assert not await store.remove_stream_edge("cam", "e1")
    assert await store.stream_edges("cam") == frozenset()


async def test_edge_membership_is_never_shortened(store):
    await store.add_stream_edge("cam", "e1", LEASE_S)
    await store.add_stream_edge("cam", "e1", SHORT_S)
    await asyncio.sleep(SHORT_S + 0.15)
    assert await store.stream_edges("cam") == {"e1"}


async def test_edge_heartbeat_renews_and_leave_removes_memberships(store):
    edge = record("e1", NodeRole.EDGE, streams=["a", "b"])
    owners = await store.put_node(edge, LEASE_S)
    assert owners == {}  # an edge claims nothing
    assert await store.stream_edges("a") == {"e1"} and await store.stream_edges("b") == {"e1"}
    assert await store.origin_of("a") is None
    await store.add_stream_edge("a", "e2", LEASE_S)
    await store.remove_node(edge)
    assert await store.stream_edges("a") == {"e2"}
    assert await store.stream_edges("b") == frozenset()
    snapshot = await store.snapshot()
    assert dict(snapshot.edges) == {"a": frozenset({"e2"})}


async def test_snapshot_holds_nodes_origins_and_edges(store):
    await store.put_node(record("o1", streams=["cam"]), LEASE_S)
    await store.put_node(record("e1", NodeRole.EDGE, streams=["cam"]), LEASE_S)
    snapshot = await store.snapshot()
    assert {n.record.node_id for n in snapshot.nodes} == {"o1", "e1"}
    assert dict(snapshot.origins) == {"cam": "o1"}
    assert dict(snapshot.edges) == {"cam": frozenset({"e1"})}


async def test_every_change_is_an_event_seen_by_every_manager(stores):
    writer, reader = stores
    subscription = reader.subscribe()
    await subscription.wait_ready(3.0)
    try:
        node = record("o1", streams=["cam"])
        await writer.put_node(node, LEASE_S)
        updated = await next_event(subscription)
        assert updated.kind is EventKind.NODE_UPDATED and updated.record == node
        assert updated.lease_s == pytest.approx(LEASE_S)
        claimed = await next_event(subscription)
        assert (claimed.kind, claimed.node_id, claimed.stream) == (EventKind.ORIGIN_CLAIMED, "o1", "cam")

        await writer.put_node(node, LEASE_S)  # a refresh: only the record's event
        assert [e.kind for e in await drain_events(subscription)] == [EventKind.NODE_UPDATED]

        await writer.add_stream_edge("cam", "e1", 2.0)
        added = await next_event(subscription)
        assert (added.kind, added.node_id, added.stream, added.ttl_s) == (EventKind.EDGE_ADDED, "e1", "cam", 2.0)
        await writer.remove_stream_edge("cam", "e1")
        assert (await next_event(subscription)).kind is EventKind.EDGE_REMOVED

        await writer.release_origin("cam", "o2")  # not the owner: no change, no event
        await writer.remove_node(node)
        released = await next_event(subscription)
        assert (released.kind, released.node_id) == (EventKind.ORIGIN_RELEASED, "o1")
        removed = await next_event(subscription)
        assert (removed.kind, removed.node_id) == (EventKind.NODE_REMOVED, "o1")
        assert await drain_events(subscription) == []
    finally:
        await subscription.aclose()


async def test_tables_are_shared_and_kept_until_deleted(stores):
    """What the local provider records of the nodes it started: one manager writes, any
    other (a later scaling leader) reads and deletes."""
    a, b = stores
    assert await b.entries("provider-local") == {}
    await a.put_entry("provider-local", "edge-1", '{"pid": 1}')
    await a.put_entry("provider-local", "edge-2", '{"pid": 2}')
    await a.put_entry("other", "edge-1", "x")
    await a.put_entry("provider-local", "edge-1", '{"pid": 11}')
    assert await b.entries("provider-local") == {"edge-1": '{"pid": 11}', "edge-2": '{"pid": 2}'}
    assert await b.delete_entry("provider-local", "edge-1")
    assert not await b.delete_entry("provider-local", "edge-1")
    assert await a.entries("provider-local") == {"edge-2": '{"pid": 2}'}
    assert await a.entries("other") == {"edge-1": "x"}


async def test_closing_the_store_ends_subscriptions(store):
    subscription = store.subscribe()
    await subscription.wait_ready(3.0)
    await store.close()
    assert [e async for e in subscription] == []
    with pytest.raises(StoreClosed):
        await store.put_node(record("o1"), LEASE_S)


def test_event_json_round_trips():
    event = ClusterEvent(EventKind.NODE_UPDATED, node_id="o1", record=record("o1", streams=["x"]), lease_s=3.0)
    assert ClusterEvent.from_json(event.to_json()) == event
    edge = ClusterEvent(EventKind.EDGE_ADDED, node_id="e1", stream="x", ttl_s=1.5)
    assert ClusterEvent.from_json(edge.to_json()) == edge


async def test_a_subscriber_that_falls_behind_gets_resync():
    async def on_close(_):
        return None

    subscription = QueueSubscription(on_close, max_pending=3)
    for i in range(5):
        subscription.push(ClusterEvent(EventKind.NODE_REMOVED, node_id=f"n{i}"))
    first = await next_event(subscription)
    assert first.kind is EventKind.RESYNC
    assert [e.node_id for e in await drain_events(subscription, 0.05)] == ["n3", "n4"]


def test_open_store_chooses_by_url():
    assert isinstance(open_store(None), LocalStore)
    assert isinstance(open_store("redis://127.0.0.1:1/0"), RedisStore)
    with pytest.raises(ValueError):
        open_store("http://127.0.0.1:6379")


# -- Redis only -------------------------------------------------------------------------


async def test_redis_restart_store_reconnects_and_state_returns_with_heartbeats(redis_server):
    store = RedisStore(redis_server.url, prefix="restart")
    subscription = store.subscribe()
    try:
        await subscription.wait_ready(3.0)
        origin, edge = record("o1", streams=["cam"]), record("e1", NodeRole.EDGE, streams=["cam"])
        await store.put_node(origin, LEASE_S)
        await store.put_node(edge, LEASE_S)
        await drain_events(subscription)

        redis_server.kill()
        with pytest.raises(StoreUnavailable):
            await store.put_node(origin, LEASE_S)
        redis_server.start()  # same port, empty: nothing was persisted

        resync = await next_event(subscription, timeout=5.0)
        assert resync.kind is EventKind.RESYNC
        assert (await store.snapshot()).nodes == ()

        # the next heartbeats bring everything back (the Lua scripts reload by themselves)
        await store.put_node(origin, LEASE_S)
        await store.put_node(edge, LEASE_S)
        snapshot = await store.snapshot()
        assert {n.record.node_id for n in snapshot.nodes} == {"o1", "e1"}
        assert dict(snapshot.origins) == {"cam": "o1"}
        assert dict(snapshot.edges) == {"cam": frozenset({"e1"})}
        kinds = [e.kind for e in await drain_events(subscription)]
        assert EventKind.ORIGIN_CLAIMED in kinds and EventKind.EDGE_ADDED in kinds
    finally:
        redis_server.start() if redis_server.proc is None else None
        await subscription.aclose()
        await store.close()


async def test_redis_unreachable_is_store_unavailable():
    store = RedisStore("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        subscription = store.subscribe()
        with pytest.raises(StoreUnavailable):
            await subscription.wait_ready(0.3)
        await subscription.aclose()
    finally:
        await store.close()
