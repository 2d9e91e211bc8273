"""The scaling leader: one manager at a time, by a lease in the cluster store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable

from ..store import ClusterStore, StoreError

__all__ = ["LEASE_NAME", "LeaderLease"]

log = logging.getLogger("unbroken.manager.scaling")

LEASE_NAME = "scaling-leader"


class LeaderLease:
    """Owns this manager's bid for the leader lease: it renews (or tries to take) the
    lease every `ttl_s / 3`; `leading` holds while the last successful renewal's lease
    has not run out on this manager's clock (a manager cut off from the store stops
    leading before another one can take over).

    A manager that takes the lease before the end of the previous holder's lease as it
    last saw it, plus one renewal interval (the store lost the lease early: a Redis
    restart hands it out again at once), leads only from then on: the previous holder
    may believe it leads until then on its own clock, and two leaders would act
    meanwhile. A lease that lapsed (its
    holder died) is led at once. `on_change(leading)` is called on every change."""

    def __init__(self, store: ClusterStore, holder: str, ttl_s: float = 3.0,
                 on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self.on_change = on_change
        self.clock = clock
        self.current_holder: str | None = None
        self._until = 0.0
        self._held_since: float | None = None  # this run of holding the lease began
        self._lead_from = 0.0  # taken early: when the previous holder's lease ends
        self._others_until = 0.0  # another holder's lease end, as last seen
        self._was_leading = False
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        now = self.clock()
        return now < self._until and self._held_since is not None and now >= self._lead_from

    async def renew(self) -> bool:
        """One bid; True if this manager leads after it."""
        started = self.clock()
        try:
            grant = await asyncio.wait_for(self.store.acquire_lease(LEASE_NAME, self.holder, self.ttl_s),
                                           self.ttl_s / 3)
        except (StoreError, TimeoutError) as e:
            log.warning("leader lease: store unavailable (%s)", e)
        else:
            self.current_holder = grant.holder
            if not grant.held:
                self._held_since = None
                # it may renew once more before our next look: a renewal interval on top
                self._others_until = started + grant.left_s + self.ttl_s / 3
            elif self._held_since is None or started >= self._until:
                self._held_since = started  # taken afresh (not renewed in time)
                self._lead_from = self._others_until
            # measured from before the call: the store's lease cannot have started earlier
            self._until = started + grant.left_s if grant.held else 0.0
        self._changed()
        return self.leading

    def _changed(self) -> None:
        leading = self.leading
        if leading != self._was_leading:
            self._was_leading = leading
            log.info("scaling leader: %s", "this manager" if leading else f"{self.current_holder or 'none'}")
            if self.on_change is not None:
                self.on_change(leading)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="unbroken-manager-leader")

    async def _run(self) -> None:
        while True:
            await self.renew()
            if self._held_since is not None and not self.leading:  # taken early: lead on time
                wait = self._lead_from - self.clock()
                await asyncio.sleep(min(self.ttl_s / 3, max(0.0, wait)))
                self._changed()
                continue
            await asyncio.sleep(self.ttl_s / 3)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._held_since is not None and self.clock() < self._until:
            with contextlib.suppress(StoreError, TimeoutError):
                await asyncio.wait_for(self.store.release_lease(LEASE_NAME, self.holder), 1.0)
        self._until = 0.0
        self._held_since = None
