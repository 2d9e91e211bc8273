"""Faulty-node detection: a node whose heartbeats stop making progress (its `seq` does
not advance: stopped, stuck or cut off) or whose `/healthz` fails or times out, in a row.
A lapsed lease needs no detection here: the registry drops the node by itself."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FaultDetector", "NodeProgress"]


@dataclass
class NodeProgress:
    """What the detector remembers of one node instance: its last heartbeat seq, when
    that seq last advanced, and its health checks failed in a row."""

    instance: str
    seq: int
    advanced_at: float
    health_failures: int = 0


class FaultDetector:
    """Owns the progress of every node it watches. `observe` and `health` feed it;
    `verdict` says whether a node is faulty, and why (pure: no I/O, the clock is passed)."""

    def __init__(self, stall_s: float = 2.0, health_failures: int = 2) -> None:
        self.stall_s = stall_s
        self.health_failures = health_failures
        self._nodes: dict[str, NodeProgress] = {}

    def observe(self, node_id: str, instance: str, seq: int, now: float) -> None:
        """The node's record as the registry has it now."""
        known = self._nodes.get(node_id)
        if known is None or known.instance != instance:
            self._nodes[node_id] = NodeProgress(instance, seq, now)
        elif seq > known.seq:
            known.seq, known.advanced_at = seq, now

    def health(self, node_id: str, healthy: bool) -> None:
        known = self._nodes.get(node_id)
        if known is not None:
            known.health_failures = 0 if healthy else known.health_failures + 1

    def verdict(self, node_id: str, now: float) -> str | None:
        """None = fine; else the reason the node is faulty."""
        known = self._nodes.get(node_id)
        if known is None:
            return None
        if now - known.advanced_at >= self.stall_s:
            return f"no heartbeat progress for {now - known.advanced_at:.1f} s (seq {known.seq})"
        if known.health_failures >= self.health_failures:
            return f"/healthz failed {known.health_failures} times in a row"
        return None

    def forget(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    def known(self) -> list[str]:
        return list(self._nodes)
