"""The scaling leader's loop with a provider stand-in: a faulty node is replaced once, a
drained one not at all, and a leader that leads again does not act on what it tracked in
its last term."""

from __future__ import annotations

import asyncio

import pytest

from unbroken.manager.model import NodeRecord, NodeRole
from unbroken.manager.providers import NodeProvider, ProvidedNode, ProviderState
from unbroken.manager.registry import Registry
from unbroken.manager.scaling import GroupKey, GroupPolicy
from unbroken.manager.scaling.autoscaler import Autoscaler, ScalingSettings
from unbroken.manager.scaling.decisions import DecisionLog
from unbroken.manager.scaling.leader import LeaderLease
from unbroken.manager.store import LocalStore


class Provider(NodeProvider):
    """Starts nothing: it lists what it was asked to start until told a node died."""

    name = "stand-in"

    def __init__(self) -> None:
        self.running: dict[str, ProvidedNode] = {}
        self.started: list[str] = []

    async def start_node(self, group: str, role: NodeRole) -> ProvidedNode:
        node_id = f"{role.value}-{len(self.started)}"
        self.started.append(node_id)
        node = ProvidedNode(node_id, group, role, f"http://127.0.0.1:{9000 + len(self.started)}",
                            ProviderState.STARTING)
        self.running[node_id] = node
        return node

    async def stop_node(self, node_id: str, drain_s: float) -> None:
        self.running.pop(node_id, None)

    async def list_nodes(self) -> list[ProvidedNode]:
        return list(self.running.values())


DEAD: set[str] = set()  # nodes whose health check fails (killed)


async def _healthy(record) -> bool:  # the registry's check of a suspect node
    return record.node_id not in DEAD


async def _probe(url: str) -> bool:  # the leader's /healthz probe
    return True


@pytest.fixture(autouse=True)
def _no_dead_nodes():
    DEAD.clear()
    yield
    DEAD.clear()


async def _kill(registry: Registry, node_id: str) -> None:
    """A SIGKILLed node: its heartbeat connection closes, the manager checks it, the
    check fails, the node is out of the registry (it never left by itself)."""
    DEAD.add(node_id)
    registry.mark_suspect(node_id, "heartbeat connection closed")
    for _ in range(100):
        if registry.view(node_id) is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{node_id} still in the registry")


async def _group(provider: Provider, minimum: int = 2):
    store = LocalStore()
    registry = Registry(store, _healthy)
    await registry.start()
    leader = LeaderLease(store, "me")
    await leader.renew()
    key = GroupKey("default", NodeRole.ORIGIN)
    autoscaler = Autoscaler(registry, provider, leader,
                            {key: GroupPolicy(min=minimum, max=minimum + 1, scale_out_cpu=0, scale_in_cpu=0)},
                            DecisionLog(), _probe)
    return store, registry, autoscaler


async def _beat(registry: Registry, node: ProvidedNode, seq: int, state: str = "serving") -> None:
    await registry.heartbeat(NodeRecord.from_json(
        {"node_id": node.node_id, "role": node.role.value, "group": node.group, "url": node.url,
         "state": state, "instance": node.node_id, "seq": seq}))


async def test_a_drained_node_that_left_is_not_a_fault():
    provider = Provider()
    store, registry, autoscaler = await _group(provider)
    try:
        await autoscaler.tick()
        for node_id in provider.started:
            await _beat(registry, provider.running[node_id], 1)
        await autoscaler.tick()
        # SIGTERM: the node drains (replaced at once: below the minimum), then leaves the
        # cluster while its process is still ending (still in the provider's list)
        drained = provider.running[provider.started[0]]
        await _beat(registry, drained, 2, "draining")
        await autoscaler.tick()
        assert len(provider.started) == 3, provider.started
        await registry.leave(drained.node_id)
        await autoscaler.tick()
        await autoscaler.tick()
        assert len(provider.started) == 3, provider.started  # no second replacement
        faults = [e for e in autoscaler.decisions.entries if e["kind"] == "node_fault"]
        assert not faults, faults
    finally:
        await registry.close()
        await store.close()


async def test_a_node_that_drained_at_once_and_left_is_replaced_once_not_as_a_fault():
    provider = Provider()
    store, registry, autoscaler = await _group(provider)
    try:
        await autoscaler.tick()
        for node_id in provider.started:
            await _beat(registry, provider.running[node_id], 1)
        await autoscaler.tick()
        # SIGTERM of an idle node: it drains and leaves before the leader sees it drain,
        # its process still ending (in the provider's list), then gone
        left = provider.started[0]
        await _beat(registry, provider.running[left], 2, "draining")
        await registry.leave(left)
        await autoscaler.tick()
        del provider.running[left]
        for _ in range(3):
            await autoscaler.tick()
        assert len(provider.started) == 3, [e["text"] for e in autoscaler.decisions.entries]
        faults = [e for e in autoscaler.decisions.entries if e["kind"] == "node_fault"]
        assert not faults, faults
    finally:
        await registry.close()
        await store.close()


