"""The scaling evaluator (pure), the group policy parser and the fault detector."""

from __future__ import annotations

import pytest

from unbroken.manager.model import NodeRole
from unbroken.manager.scaling import (
    Action, FaultDetector, GroupKey, GroupPolicy, GroupSample, NodeSample, evaluate, parse_groups,
)

EDGE = GroupPolicy(min=1, max=3, increment=1, scale_out_viewers=10, scale_in_viewers=3, scale_out_cpu=0,
                   scale_in_cpu=0, cooldown_out=5, cooldown_in=30)


def nodes(*viewers: int, serving: bool = True) -> tuple[NodeSample, ...]:
    return tuple(NodeSample(f"e{i}", serving, v, v) for i, v in enumerate(viewers))


def test_below_minimum_adds_at_once():
    d = evaluate(GroupPolicy(min=2, max=4), GroupSample(()), now=0)
    assert d.action is Action.ADD and d.count == 2 and "min 2" in d.reason


def test_pending_nodes_count_towards_the_minimum():
    assert evaluate(GroupPolicy(min=2, max=4), GroupSample(nodes(0), pending=1), now=0).action is Action.HOLD


def test_viewers_over_the_threshold_add_an_increment():
    d = evaluate(EDGE, GroupSample(nodes(12, 14)), now=100)
    assert d.action is Action.ADD and d.count == 1 and "viewers per node 13.00 > 10" in d.reason


def test_scale_out_waits_for_its_cooldown_and_for_starting_nodes():
    assert evaluate(EDGE, GroupSample(nodes(12), last_out_at=98), now=100).action is Action.HOLD
    assert "cooldown" in evaluate(EDGE, GroupSample(nodes(12), last_out_at=98), now=100).reason
    assert evaluate(EDGE, GroupSample(nodes(12), last_out_at=90), now=100).action is Action.ADD
    assert "starting" in evaluate(EDGE, GroupSample(nodes(12), pending=1), now=100).reason


def test_never_above_max():
    d = evaluate(EDGE, GroupSample(nodes(20, 20, 20)), now=100)
    assert d.action is Action.HOLD and "at max 3" in d.reason


def test_increment_is_capped_by_max():
    policy = GroupPolicy(min=1, max=3, increment=5, scale_out_viewers=1, scale_out_cpu=0)
    assert evaluate(policy, GroupSample(nodes(5)), now=100).count == 2


def test_egress_and_cpu_rules():
    policy = GroupPolicy(scale_out_egress_mbps=50, scale_out_cpu=0.5)
    busy = (NodeSample("e0", True, 1, 1, egress_bps=80e6, cpu=0.1),)
    assert "egress_mbps" in evaluate(policy, GroupSample(busy), now=100).reason
    hot = (NodeSample("e0", True, 1, 1, cpu=0.9),)
    assert "cpu" in evaluate(policy, GroupSample(hot), now=100).reason


def test_low_load_drains_the_least_loaded_after_cooldown():
    sample = GroupSample(nodes(2, 0, 1), last_scaled_at=50)
    d = evaluate(EDGE, sample, now=100)
    assert d.action is Action.REMOVE and d.remove == ("e1",) and "< 3" in d.reason
    assert evaluate(EDGE, GroupSample(nodes(2, 0), last_scaled_at=90), now=100).action is Action.HOLD


