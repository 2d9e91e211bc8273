"""The scaling decision for one group and role, as a pure function of what the
manager sees (the group's nodes and their load) and when it last scaled."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .policy import GroupPolicy

__all__ = ["Action", "Decision", "GroupSample", "NodeSample", "evaluate"]


class Action(enum.Enum):
    """What a decision does to the group."""

    ADD = "add"
    REMOVE = "remove"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One node of the group as the evaluator needs it: whether it serves (else it is
    still starting), and its load."""

    node_id: str
    serving: bool
    sessions: int = 0
    viewers: int = 0
    egress_bps: float = 0.0
    cpu: float = 0.0


@dataclass(frozen=True, slots=True)
class GroupSample:
    """A group and role at one moment: its live nodes (serving or starting; draining and
    faulty ones are not counted), the nodes started but not yet registered, and when it
    last scaled out and at all (clock seconds; None = never)."""

    nodes: tuple[NodeSample, ...]
    pending: int = 0
    last_out_at: float | None = None
    last_scaled_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """ADD `count` nodes, REMOVE (drain) `remove`, or HOLD; `reason` says why in words."""

    action: Action
    reason: str
    count: int = 0
    remove: tuple[str, ...] = ()


def _averages(nodes: tuple[NodeSample, ...], over: int | None = None) -> dict[str, float]:
    """The group's load per serving node (per node of all when none serves yet), or, with
    `over`, its serving nodes' total load spread over `over` nodes."""
    serving = [n for n in nodes if n.serving] or list(nodes)
    k = len(serving) if over is None else over
    if not serving or k <= 0:
        return {"viewers": 0.0, "egress_mbps": 0.0, "cpu": 0.0}
    return {"viewers": sum(n.viewers for n in serving) / k,
            "egress_mbps": sum(n.egress_bps for n in serving) / k / 1e6,
            "cpu": sum(n.cpu for n in serving) / k}


def _out_limits(policy: GroupPolicy) -> tuple[tuple[str, float], ...]:
    return (("viewers", policy.scale_out_viewers), ("egress_mbps", policy.scale_out_egress_mbps),
            ("cpu", policy.scale_out_cpu))


def _since(now: float, at: float | None) -> float:
    return float("inf") if at is None else now - at


def evaluate(policy: GroupPolicy, sample: GroupSample, now: float) -> Decision:
    """Below `min` → ADD at once (no cooldown); a `scale_out_*` measure above its
    threshold (or too few warm spares) → ADD `increment` after `cooldown_out`; every
    `scale_in_*` measure below its threshold with spares to spare, and the load spread
    over one node fewer still under every `scale_out_*` threshold (no flapping) → REMOVE
    the least loaded serving node after `cooldown_in`; else HOLD."""
    count = len(sample.nodes) + sample.pending
    if count < policy.min:
        return Decision(Action.ADD, f"{count} nodes < min {policy.min}", policy.min - count)
    averages = _averages(sample.nodes)
    over = [f"{name} per node {averages[name]:.2f} > {limit:g}"
            for name, limit in _out_limits(policy) if limit and averages[name] > limit]
    idle = [n for n in sample.nodes if n.serving and n.sessions == 0]
    if not over and policy.warm_spares and len(idle) + sample.pending < policy.warm_spares:
        over = [f"warm spares {len(idle) + sample.pending} < {policy.warm_spares}"]
    if over:
        if count >= policy.max:
            return Decision(Action.HOLD, f"{'; '.join(over)}, but at max {policy.max}")
        if sample.pending:
            return Decision(Action.HOLD, f"{'; '.join(over)}, {sample.pending} node(s) still starting")
        wait = policy.cooldown_out - _since(now, sample.last_out_at)
        if wait > 0:
            return Decision(Action.HOLD, f"{'; '.join(over)}, cooldown {wait:.1f} s left")
        add = min(policy.increment, policy.max - count)
        return Decision(Action.ADD, "; ".join(over), add)
    under = [(name, limit) for name, limit in (("viewers", policy.scale_in_viewers),
                                               ("egress_mbps", policy.scale_in_egress_mbps),
                                               ("cpu", policy.scale_in_cpu)) if limit]
    if (under and count > policy.min and not sample.pending
            and all(averages[name] < limit for name, limit in under)):
        if policy.warm_spares and len(idle) <= policy.warm_spares:
            return Decision(Action.HOLD, f"load low, but only {len(idle)} warm spare(s)")
        serving = sum(1 for n in sample.nodes if n.serving)
        if serving < 2:
            return Decision(Action.HOLD, "load low, but no other serving node would be left")
        # hysteresis: the victim's clients move to the others; if that put them over a
        # scale-out threshold, the next evaluation would add a node again (flapping)
        after = _averages(sample.nodes, over=serving - 1)
        crowded = [f"{name} per node {after[name]:.2f} > {limit:g}"
                   for name, limit in _out_limits(policy) if limit and after[name] > limit]
        if crowded:
            return Decision(Action.HOLD, f"load low, but one node fewer would make {'; '.join(crowded)}")
        wait = policy.cooldown_in - _since(now, sample.last_scaled_at)
        if wait > 0:
            return Decision(Action.HOLD, f"load low, cooldown {wait:.1f} s left")
        # the victim: the fewest clients to move (sessions, then viewers, then egress)
        candidates = sorted((n for n in sample.nodes if n.serving),
                            key=lambda n: (n.sessions, n.viewers, n.egress_bps, n.node_id))
        victim = candidates[0]
        text = ", ".join(f"{name} per node {averages[name]:.2f} < {limit:g}" for name, limit in under)
        return Decision(Action.REMOVE, f"{text}: drain {victim.node_id} ({victim.sessions} sessions to move)",
                        1, (victim.node_id,))
    return Decision(Action.HOLD, f"{count} node(s) within bounds and thresholds")
