"""The scaling leader's loop: every interval, while this manager holds the leader lease,
follow the provider's nodes through their lifecycle, replace faulty ones, and evaluate
each group and role's policy (start nodes, or drain one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ..model import NodeRole, NodeState
from ..providers import NodeProvider, ProvidedNode, ProviderError, ProviderState
from ..registry import NodeView, Registry
from .decisions import DecisionLog
from .evaluator import Action, Decision, GroupSample, NodeSample, evaluate
from .faults import FaultDetector
from .leader import LeaderLease
from .policy import GroupKey, GroupPolicy

__all__ = ["Autoscaler", "HealthProbe", "ScalingSettings"]

log = logging.getLogger("unbroken.manager.scaling")

HealthProbe = Callable[[str], Awaitable[bool]]
"""GET {url}/healthz within a timeout; True = healthy."""


@dataclass
class ScalingSettings:
    """The leader's timing: evaluation interval, when a node is faulty (heartbeat stall,
    health failures in a row, registration deadline) and the drain deadline on scale-in."""

    interval_s: float = 1.0
    stall_s: float = 2.0
    health_failures: int = 2
    start_timeout_s: float = 20.0
    drain_s: float = 10.0


@dataclass
class _Tracked:
    """A node the leader follows: the lifecycle state it last logged, when the provider
    started it or this leader found it in the provider's list (None: found registered
    only), whether it ever registered, and whether the leader is stopping it (drain or
    fault) since when."""

    state: str
    group: str
    role: NodeRole
    started_at: float | None = None
    registered: bool = False
    stopping: bool = False
    faulty: bool = False
    stop_at: float | None = None  # when this leader decided to stop it (scale-in, fault)


@dataclass
class _GroupMemory:
    last_out_at: float | None = None
    last_scaled_at: float | None = None
    last: Decision | None = None
    history: list[str] = field(default_factory=list)


class Autoscaler:
    """Owns the leader lease, the provider, the fault detector and the decision log."""

    def __init__(self, registry: Registry, provider: NodeProvider, leader: LeaderLease,
                 policies: dict[GroupKey, GroupPolicy], decisions: DecisionLog, probe: HealthProbe,
                 settings: ScalingSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.provider = provider
        self.leader = leader
        self.policies = dict(sorted(policies.items(), key=lambda item: (item[0].group, item[0].role.value)))
        self.decisions = decisions
        self.probe = probe
        self.settings = settings or ScalingSettings()
        self.clock = clock
        self.detector = FaultDetector(self.settings.stall_s, self.settings.health_failures)
        self._tracked: dict[str, _Tracked] = {}
        self._groups: dict[GroupKey, _GroupMemory] = {key: _GroupMemory() for key in self.policies}
        self._provided_last: dict[str, ProvidedNode] = {}
        self._ours: set[str] = set()  # every node the provider has listed or started
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[None]] = set()
        self._leading = False  # as of the loop's last look

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.provider.start()
        self.leader.on_change = self._leadership
        self.leader.start()
        self._task = asyncio.create_task(self._run(), name="unbroken-manager-autoscaler")

    async def close(self) -> None:
        tasks = ([self._task] if self._task else []) + list(self._work)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.leader.close()
        await self.provider.close()

    def _leadership(self, leading: bool) -> None:
        self.decisions.leadership(leading, self.leader.holder)
        if leading:
            # a new leader does not know when the group last scaled: it waits a whole
            # cooldown_in before its first scale-in (scale-outs and min are not held)
            now = self.clock()
            for memory in self._groups.values():
                memory.last_scaled_at = now

    def status(self) -> dict[str, object]:
        """What the API shows: leader, groups with their last decision, recent entries."""
        return {
            "leader": self.leader.current_holder, "leading": self.leader.leading,
            "provider": self.provider.name,
            "groups": [{"group": k.group, "role": k.role.value,
                        "last": None if m.last is None else {"action": m.last.action.value,
                                                             "reason": m.last.reason}}
                       for k, m in self._groups.items()],
            "nodes": {node_id: t.state for node_id, t in sorted(self._tracked.items())},
            "provided": [{"node_id": n.node_id, "group": n.group, "role": n.role.value, "url": n.url,
                          "state": n.state.value, "detail": n.detail}
                         for n in sorted(self._provided_last.values(), key=lambda n: n.node_id)],
            "entries": list(self.decisions.entries)[-50:],
        }

    def _new_term(self) -> None:
        """This manager leads (again): what it tracked while it last led is stale (another
        leader replaced and stopped nodes meanwhile): follow the cluster afresh, or nodes
        long gone would be judged faulty and replaced once more."""
        self._tracked.clear()
        self._ours.clear()
        self.detector = FaultDetector(self.settings.stall_s, self.settings.health_failures)

    def _leads(self) -> bool:
        """Whether this manager leads now; a new term starts afresh (`_new_term`)."""
        leading = self.leader.leading
        if leading and not self._leading:
            self._new_term()
        self._leading = leading
        return leading

    async def _run(self) -> None:
        half = self.settings.interval_s / 2
        while True:
            if self._leads():
                try:
                    await self.tick()
                except ProviderError as e:
                    log.warning("provider: %s", e)
                except Exception:
                    log.exception("autoscaler tick failed")
            await asyncio.sleep(half)
            if self._leads():
                with contextlib.suppress(ProviderError):
                    await self.check_faults(await self._provided())

    # -- one evaluation --------------------------------------------------------------

    async def _provided(self) -> dict[str, ProvidedNode]:
        self._provided_last = {n.node_id: n for n in await self.provider.list_nodes()}
        self._ours.update(self._provided_last)
        return self._provided_last

    def _live(self) -> dict[str, NodeView]:
        now = self.registry.clock()
        return {v.node_id: v for v in self.registry.views() if v.live(now)}

    async def tick(self) -> None:
        """Follow lifecycles, handle faults, then evaluate every group and role."""
        provided = await self._provided()
        # the view the faults were judged on: a node that left the cluster during the
        # health probes is judged (and replaced) by the next check, not counted as
        # missing by the evaluation first (it would be replaced twice)
        views = await self.check_faults(provided)
        now = self.clock()
        for key, policy in self.policies.items():
            await self._evaluate(key, policy, provided, views, now)

    def _follow(self, provided: dict[str, ProvidedNode], views: dict[str, NodeView]) -> None:
        for node_id, node in provided.items():
            if node_id not in self._tracked:
                # found in the provider's list (another leader started it): it has
                # node_start_timeout to be seen registered, like a node started here
                self._tracked[node_id] = _Tracked("joining", node.group, node.role, started_at=self.clock())
                self.decisions.node(node_id, "joining", f"{self.provider.name}: {node.detail}")
            if node.state is ProviderState.STOPPING and not self._tracked[node_id].stopping:
                # a stop under way (another leader's, or a stop this one asked for): its
                # leaving the cluster is no fault
                self._tracked[node_id].stopping = True
        for node_id, view in views.items():
            tracked = self._tracked.get(node_id)
            if tracked is None:
                tracked = self._tracked[node_id] = _Tracked("joining", view.group, view.role)
                self.decisions.node(node_id, "joining", "registered")
            tracked.registered = True
            state = {NodeState.SERVING: "serving", NodeState.DRAINING: "draining"}.get(view.state)
            if state and not tracked.faulty and tracked.state != state:
                tracked.state = state
                self.decisions.node(node_id, state)
        for node_id in [n for n in self._tracked if n not in provided and n not in views]:
            if self._vanished(node_id, self._tracked[node_id]):
                continue  # check_faults judges it first (a fault, replaced); then it goes
            tracked = self._tracked.pop(node_id)
            self._ours.discard(node_id)
            self.detector.forget(node_id)
            if tracked.stop_at is not None:
                took = self.clock() - tracked.stop_at
                self.decisions.gone(node_id, took, "killed" if tracked.faulty else "drained")
            else:
                self.decisions.node(node_id, "gone")

    async def check_faults(self, provided: dict[str, ProvidedNode]) -> dict[str, NodeView]:
        """Probe, judge and replace: heartbeat stall, failing /healthz, a lapsed lease, a
        node that never registered. Returns the view of the cluster it judged."""
        views = self._live()
        self._follow(provided, views)
        now = self.registry.clock()
        probed = [v for v in views.values() if v.state is NodeState.SERVING]
        results = await asyncio.gather(*(self.probe(v.record.url) for v in probed), return_exceptions=True)
        for view, result in zip(probed, results):
            self.detector.health(view.node_id, result is True)
        for view in views.values():
            self.detector.observe(view.node_id, view.record.instance, view.record.seq, now)
        mono = self.clock()
        for node_id, tracked in list(self._tracked.items()):
            if tracked.faulty or tracked.stopping:
                continue
            reason, cause = None, ""
            if node_id in views:
                reason = self.detector.verdict(node_id, now)
                cause = "stalled" if reason and reason.startswith("no heartbeat") else "health"
            elif (tracked.registered and node_id in provided and tracked.state != "draining"
                  and not self.registry.left_recently(node_id)):
                # (a node that drained or left is on its way out: its process ends by itself)
                reason, cause = "lease lapsed", "lapsed"
            elif self._vanished(node_id, tracked):
                reason, cause = "its process ended and it left the cluster", "lost"
            elif (not tracked.registered and tracked.started_at is not None
                  and mono - tracked.started_at > self.settings.start_timeout_s):
                reason, cause = f"not registered within {self.settings.start_timeout_s:g} s", "start"
            if reason:
                await self._fault(node_id, tracked, cause, reason, provided)
        return views

    def _vanished(self, node_id: str, tracked: "_Tracked") -> bool:
        """A node that was in the cluster, gone from it and from the provider's list
        without this leader stopping it, it draining or it leaving (deregistering)
        first: a crash, SIGKILL, OOM."""
        return (tracked.registered and not (tracked.faulty or tracked.stopping)
                and tracked.state != "draining" and not self.registry.left_recently(node_id))

    async def _fault(self, node_id: str, tracked: _Tracked, cause: str, reason: str,
                     provided: dict[str, ProvidedNode]) -> None:
        tracked.faulty, tracked.state = True, "fault"
        self.registry.mark_suspect(node_id, f"fault: {reason}")  # out of routing at once
        self.decisions.fault(node_id, cause, reason)
        if not (self.provider.scales and node_id in self._ours):
            return
        replacement = await self._start(tracked.group, tracked.role, f"replaces faulty {node_id}")
        self.decisions.decision(tracked.group, tracked.role.value, "replace", reason,
                                node=node_id, replacement=replacement)
        tracked.stopping = True
        if node_id in provided:  # still running (not a node that vanished by itself)
            tracked.stop_at = self.clock()
            await self.provider.stop_node(node_id, 0)

    async def _start(self, group: str, role: NodeRole, why: str) -> str:
        node = await self.provider.start_node(group, role)
        # in this tick's provider list too: the group's evaluation that follows a
        # replacement counts it as starting (no second node for the same gap)
        self._provided_last[node.node_id] = node
        self._ours.add(node.node_id)
        self._tracked[node.node_id] = _Tracked("joining", group, role, started_at=self.clock())
        self.decisions.node(node.node_id, "joining", why)
        return node.node_id

    def sample(self, key: GroupKey, provided: dict[str, ProvidedNode],
               views: dict[str, NodeView]) -> GroupSample:
        memory = self._groups[key]
        # a suspect (checked now, e.g. after a client's report) still counts: failing its
        # check it is a fault, replaced then; counted out now, the group's minimum would
        # start a node for it first (two nodes for one)
        usable = (NodeState.SERVING, NodeState.JOINING, NodeState.SUSPECT)

        def counted(node_id: str) -> bool:
            tracked = self._tracked.get(node_id)
            return tracked is None or not (tracked.faulty or tracked.stopping)

        nodes = tuple(
            NodeSample(v.node_id, v.state is NodeState.SERVING, v.record.load.sessions, v.record.load.viewers,
                       v.record.load.egress_bps, v.record.load.cpu)
            for v in sorted(views.values(), key=lambda v: v.node_id)
            if v.group == key.group and v.role is key.role and v.state in usable and counted(v.node_id))
        pending = sum(1 for n in provided.values()
                      if n.group == key.group and n.role is key.role and n.node_id not in views
                      and n.state is not ProviderState.STOPPING and counted(n.node_id))
        return GroupSample(nodes, pending, memory.last_out_at, memory.last_scaled_at)

    async def _evaluate(self, key: GroupKey, policy: GroupPolicy, provided: dict[str, ProvidedNode],
                        views: dict[str, NodeView], now: float) -> None:
        memory = self._groups[key]
        decision = evaluate(policy, self.sample(key, provided, views), now)
        if decision.action is Action.REMOVE and not (self.provider.scales and decision.remove[0] in provided):
            decision = Decision(Action.HOLD, f"{decision.reason}, but not started by this provider")
        if decision.action is not Action.HOLD and not self.provider.scales:
            decision = Decision(Action.HOLD, f"{decision.reason}; the {self.provider.name} provider does not scale")
        changed = memory.last is None or memory.last.reason != decision.reason
        memory.last = decision
        if decision.action is Action.HOLD:
            log.log(logging.INFO if changed and "cooldown" not in decision.reason else logging.DEBUG,
                    "%s: hold — %s", key, decision.reason)
            return
        if decision.action is Action.ADD:
            started = []
            for _ in range(decision.count):
                started.append(await self._start(key.group, key.role, decision.reason))
            memory.last_out_at = memory.last_scaled_at = now
            self.decisions.decision(key.group, key.role.value, "out", decision.reason, nodes=started)
        else:
            victim = decision.remove[0]
            tracked = self._tracked.setdefault(victim, _Tracked("serving", key.group, key.role, registered=True))
            tracked.stopping, tracked.state, tracked.stop_at = True, "draining", self.clock()
            memory.last_scaled_at = now
            self.decisions.decision(key.group, key.role.value, "in", decision.reason, nodes=[victim])
            self.decisions.node(victim, "draining", "scale-in")
            await self.provider.stop_node(victim, self.settings.drain_s)
