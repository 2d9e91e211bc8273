"""The registry: the manager's hot view, on both stores (two managers share one store)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from unbroken.manager.model import NodeRole, NodeState
from unbroken.manager.registry import (CLIENT_REPORT_HOLDOFF_S, InvalidTransition, Registry, StaleRecord,
                                       UnknownNode, check_transition)
from unbroken.manager.store import RedisStore, StoreUnavailable

from manager_helpers import record

pytestmark = pytest.mark.timeout(30)

SHORT_LEASE_S = 0.3


class FakeCheck:
    """A node check whose answer the test sets; counts its calls."""

    def __init__(self, healthy: bool = True, delay_s: float = 0.0) -> None:
        self.healthy = healthy
        self.delay_s = delay_s
        self.calls: list[str] = []

    async def __call__(self, node) -> bool:
        self.calls.append(node.node_id)
        await asyncio.sleep(self.delay_s)
        return self.healthy


async def until(predicate, timeout=3.0):
    async def wait():
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


@pytest.fixture
def check():
    return FakeCheck()


@pytest.fixture
async def pair(stores, check):
    """Two managers' registries on one shared store."""
    registries = [Registry(store, check, lease_s=SHORT_LEASE_S * 10, sweep_interval_s=0.05) for store in stores]
    for registry in registries:
        await registry.start()
    yield registries
    for registry in registries:
        await registry.close()


async def test_heartbeat_admits_a_node_into_both_views(pair):
    first, second = pair
    view = await first.heartbeat(record("o1", streams=["cam"]))
    assert view.serving(first.clock()) and view.role is NodeRole.ORIGIN
    await until(lambda: second.view("o1") is not None)
    assert second.view("o1").record == view.record
    assert second.carriers("cam") == {"o1"}
    await until(lambda: second.origin_owner("cam") == "o1")
    assert first.origin_owner("cam") == "o1"


async def test_lapsed_lease_is_out_of_routing_at_once(stores, check):
    registry = Registry(stores[0], check, lease_s=SHORT_LEASE_S, sweep_interval_s=10)  # no sweep in time
    await registry.start()
    try:
        view = await registry.heartbeat(record("o1"))
        assert view.serving(registry.clock())
        await asyncio.sleep(SHORT_LEASE_S + 0.05)
        assert not registry.view("o1").live(registry.clock())
        registry.sweep()
        assert registry.view("o1") is None
    finally:
        await registry.close()


async def test_the_sweeper_forgets_lapsed_nodes(stores, check):
    registry = Registry(stores[0], check, lease_s=SHORT_LEASE_S, sweep_interval_s=0.05)
    await registry.start()
    try:
        await registry.heartbeat(record("e1", NodeRole.EDGE, streams=["cam"]))
        await until(lambda: registry.view("e1") is None, timeout=SHORT_LEASE_S + 1)
        assert registry.carriers("cam") == frozenset()
    finally:
        await registry.close()


async def test_lifecycle_joining_serving_draining_and_back_is_refused(pair):
    registry = pair[0]
    assert (await registry.heartbeat(record("o1", state=NodeState.JOINING))).state is NodeState.JOINING
    assert (await registry.heartbeat(record("o1", state=NodeState.SERVING))).state is NodeState.SERVING
    assert (await registry.heartbeat(record("o1", state=NodeState.DRAINING))).state is NodeState.DRAINING
    with pytest.raises(InvalidTransition):
        await registry.heartbeat(record("o1", state=NodeState.SERVING))
    assert registry.view("o1").state is NodeState.DRAINING
    # a restarted node (a new instance) starts afresh
    fresh = dataclasses.replace(record("o1", state=NodeState.JOINING), instance="boot-2", seq=1)
    assert (await registry.heartbeat(fresh)).state is NodeState.JOINING


async def test_a_late_older_record_is_ignored(pair):
    registry = pair[0]
    await registry.heartbeat(record("o1", streams=["cam"], seq=5))
    with pytest.raises(StaleRecord):
        await registry.heartbeat(record("o1", seq=4))
    # the same through the event path: an older echo changes nothing
    registry._admit(record("o1", seq=3), 3.0)
    assert registry.view("o1").record.seq == 5 and registry.carriers("cam") == {"o1"}


def test_check_transition_table():
    check_transition(None, record("n", state=NodeState.DRAINING))
    check_transition(record("n", state=NodeState.JOINING), record("n", state=NodeState.DRAINING))
    with pytest.raises(InvalidTransition):
        check_transition(record("n", state=NodeState.SERVING), record("n", state=NodeState.JOINING))


async def test_suspect_is_out_of_routing_then_back_when_healthy(pair, check):
    registry = pair[0]
    check.delay_s = 0.1
    await registry.heartbeat(record("o1"))
    assert registry.mark_suspect("o1", "proxied request failed")
    assert registry.view("o1").state is NodeState.SUSPECT
    shown = registry.view("o1").to_json(registry.clock())
    assert (shown["state"], shown["reported_state"]) == ("suspect", "serving")
    assert 0 < shown["lease_left_s"] <= registry.lease_s
    assert not registry.view("o1").serving(registry.clock())
    assert not registry.mark_suspect("o1", "again")  # one check at a time
    await registry.heartbeat(record("o1"))  # a heartbeat does not clear it: the check does
    assert registry.view("o1").state is NodeState.SUSPECT
    await until(lambda: registry.view("o1").state is NodeState.SERVING)
    await until(lambda: pair[1].view("o1").state is NodeState.SERVING)
    assert check.calls == ["o1", "o1"]  # this manager's check and the other's