async def test_a_faulty_node_is_replaced_once():
    store = LocalStore()
    registry = Registry(store, _healthy)
    await registry.start()
    provider = Provider()
    leader = LeaderLease(store, "me")
    await leader.renew()
    key = GroupKey("default", NodeRole.ORIGIN)
    autoscaler = Autoscaler(registry, provider, leader,
                            {key: GroupPolicy(min=2, max=3, scale_out_cpu=0, scale_in_cpu=0)},
                            DecisionLog(), _probe)
    try:
        await autoscaler.tick()
        assert len(provider.started) == 2
        for seq, node_id in enumerate(provider.started, 1):
            node = provider.running[node_id]
            await registry.heartbeat(NodeRecord.from_json(
                {"node_id": node_id, "role": "origin", "group": "default", "url": node.url,
                 "state": "serving", "instance": node_id, "seq": seq}))
        await autoscaler.tick()
        assert len(provider.started) == 2

        # one node dies (SIGKILL): gone from the provider's list and from the cluster
        dead = provider.started[0]
        del provider.running[dead]
        await _kill(registry, dead)
        await autoscaler.tick()
        assert len(provider.started) == 3, provider.started  # its replacement, and no other
        await autoscaler.tick()
        assert len(provider.started) == 3, provider.started
        kinds = [(e["kind"], e.get("node")) for e in autoscaler.decisions.entries]
        assert ("node_fault", dead) in kinds
    finally:
        await registry.close()
        await store.close()


class Leader:
    """A leader lease stand-in the test switches."""

    def __init__(self) -> None:
        self.leading = False
        self.holder = self.current_holder = "me"
        self.on_change = None

    def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def _until(predicate, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not in time")


async def test_a_new_term_forgets_the_nodes_another_leader_replaced_meanwhile():
    store = LocalStore()
    registry = Registry(store, _healthy)
    await registry.start()
    provider, leader = Provider(), Leader()
    autoscaler = Autoscaler(registry, provider, leader,
                            {GroupKey("default", NodeRole.ORIGIN): GroupPolicy(min=2, max=3, scale_out_cpu=0,
                                                                               scale_in_cpu=0)},
                            DecisionLog(), _probe, ScalingSettings(interval_s=0.05))
    await autoscaler.start()
    try:
        leader.leading = True
        await _until(lambda: len(provider.started) == 2)
        for node_id in provider.started:
            await _beat(registry, provider.running[node_id], 1)
        await _until(lambda: set(autoscaler.status()["nodes"].values()) == {"serving"})
        leader.leading = False  # another manager leads now...
        await asyncio.sleep(0.2)
        # ... and replaces a node that died meanwhile with one of its own provider's
        dead = provider.started[0]
        del provider.running[dead]
        await _kill(registry, dead)
        other = ProvidedNode("origin-other", "default", NodeRole.ORIGIN, "http://127.0.0.1:9999",
                             ProviderState.RUNNING)
        await _beat(registry, other, 1)
        leader.leading = True  # this one leads again
        await asyncio.sleep(0.5)
        assert len(provider.started) == 2, [e["text"] for e in autoscaler.decisions.entries]  # nothing to replace
        faults = [e for e in autoscaler.decisions.entries if e["kind"] == "node_fault"]
        assert not faults, faults
    finally:
        await autoscaler.close()
        await registry.close()
        await store.close()


async def test_a_node_that_leaves_during_the_health_probes_is_replaced_once():
    provider = Provider()
    store, registry, autoscaler = await _group(provider)
    leaving: list[str] = []

    async def probe(url: str) -> bool:  # ... and is out of the cluster during the probes
        for node_id in list(leaving):
            leaving.remove(node_id)
            await _kill(registry, node_id)
        return True

    autoscaler.probe = probe
    try:
        await autoscaler.tick()
        for node_id in provider.started:
            await _beat(registry, provider.running[node_id], 1)
        await autoscaler.tick()
        dead = provider.started[0]  # SIGKILL: its process is gone from the provider's list...
        del provider.running[dead]
        leaving.append(dead)
        for _ in range(4):
            await autoscaler.tick()
        assert len(provider.started) == 3, [e["text"] for e in autoscaler.decisions.entries]
    finally:
        await registry.close()
        await store.close()
