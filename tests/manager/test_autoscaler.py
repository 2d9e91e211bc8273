"""The scaling leader's loop, one tick at a time, with a provider stand-in and the
registry on the in-process store: one replacement per fault, a new leader's scale-in
cooldown, a stop another leader began, the decision-to-gone time."""

from __future__ import annotations

import asyncio

import pytest

from manager_helpers import record
from unbroken.manager.model import NodeRole, NodeState
from unbroken.manager.providers import NodeProvider, ProvidedNode, ProviderState
from unbroken.manager.registry import Registry
from unbroken.manager.scaling import Autoscaler, DecisionLog, GroupKey, GroupPolicy, ScalingSettings
from unbroken.manager.store import LocalStore

pytestmark = pytest.mark.timeout(30)

EDGE = GroupKey("default", NodeRole.EDGE)


class FakeProvider(NodeProvider):
    name = "fake"

    def __init__(self) -> None:
        self.nodes: dict[str, ProvidedNode] = {}
        self.stops: list[tuple[str, float]] = []
        self.started = 0

    def add(self, node_id: str, state: ProviderState = ProviderState.RUNNING) -> None:
        self.nodes[node_id] = ProvidedNode(node_id, "default", NodeRole.EDGE, "http://10.0.0.1:1", state, "x")

    async def start_node(self, group, role):
        self.started += 1
        node_id = f"new-{self.started}"
        self.add(node_id, ProviderState.STARTING)
        return self.nodes[node_id]

    async def stop_node(self, node_id, drain_s):
        self.stops.append((node_id, drain_s))
        node = self.nodes[node_id]
        self.nodes[node_id] = ProvidedNode(node.node_id, node.group, node.role, node.url,
                                           ProviderState.STOPPING, node.detail)

    async def list_nodes(self):
        return list(self.nodes.values())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lease:
    leading, current_holder, holder = True, "me", "me"


@pytest.fixture
async def cluster():
    store = LocalStore()
    registry = Registry(store, check=_healthy)
    await registry.start()
    yield registry
    await registry.close()
    await store.close()


async def _healthy(node) -> bool:
    return True


async def _probe(url: str) -> bool:
    return True


def autoscaler(registry, provider, policy: GroupPolicy, clock: Clock) -> Autoscaler:
    return Autoscaler(registry, provider, Lease(), {EDGE: policy}, DecisionLog(), _probe,
                      ScalingSettings(drain_s=7.0), clock=clock)


async def serve(registry, node_id: str, viewers: int = 0, state: NodeState = NodeState.SERVING) -> None:
    await registry.heartbeat(record(node_id, NodeRole.EDGE, sessions=viewers, state=state))


async def test_a_fault_found_in_a_tick_is_replaced_once(cluster):
    provider, clock = FakeProvider(), Clock()
    provider.add("e1")
    await serve(cluster, "e1")
    healthy = [True]

    async def probe(url: str) -> bool:
        return healthy[0]

    scaler = Autoscaler(cluster, provider, Lease(), {EDGE: GroupPolicy(min=1, max=3, scale_in_cpu=0)},
                        DecisionLog(), probe, ScalingSettings(drain_s=7.0), clock=clock)
    await scaler.tick()
    assert provider.started == 0
    healthy[0] = False  # its /healthz fails: a fault at the second failure, in a tick
    await scaler.tick()
    await scaler.tick()
    assert provider.started == 1, [e["text"] for e in scaler.decisions.entries]
    assert provider.stops == [("e1", 0)]
    await scaler.tick()
    assert provider.started == 1


