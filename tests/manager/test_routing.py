"""Routing: the pure selection functions, the power-of-two-choices spread across many
simulated managers, and the Router over a registry on both stores."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from unbroken.manager.model import NodeLimits, NodeRole, NodeState
from unbroken.manager.registry import NodeView, Registry
from unbroken.manager.routing import (
    NoNodeAvailable,
    RouteAnswer,
    RouteKind,
    Router,
    StreamNotLive,
    load_score,
    select_origin,
    select_play_node,
    two_choices,
    under_limits,
)
from unbroken.manager.store import RedisStore

from manager_helpers import record

pytestmark = pytest.mark.timeout(30)

NOW = 100.0


def view(node_id, role=NodeRole.ORIGIN, *, state=NodeState.SERVING, expires_at=NOW + 3, **kwargs) -> NodeView:
    return NodeView(record(node_id, role, state=state if state.reported_by_node else NodeState.SERVING, **kwargs),
                    state, expires_at)


def rng(seed=1) -> random.Random:
    return random.Random(seed)


# -- limits and load --------------------------------------------------------------------


def test_limits_and_load_score():
    limits = NodeLimits(max_sessions=10, max_cpu=0.8)
    assert under_limits(record("a", sessions=9, cpu=0.1, limits=limits))
    assert not under_limits(record("a", sessions=10, limits=limits))
    assert not under_limits(record("a", cpu=0.8, limits=limits))
    assert load_score(record("a", sessions=5, limits=limits)) == (0.5, 5)
    assert load_score(record("a", sessions=5, limits=NodeLimits(max_cpu=None))) == (0.0, 5)
    assert under_limits(record("a", sessions=10**6, limits=NodeLimits(max_cpu=None)))


def test_two_choices_edge_cases():
    only = view("a")
    assert two_choices([only], rng()) is only
    with pytest.raises(NoNodeAvailable):
        two_choices([], rng())
    light, heavy = view("light", cpu=0.1), view("heavy", cpu=0.7)
    assert all(two_choices([light, heavy], rng(seed)) is light for seed in range(20))


# -- publish ----------------------------------------------------------------------------


def test_publish_goes_to_the_serving_owner_without_a_new_claim():
    owner, idle = view("o1", cpu=0.85), view("o2")
    choice = select_origin("cam", [owner, idle], "o1", NOW, rng())
    assert choice.view is owner and not choice.claim


@pytest.mark.parametrize(
    "owner",
    [
        view("o1", expires_at=NOW - 0.1),  # lease lapsed
        view("o1", state=NodeState.SUSPECT),
        view("o1", state=NodeState.DRAINING),
        view("o1", state=NodeState.GONE),
    ],
    ids=["lapsed", "suspect", "draining", "gone"],
)
def test_publish_replaces_an_owner_that_no_longer_serves(owner):
    other = view("o2")
    choice = select_origin("cam", [owner, other], "o1", NOW, rng())
    assert choice.view is other and choice.claim and choice.replacing == "o1"


def test_publish_prefers_an_origin_that_carries_the_stream():
    carrying = view("o1", streams=["cam"], cpu=0.6)
    idle = [view(f"o{i}") for i in range(2, 6)]
    choice = select_origin("cam", [carrying, *idle], None, NOW, rng())
    assert choice.view is carrying and choice.claim and choice.replacing is None


def test_publish_new_stream_filters_role_group_state_and_limits():
    full = view("full", limits=NodeLimits(max_sessions=1), sessions=1)
    nodes = [
        view("edge", NodeRole.EDGE),
        view("eu", group="eu"),
        view("joining", state=NodeState.JOINING),
        view("draining", state=NodeState.DRAINING),
        full,
        view("standalone", NodeRole.STANDALONE),
        view("us", group="us"),
    ]
    chosen = {select_origin("cam", nodes, None, NOW, rng(s), group="us").view.node_id for s in range(30)}
    assert chosen == {"us"}
    chosen = {select_origin("cam", nodes, None, NOW, rng(s)).view.node_id for s in range(60)}
    assert chosen == {"standalone", "us", "eu"}


def test_publish_without_origins_is_no_node():
    with pytest.raises(NoNodeAvailable):
        select_origin("cam", [view("e1", NodeRole.EDGE)], None, NOW, rng())
    with pytest.raises(NoNodeAvailable):
        select_origin("cam", [view("o1")], None, NOW, rng(), group="elsewhere")


# -- play -------------------------------------------------------------------------------


def test_play_prefers_edges_that_carry_the_stream():
    origin = view("o1", streams=["cam"])
    carrying = view("e1", NodeRole.EDGE, cpu=0.7)
    idle = [view(f"e{i}", NodeRole.EDGE) for i in range(2, 6)]
    for seed in range(20):
        chosen = select_play_node("cam", [origin, carrying, *idle], frozenset({"e1"}), "o1", NOW, rng(seed))
        assert chosen is carrying


def test_play_spreads_over_carrying_edges_by_load():
    origin = view("o1", streams=["cam"])
    light, heavy = view("e1", NodeRole.EDGE, cpu=0.1), view("e2", NodeRole.EDGE, cpu=0.5)
    chosen = {select_play_node("cam", [origin, light, heavy], frozenset({"e1", "e2"}), None, NOW, rng(s)).node_id
              for s in range(20)}
    assert chosen == {"e1"}


def test_play_of_a_stream_nobody_publishes_is_not_live():
    nodes = [view("o1", streams=["other"]), view("e1", NodeRole.EDGE, streams=["cam"])]
    with pytest.raises(StreamNotLive) as e:
        select_play_node("cam", nodes, frozenset({"e1"}), None, NOW, rng())
    assert e.value.status == 409
    # a lapsed origin does not make the stream live
    with pytest.raises(StreamNotLive):
        lapsed = view("o1", streams=["cam"], expires_at=NOW)
        select_play_node("cam", [lapsed, view("e1", NodeRole.EDGE)], frozenset(), None, NOW, rng())


def test_play_with_no_serving_node_is_no_node():
    with pytest.raises(NoNodeAvailable) as e:
        select_play_node("cam", [], frozenset(), None, NOW, rng())
    assert e.value.status == 404
    nodes = [view("o1", streams=["cam"]), view("e1", NodeRole.EDGE)]
    with pytest.raises(NoNodeAvailable):
        select_play_node("cam", nodes, frozenset(), None, NOW, rng(), group="eu")


def test_play_goes_to_the_origin_when_the_group_has_no_edges():
    origin = view("o1", streams=["cam"])
    draining_edge = view("e1", NodeRole.EDGE, state=NodeState.DRAINING)
    assert select_play_node("cam", [origin, draining_edge], frozenset({"e1"}), "o1", NOW, rng()) is origin
    standalone = view("s1", NodeRole.STANDALONE, streams=["cam"])
    assert select_play_node("cam", [standalone], frozenset(), None, NOW, rng()) is standalone


def test_play_while_the_origin_drains_still_goes_to_edges():
    origin = view("o1", state=NodeState.DRAINING, streams=["cam"])
    edge = view("e1", NodeRole.EDGE)
    assert select_play_node("cam", [origin, edge], frozenset(), "o1", NOW, rng()) is edge
    with pytest.raises(NoNodeAvailable):  # no edge: a draining origin takes no new viewer
        select_play_node("cam", [origin, view("o2")], frozenset(), "o1", NOW, rng())


def test_play_when_every_edge_is_full_is_no_node():
    origin = view("o1", streams=["cam"])
    full = view("e1", NodeRole.EDGE, limits=NodeLimits(max_viewers=5), sessions=5)
    with pytest.raises(NoNodeAvailable):
        select_play_node("cam", [origin, full], frozenset({"e1"}), None, NOW, rng())


def test_play_skips_lapsed_and_suspect_edges():
    origin = view("o1", streams=["cam"])
    lapsed = view("e1", NodeRole.EDGE, expires_at=NOW)
    suspect = view("e2", NodeRole.EDGE, state=NodeState.SUSPECT)
    good = view("e3", NodeRole.EDGE)
    for seed in range(20):
        chosen = select_play_node("cam", [origin, lapsed, suspect, good], frozenset({"e1", "e2"}), None, NOW, rng(seed))
        assert chosen is good


# -- power of two choices across managers ------------------------------------------------


def _simulate(nodes, managers: int, decisions_each: int, pick) -> Counter:
    """Every manager decides on the same stale view (no load update in between)."""
    counts: Counter = Counter()
    for m in range(managers):
        r = rng(1000 + m)
        for _ in range(decisions_each):
            counts[pick(nodes, r).node_id] += 1
    return counts


def test_two_choices_spreads_many_managers_over_equal_nodes():
    nodes = [view(f"o{i}", cpu=0.2) for i in range(10)]
    counts = _simulate(nodes, managers=20, decisions_each=50, pick=two_choices)
    mean = 1000 / len(nodes)
    assert set(counts) == {n.node_id for n in nodes}
    assert max(counts.values()) < 1.5 * mean and min(counts.values()) > 0.5 * mean
    # what picking the least loaded would do: every decision on one node
    least = _simulate(nodes, 20, 50, lambda ns, r: min(ns, key=lambda v: load_score(v.record)))
    assert len(least) == 1


def test_two_choices_favours_light_nodes_without_piling_on_one():
    nodes = [view(f"o{i}", cpu=0.05 * i) for i in range(10)]  # o0 lightest, o9 heaviest
    counts = _simulate(nodes, managers=20, decisions_each=50, pick=two_choices)
    assert counts["o9"] == 0  # the heaviest loses every pairing
    assert counts["o0"] > counts["o5"] > counts["o8"]
    assert counts["o0"] < 0.25 * 1000  # p = 1 - (9/10)(8/9)... = 0.2 for the lightest


# -- the router -------------------------------------------------------------------------


async def _healthy(_record) -> bool:
    return True


@pytest.fixture
async def managers(stores):
    """Two managers (registry + router) on one shared store."""
    registries = [Registry(store, _healthy) for store in stores]
    for registry in registries:
        await registry.start()
    yield [Router(registry, rng=rng(i)) for i, registry in enumerate(registries)]
    for registry in registries:
        await registry.close()


async def _until(predicate, timeout=3.0):
    async def wait():
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def test_router_publish_claims_and_every_manager_agrees(managers):
    first, second = managers
    for i in range(8):
        await first.registry.heartbeat(record(f"o{i}", port=9000 + i))
    await _until(lambda: sum(1 for _ in second.registry.views()) == 8)
    answers = await asyncio.gather(*(m.route_publish("cam") for m in managers for _ in range(5)))
    assert len({a.node_id for a in answers}) == 1
    owner = answers[0].node_id
    assert await first.registry.store.origin_of("cam") == owner
    assert answers[0].to_json()["whip_url"] == f"http://10.0.0.1:{9000 + int(owner[1:])}/whip/cam"


async def test_router_publish_takes_over_from_a_gone_owner(managers):
    router = managers[0]
    registry = router.registry
    await registry.heartbeat(record("o1"))
    assert (await router.route_publish("cam")).node_id == "o1"
    await registry.heartbeat(record("o2"))
    registry.mark_suspect("o1", "test")  # out of routing at once
    answer = await router.route_publish("cam")
    assert answer.node_id == "o2"
    assert await registry.store.origin_of("cam") == "o2"


async def test_router_play_reserves_the_edge_for_the_next_viewer(managers):
    first, second = managers
    await first.registry.heartbeat(record("o1", streams=["cam"]))
    for i in range(6):
        await first.registry.heartbeat(record(f"e{i}", NodeRole.EDGE, port=9100 + i))
    answer = await first.route_play("cam")
    assert answer.role is NodeRole.EDGE and answer.kind is RouteKind.PLAY
    assert answer.to_json()["whep_url"].endswith("/whep/cam")
    assert await first.registry.store.stream_edges("cam") == {answer.node_id}
    await _until(lambda: answer.node_id in second.registry.carriers("cam"))
    for _ in range(10):
        assert (await second.route_play("cam")).node_id == answer.node_id


async def test_router_play_answers_409_then_routes_once_live(managers):
    router = managers[0]
    await router.registry.heartbeat(record("o1"))
    with pytest.raises(StreamNotLive):
        await router.route_play("cam")
    await router.registry.heartbeat(record("o1", streams=["cam"]))
    answer = await router.route_play("cam")
    assert answer == RouteAnswer(RouteKind.PLAY, "cam", "o1", NodeRole.ORIGIN, "http://10.0.0.1:9000")


async def test_routes_still_answer_while_redis_is_down(redis_server):
    store = RedisStore(redis_server.url, prefix="routing-down")
    registry = Registry(store, _healthy)
    await registry.start()
    router = Router(registry, rng=rng())
    try:
        await registry.heartbeat(record("o1", streams=["cam"]))
        await registry.heartbeat(record("e1", NodeRole.EDGE))
        redis_server.kill()
        assert (await router.route_play("cam")).node_id == "e1"  # the reservation is not shared
        assert (await router.route_publish("cam")).node_id == "o1"  # the hot owner: no store
        assert (await router.route_publish("new")).node_id == "o1"  # unclaimed until heartbeats
        redis_server.start()
        await registry.heartbeat(record("o1", streams=["cam", "new"]))
        assert await store.origin_of("new") == "o1"
    finally:
        if redis_server.proc is None:
            redis_server.start()
        await registry.close()
        await store.close()
