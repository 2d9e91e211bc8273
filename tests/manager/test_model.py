"""Node records as they arrive from nodes and the store: JSON round trip and refusals."""

from __future__ import annotations

import pytest

from unbroken.manager.model import InvalidRecord, NodeLimits, NodeLoad, NodeRecord, NodeRole, NodeState

from manager_helpers import record


def test_record_json_round_trips():
    original = record("e1", NodeRole.EDGE, streams=["a", "b"], sessions=4, cpu=0.3,
                      limits=NodeLimits(max_viewers=100, max_egress_bps=1e9))
    original = NodeRecord(**{**{f: getattr(original, f) for f in original.__slots__},
                             "upstreams": (("a", "http://10.0.0.9:8080"),)})
    assert NodeRecord.from_json(original.to_json()) == original


def test_minimal_record_takes_defaults():
    parsed = NodeRecord.from_json({"node_id": "n1", "role": "origin", "url": "http://h:1"})
    assert parsed.state is NodeState.JOINING and parsed.group == "default"
    assert parsed.load == NodeLoad() and parsed.limits == NodeLimits() and parsed.streams == frozenset()


BASE = {"node_id": "n1", "role": "origin", "url": "http://h:1"}


@pytest.mark.parametrize(
    "change",
    [
        {"node_id": ""},
        {"node_id": 5},
        {"role": "king"},
        {"url": "ftp://h"},
        {"state": "gone"},  # the manager's verdict, never a node's report
        {"state": "suspect"},
        {"group": ""},
        {"seq": -1},
        {"seq": "1"},
        {"streams": ["../etc"]},
        {"streams": "cam"},
        {"upstreams": {"cam": 1}},
        {"load": {"sessions": -1}},
        {"load": {"cpu": float("nan")}},
        {"load": {"viewers": True}},
        {"load": []},
        {"limits": {"max_cpu": "high"}},
    ],
)
def test_malformed_records_are_refused(change):
    with pytest.raises(InvalidRecord):
        NodeRecord.from_json({**BASE, **change})


def test_missing_fields_are_refused():
    for key in BASE:
        with pytest.raises(InvalidRecord):
            NodeRecord.from_json({k: v for k, v in BASE.items() if k != key})
    with pytest.raises(InvalidRecord):
        NodeRecord.from_json([])


def test_roles():
    assert NodeRole.STANDALONE.takes_publishers and NodeRole.ORIGIN.takes_publishers
    assert not NodeRole.EDGE.takes_publishers
