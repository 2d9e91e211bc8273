"""Autoscaling of node groups: policies (manager config), the evaluator (pure), the
leader lease, fault detection, the decision log and the leader's loop."""

from __future__ import annotations

from .autoscaler import Autoscaler, HealthProbe, ScalingSettings
from .decisions import DecisionLog
from .evaluator import Action, Decision, GroupSample, NodeSample, evaluate
from .faults import FaultDetector
from .leader import LEASE_NAME, LeaderLease
from .policy import GroupKey, GroupPolicy, parse_groups

__all__ = [
    "Action",
    "Autoscaler",
    "Decision",
    "DecisionLog",
    "FaultDetector",
    "GroupKey",
    "GroupPolicy",
    "GroupSample",
    "HealthProbe",
    "LEASE_NAME",
    "LeaderLease",
    "NodeSample",
    "ScalingSettings",
    "evaluate",
    "parse_groups",
]
