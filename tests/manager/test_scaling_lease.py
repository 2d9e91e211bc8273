"""The store's named lease (the scaling leader's lock), on the in-process and Redis
stores alike: set-if-absent, renew by the holder, lapse, compare-and-delete release."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.timeout(30)

SHORT_S = 0.3


async def test_first_taker_holds_and_others_see_it(stores):
    a, b = stores
    first = await a.acquire_lease("scaling", "m1", 3.0)
    assert first.held and first.holder == "m1"
    second = await b.acquire_lease("scaling", "m2", 3.0)
    assert not second.held and second.holder == "m1" and 0 < second.left_s <= 3.0


async def test_holder_renews(stores):
    a, b = stores
    await a.acquire_lease("scaling", "m1", SHORT_S)
    for _ in range(3):
        await asyncio.sleep(SHORT_S / 2)
        assert (await a.acquire_lease("scaling", "m1", SHORT_S)).held
    assert not (await b.acquire_lease("scaling", "m2", SHORT_S)).held


async def test_a_lapsed_lease_passes_to_the_next(stores):
    a, b = stores
    await a.acquire_lease("scaling", "m1", SHORT_S)
    await asyncio.sleep(SHORT_S + 0.15)
    grant = await b.acquire_lease("scaling", "m2", 3.0)
    assert grant.held and grant.holder == "m2"
    assert not (await a.acquire_lease("scaling", "m1", 3.0)).held


async def test_only_the_holder_releases(stores):
    a, b = stores
    await a.acquire_lease("scaling", "m1", 3.0)
    assert not await b.release_lease("scaling", "m2")
    assert await a.release_lease("scaling", "m1")
    assert not await a.release_lease("scaling", "m1")
    assert (await b.acquire_lease("scaling", "m2", 3.0)).held


async def test_leases_are_independent_by_name(stores):
    a, b = stores
    assert (await a.acquire_lease("one", "m1", 3.0)).held
    assert (await b.acquire_lease("two", "m2", 3.0)).held


async def test_a_store_that_restarts_empty_never_makes_two_leaders():
    """The lease holder's store restarts empty and another manager takes the lease at
    once: the new holder leads only from the end of the old holder's lease as it last
    saw it, by which time the old one (whose renewal failed) has stopped; the old one
    led at once (nobody held the lease before). Sampled every 0.1 s on one clock."""
    from unbroken.manager.scaling.leader import LeaderLease
    from unbroken.manager.store import LocalStore

    now = [0.0]

    def clock() -> float:
        return now[0]

    store = LocalStore(clock)
    a = LeaderLease(store, "a", ttl_s=3.0, clock=clock)
    b = LeaderLease(store, "b", ttl_s=3.0, clock=clock)
    leading = []
    for step in range(200):  # 20 s; each renews every 1 s, b half a second after a
        now[0] = step / 10
        if step == 65:
            store._leases.clear()  # the restart, just before b renews (6.5 s)
        if step % 10 == 0:
            await a.renew()
        if step % 10 == 5:
            await b.renew()
        leading.append((now[0], a.leading, b.leading))
    assert not any(x and y for _, x, y in leading)
    a_led = [t for t, x, _ in leading if x]
    b_led = [t for t, _, y in leading if y]
    assert a_led[0] == 0.0 and a_led[-1] < 7.0
    assert b_led[0] == 9.0  # took it at 6.5; a's lease as b saw it at 5.5 (8.0) + 1 s
    # a lapsed lease (its holder died) is led at once
    for step in range(200, 260):
        now[0] = step / 10
        if step % 10 == 5:
            await b.renew()
    c = LeaderLease(store, "c", ttl_s=3.0, clock=clock)
    assert not await c.renew()
    now[0] = 30.0  # b is gone: its lease lapsed at 28.5
    assert await c.renew() and c.leading