async def test_a_node_a_client_reported_is_replaced_once():
    """A client's report makes a node suspect (out of routing, checked) before the scaling
    leader judges it: while it is checked it still counts in its group, so the group's
    minimum does not start a node for it and then its fault another one."""
    frozen = "http://10.0.0.1:9002"

    async def check(node) -> bool:  # the registry's check of a suspect: a frozen node
        await asyncio.sleep(0.3)
        return node.url != frozen

    async def probe(url: str) -> bool:  # the leader's health probe
        return url != frozen

    store = LocalStore()
    registry = Registry(store, check=check)
    await registry.start()
    try:
        provider, clock = FakeProvider(), Clock()
        for node_id, port in (("e1", 9001), ("e2", 9002)):
            provider.add(node_id)
            await registry.heartbeat(record(node_id, NodeRole.EDGE, port=port))
        scaler = Autoscaler(registry, provider, Lease(), {EDGE: GroupPolicy(min=2, max=4, scale_in_cpu=0)},
                            DecisionLog(), probe, ScalingSettings(drain_s=7.0), clock=clock)
        assert registry.report_unresponsive("e2")  # frozen, as a client found
        for _ in range(4):
            await scaler.tick()
            await asyncio.sleep(0.1)
        assert provider.started == 1, [e["text"] for e in scaler.decisions.entries]
        assert provider.stops == [("e2", 0)]
    finally:
        await registry.close()
        await store.close()


async def test_a_new_leader_waits_cooldown_in_before_its_first_scale_in(cluster):
    provider, clock = FakeProvider(), Clock()
    for node_id, viewers in (("e1", 2), ("e2", 1)):
        provider.add(node_id)
        await serve(cluster, node_id, viewers)
    policy = GroupPolicy(min=1, max=3, scale_out_cpu=0, scale_in_cpu=0, scale_out_viewers=5, scale_in_viewers=2,
                         cooldown_in=10)
    scaler = autoscaler(cluster, provider, policy, clock)
    scaler._leadership(True)
    await scaler.tick()
    assert provider.stops == [] and "cooldown 10.0 s left" in scaler.status()["groups"][0]["last"]["reason"]
    clock.now += 10.5
    await scaler.tick()
    assert provider.stops == [("e2", 7.0)]  # the fewest sessions, drained with the deadline
    entry = next(e for e in scaler.decisions.entries if e["kind"] == "scale_in")
    assert entry["nodes"] == ["e2"] and "drain e2 (1 sessions to move)" in entry["reason"]
    # it drains, leaves the cluster, its process ends: gone, with the time it took
    await serve(cluster, "e2", 0, NodeState.DRAINING)
    await scaler.tick()
    await cluster.leave("e2")
    del provider.nodes["e2"]
    clock.now += 1.25
    await scaler.tick()
    gone = next(e for e in scaler.decisions.entries if e["kind"] == "node_gone")
    assert gone["node"] == "e2" and gone["how"] == "drained" and gone["seconds"] == pytest.approx(1.25)
    assert not [e for e in scaler.decisions.entries if e["kind"] == "node_fault"]


async def test_a_stop_another_leader_began_is_no_fault(cluster):
    provider, clock = FakeProvider(), Clock()
    provider.add("e1")
    provider.add("e2", ProviderState.STOPPING)  # the previous leader was draining it
    await serve(cluster, "e1")
    await serve(cluster, "e2", 0, NodeState.DRAINING)
    scaler = autoscaler(cluster, provider, GroupPolicy(min=1, max=3, scale_in_cpu=0), clock)
    await scaler.tick()
    await cluster.leave("e2")  # left the cluster, its process not yet ended
    await scaler.tick()
    del provider.nodes["e2"]
    await scaler.tick()
    kinds = [e["kind"] for e in scaler.decisions.entries]
    assert "node_fault" not in kinds and "scale_replace" not in kinds and provider.started == 0, kinds


async def test_a_listed_node_that_never_registers_is_a_fault_after_the_start_timeout(cluster):
    provider, clock = FakeProvider(), Clock()
    provider.add("e1")
    await serve(cluster, "e1")
    provider.add("orphan")  # adopted from a dead leader's records, never seen registered
    scaler = autoscaler(cluster, provider, GroupPolicy(min=1, max=3, scale_in_cpu=0), clock)
    await scaler.tick()
    clock.now += scaler.settings.start_timeout_s + 1
    await scaler.tick()
    fault = next(e for e in scaler.decisions.entries if e["kind"] == "node_fault")
    assert fault["node"] == "orphan" and "not registered" in fault["reason"]
    assert ("orphan", 0) in provider.stops