async def test_a_suspect_is_out_of_routing_on_every_manager_at_once(pair, check):
    """One manager sees the node fail: the other takes it out of routing as soon as the
    store's event arrives (not at the end of the node's lease) and checks it itself."""
    first, second = pair
    check.healthy, check.delay_s = False, 0.2
    await first.heartbeat(record("o1", streams=["cam"]))
    await until(lambda: second.view("o1") is not None)
    assert first.mark_suspect("o1", "heartbeat connection closed")
    await until(lambda: second.view("o1") is None or second.view("o1").state is NodeState.SUSPECT,
                timeout=1)
    assert not (second.view("o1") and second.view("o1").serving(second.clock()))
    await until(lambda: first.view("o1") is None and second.view("o1") is None)
    assert sorted(check.calls) == ["o1", "o1"]


async def test_suspect_that_fails_its_check_is_gone(pair, check):
    registry = pair[0]
    check.healthy = False
    await registry.heartbeat(record("o1", streams=["cam"]))
    registry.mark_suspect("o1", "proxied request failed")
    await until(lambda: registry.view("o1") is None)
    assert registry.carriers("cam") == frozenset()
    assert not registry.mark_suspect("o1", "unknown now")


async def test_suspect_whose_check_hangs_is_gone_after_the_timeout(stores):
    hanging = FakeCheck(delay_s=30)
    registry = Registry(stores[0], hanging, check_timeout_s=0.1)
    await registry.start()
    try:
        await registry.heartbeat(record("o1"))
        registry.mark_suspect("o1", "timeout")
        await until(lambda: registry.view("o1") is None, timeout=2)
    finally:
        await registry.close()


async def test_a_client_report_checks_the_node_now_but_not_again_and_again(stores, check):
    """A client says a node stopped answering it: out of routing and checked at once. A
    node that passed its check is not checked again on a client's word for a while (the
    client's own network may be what failed); an unknown node is ignored."""
    now = [1000.0]
    registry = Registry(stores[0], check, lease_s=60, clock=lambda: now[0])
    await registry.start()
    check.delay_s = 0.1
    await registry.heartbeat(record("o1"))
    assert registry.report_unresponsive("o1")
    assert not registry.view("o1").serving(registry.clock())
    await until(lambda: registry.view("o1").state is NodeState.SERVING)
    assert not registry.report_unresponsive("o1")  # it just passed: held off
    assert registry.view("o1").state is NodeState.SERVING
    assert not registry.report_unresponsive("no-such-node")
    check.healthy = False
    now[0] += CLIENT_REPORT_HOLDOFF_S  # the hold-off is over; now it is frozen
    assert registry.report_unresponsive("o1")
    await until(lambda: registry.view("o1") is None)
    await registry.close()


async def test_leave_removes_the_node_everywhere(pair):
    first, second = pair
    await first.heartbeat(record("o1", streams=["cam"]))
    await until(lambda: second.view("o1") is not None)
    await first.leave("o1")
    assert first.view("o1") is None
    await until(lambda: second.view("o1") is None)
    assert await first.store.origin_of("cam") is None
    with pytest.raises(UnknownNode):
        await first.leave("o1")


async def test_a_new_manager_starts_from_the_snapshot(stores, check, pair):
    first = pair[0]
    await first.heartbeat(record("o1", streams=["cam"]))
    await first.heartbeat(record("e1", NodeRole.EDGE, streams=["cam"]))
    await first.store.add_stream_edge("cam", "e2", 3.0)
    late = Registry(stores[1], check)
    await late.start()
    try:
        assert {v.node_id for v in late.views()} == {"o1", "e1"}
        assert late.origin_owner("cam") == "o1"
        assert late.carriers("cam") == {"o1", "e1", "e2"}
    finally:
        await late.close()


async def test_redis_restart_view_survives_and_heartbeats_restore_the_store(redis_server, check):
    store = RedisStore(redis_server.url, prefix="registry-restart")
    registry = Registry(store, check, lease_s=3.0)
    await registry.start()
    try:
        await registry.heartbeat(record("o1", streams=["cam"]))
        redis_server.kill()
        with pytest.raises(StoreUnavailable):
            await registry.heartbeat(record("o1", streams=["cam"]))
        assert registry.view("o1").serving(registry.clock())  # applied all the same
        redis_server.start()
        await registry.heartbeat(record("o1", streams=["cam"]))
        assert await store.origin_of("cam") == "o1"
        await asyncio.sleep(0.3)  # the subscription's RESYNC merges an almost empty store
        assert registry.view("o1").serving(registry.clock()) and registry.origin_owner("cam") == "o1"
    finally:
        if redis_server.proc is None:
            redis_server.start()
        await registry.close()
        await store.close()


async def test_start_fails_when_the_store_is_down(check):
    store = RedisStore("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(StoreUnavailable):
            await Registry(store, check).start(ready_timeout_s=0.3)
    finally:
        await store.close()
