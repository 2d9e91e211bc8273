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