def test_no_scale_in_that_the_next_evaluation_would_undo():
    # 2 + 2 viewers on two nodes: 2 per node < 3, but on one node 4 per node: still
    # under the scale-out 10, so drain; with scale-out at 3.5 it would flap: hold
    sample = GroupSample(nodes(2, 2), last_scaled_at=0)
    assert evaluate(EDGE, sample, now=100).action is Action.REMOVE
    policy = GroupPolicy(min=1, max=3, scale_out_viewers=3.5, scale_in_viewers=3, scale_out_cpu=0, scale_in_cpu=0,
                         cooldown_in=0)
    d = evaluate(policy, sample, now=100)
    assert d.action is Action.HOLD and "one node fewer would make viewers per node 4.00 > 3.5" in d.reason
    # cpu too: 3 x 0.19 over 2 nodes is 0.285, under 0.3; 2 x 0.19 on one node is 0.38
    policy = GroupPolicy(max=5, scale_out_cpu=0.3, scale_in_cpu=0.2, cooldown_in=0)
    warm = tuple(NodeSample(f"e{i}", True, 0, 0, cpu=0.19) for i in range(3))
    assert evaluate(policy, GroupSample(warm), now=100).action is Action.REMOVE
    assert "cpu per node 0.38 > 0.3" in evaluate(policy, GroupSample(warm[:2]), now=100).reason


def test_scale_in_needs_another_serving_node():
    sample = GroupSample((NodeSample("e0", True), NodeSample("e1", False)))
    d = evaluate(GroupPolicy(cooldown_in=0), sample, now=100)
    assert d.action is Action.HOLD and "no other serving node" in d.reason


def test_scale_in_victim_has_the_fewest_sessions_and_says_so():
    sample = GroupSample((NodeSample("a", True, 1, 1), NodeSample("b", True, 0, 0), NodeSample("c", True, 2, 2)))
    d = evaluate(EDGE, sample, now=100)
    assert d.remove == ("b",) and "drain b (0 sessions to move)" in d.reason


def test_no_scale_in_at_minimum_or_when_busy():
    assert evaluate(EDGE, GroupSample(nodes(0)), now=100).action is Action.HOLD
    assert evaluate(EDGE, GroupSample(nodes(5, 5)), now=100).action is Action.HOLD


def test_warm_spares_are_kept():
    policy = GroupPolicy(min=1, max=4, warm_spares=1, scale_out_cpu=0, scale_in_cpu=0, scale_in_viewers=3)
    d = evaluate(policy, GroupSample(nodes(2)), now=100)
    assert d.action is Action.ADD and "warm spares 0 < 1" in d.reason
    assert evaluate(policy, GroupSample(nodes(2, 0)), now=100).action is Action.HOLD
    assert evaluate(policy, GroupSample(nodes(0, 0, 1)), now=100).action is Action.REMOVE


def test_parse_groups_from_toml_tables():
    groups = parse_groups({"default": {"edge": {"min": 2, "max": 6, "scale_out_viewers": 100}},
                           "eu": {"origin": {}}})
    assert groups[GroupKey("default", NodeRole.EDGE)].max == 6
    assert groups[GroupKey("eu", NodeRole.ORIGIN)] == GroupPolicy()


@pytest.mark.parametrize("bad", [
    {"default": {"edge": {"min": 3, "max": 2}}},
    {"default": {"relay": {}}},
    {"default": {"edge": {"mni": 1}}},
    {"default": {"edge": {"min": 1.5}}},
    {"default": {"edge": {"scale_out_viewers": 10, "scale_in_viewers": 10}}},
    {"default": {"edge": {"scale_out_cpu": 2}}},
])
def test_bad_groups_are_refused(bad):
    with pytest.raises(ValueError):
        parse_groups(bad)


def test_fault_detector_stall_health_and_restart():
    d = FaultDetector(stall_s=2.0, health_failures=2)
    d.observe("n", "i1", 5, now=0)
    d.observe("n", "i1", 6, now=1)
    assert d.verdict("n", 2.5) is None
    assert "no heartbeat progress" in d.verdict("n", 3.1)
    d.observe("n", "i2", 1, now=3.2)  # a new instance starts afresh
    assert d.verdict("n", 3.3) is None
    d.health("n", False)
    assert d.verdict("n", 3.4) is None
    d.health("n", False)
    assert "healthz" in d.verdict("n", 3.5)
    d.health("n", True)
    assert d.verdict("n", 3.6) is None
