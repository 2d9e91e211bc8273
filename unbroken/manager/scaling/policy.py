"""What a node group's autoscaling is told: per group and role, the size bounds, the
load rules for scaling out and in, the cooldowns and the warm spares.

Set in the manager's TOML file, one table per group and role:

    [manager.groups.default.edge]
    min = 1
    max = 8
    scale_out_viewers = 200

Every key and its default is in `GroupPolicy`; unknown keys and wrong types are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..model import NodeRole

__all__ = ["GroupKey", "GroupPolicy", "parse_groups"]


@dataclass(frozen=True, slots=True)
class GroupKey:
    """A node group and role: the unit that scales."""

    group: str
    role: NodeRole

    def __str__(self) -> str:
        return f"{self.group}/{self.role.value}"


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """One group and role's scaling rules (TOML keys = field names).

    Load is averaged over the group's serving nodes. Scale out when any `scale_out_*`
    measure is above its threshold; scale in when every `scale_in_*` measure is below
    its threshold; a threshold of 0 is off. `warm_spares` idle serving nodes (no
    sessions) are kept ready on top of what load needs."""

    min: int = 1                          # nodes the group never goes below (faults replaced)
    max: int = 4                          # nodes the group never goes above
    increment: int = 1                    # nodes added per scale-out decision
    scale_out_viewers: float = 0.0        # viewers per node above which to add (0 = off)
    scale_out_egress_mbps: float = 0.0    # egress Mbit/s per node above which to add (0 = off)
    scale_out_cpu: float = 0.75           # CPU share per node (0..1) above which to add (0 = off)
    scale_in_viewers: float = 0.0         # viewers per node below which to remove (0 = off)
    scale_in_egress_mbps: float = 0.0     # egress Mbit/s per node below which to remove (0 = off)
    scale_in_cpu: float = 0.2             # CPU share per node below which to remove (0 = off)
    cooldown_out: float = 5.0             # s after a scale-out before the next one
    cooldown_in: float = 30.0             # s after any scaling before a scale-in
    warm_spares: int = 0                  # idle serving nodes kept ready

    def validate(self, where: str) -> None:
        if not 0 <= self.min <= self.max:
            raise ValueError(f"{where}: need 0 <= min <= max")
        if self.max > 1000 or self.increment < 1:
            raise ValueError(f"{where}: max must be at most 1000 and increment at least 1")
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{where}: {f.name} must be a finite number >= 0")
        if self.scale_out_cpu > 1 or self.scale_in_cpu > 1:
            raise ValueError(f"{where}: cpu thresholds are shares of the node (0..1)")
        for measure in ("viewers", "egress_mbps", "cpu"):
            out, inn = getattr(self, f"scale_out_{measure}"), getattr(self, f"scale_in_{measure}")
            if out and inn and inn >= out:
                raise ValueError(f"{where}: scale_in_{measure} must be below scale_out_{measure}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> GroupPolicy:
        known = {f.name: f for f in fields(cls)}
        unknown = set(table) - set(known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        for key, value in table.items():
            wanted = int if known[key].type == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise ValueError(f"{where}: {key} must be a number, not {value!r}")
        policy = cls(**table)
        policy.validate(where)
        return policy


def parse_groups(groups: Mapping[str, Any]) -> dict[GroupKey, GroupPolicy]:
    """The `[manager.groups]` table: group name -> role (origin, edge, standalone) -> policy."""
    out: dict[GroupKey, GroupPolicy] = {}
    for group, roles in groups.items():
        if not isinstance(roles, Mapping) or not group or len(group) > 64:
            raise ValueError(f"groups.{group}: a table of roles (origin, edge) is expected")
        for role, table in roles.items():
            where = f"groups.{group}.{role}"
            try:
                key = GroupKey(group, NodeRole(role))
            except ValueError:
                raise ValueError(f"{where}: role must be origin, edge or standalone") from None
            if not isinstance(table, Mapping):
                raise ValueError(f"{where}: must be a table")
            out[key] = GroupPolicy.from_table(table, where)
    return out
