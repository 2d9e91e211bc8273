"""The scaling leader's record: every decision with its reason and every node state
change (joining, serving, draining, fault, gone), logged, counted in the manager's
metrics and pushed to the dashboard feed."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DecisionLog"]

log = logging.getLogger("unbroken.manager.scaling")

HISTORY = 200


class DecisionLog:
    """Owns the recent entries (newest last), the scaling metrics and the sink that
    takes each entry to the dashboard feed."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 sink: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.sink = sink
        self.decisions = Counter("unbroken_manager_scaling_decisions", "Scaling decisions that acted",
                                 ["group", "role", "action"], registry=registry)
        self.transitions = Counter("unbroken_manager_node_transitions", "Node lifecycle changes seen by the leader",
                                   ["state"], registry=registry)
        self.leader = Gauge("unbroken_manager_scaling_leader", "1 while this manager is the scaling leader",
                            registry=registry)
        self.faults = Counter("unbroken_manager_node_faults", "Nodes found faulty, by cause", ["cause"],
                              registry=registry)
        self.stops = Histogram("unbroken_manager_node_stop_seconds",
                               "From the leader's decision to stop a node (scale-in drain, fault kill) "
                               "to the node gone from the cluster and the provider", ["how"],
                               buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120), registry=registry)

    def _add(self, kind: str, text: str, fields: dict[str, Any]) -> dict[str, Any]:
        entry = {"t": round(time.time(), 3), "kind": kind, "text": text, **fields}
        self.entries.append(entry)
        log.info("%s: %s", kind, text, extra={k: v for k, v in fields.items() if k not in ("t",)})
        if self.sink is not None:
            self.sink(kind, text, fields)
        return entry

    def decision(self, group: str, role: str, action: str, reason: str, **fields: Any) -> dict[str, Any]:
        self.decisions.labels(group, role, action).inc()
        return self._add(f"scale_{action}", f"{group}/{role}: {action} — {reason}",
                         {"group": group, "role": role, "reason": reason, **fields})

    def node(self, node_id: str, state: str, reason: str = "") -> dict[str, Any]:
        self.transitions.labels(state).inc()
        text = f"node {node_id}: {state}" + (f" ({reason})" if reason else "")
        return self._add(f"node_{state}", text, {"node": node_id, "reason": reason})

    def gone(self, node_id: str, seconds: float, how: str) -> dict[str, Any]:
        """A node the leader stopped is gone, `seconds` after the decision."""
        self.stops.labels(how).observe(seconds)
        self.transitions.labels("gone").inc()
        return self._add("node_gone", f"node {node_id}: gone ({how} in {seconds:.2f} s)",
                         {"node": node_id, "reason": f"{how} in {seconds:.2f} s", "how": how,
                          "seconds": round(seconds, 3)})

    def fault(self, node_id: str, cause: str, reason: str) -> dict[str, Any]:
        self.faults.labels(cause).inc()
        return self.node(node_id, "fault", reason)

    def leadership(self, leading: bool, holder: str) -> None:
        self.leader.set(1 if leading else 0)
        self._add("scaling_leader", f"{'this manager leads' if leading else 'no longer leading'} ({holder})",
                  {"leading": leading})
