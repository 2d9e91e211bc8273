"""ICE consent freshness (RFC 7675) for every connection of a node, on one timer.

aioice checks consent with a task per connection: a sleep of 5 s ± 20 %, then a STUN
transaction (its own future and timeout timer) per nominated pair. `ConsentFreshness`
does the same checks for all of a process's connections from one loop that wakes every
`tick`: a heap says which connection is due, requests go out with their transaction
entered in the pair's STUN protocol (whose responses then land here), and a request
unanswered after `timeout` is a failure. `failures_allowed` failures in a row expire
consent: the connection closes, as aioice's own check does.

`rtc_internals.use_consent_freshness` has aioice's connections use it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aioice import stun
from aioice.ice import CONSENT_FAILURES, CONSENT_INTERVAL

__all__ = ["CONSENT_TICK", "ConsentFreshness"]

log = logging.getLogger("unbroken.media.consent")

CONSENT_TICK = 0.25  # s between the checker's wake-ups
CONSENT_TIMEOUT = stun.RETRY_RTO  # s a check may go unanswered (aioice: one try, one RTO)


@dataclass(eq=False)
class _Watched:
    """One connection's consent: `expired` resolves once it ran out."""

    connection: Any  # aioice.ice.Connection
    pairs: Any  # () -> its nominated candidate pairs
    expired: asyncio.Future
    failures: int = 0
    gone: bool = False


@dataclass(eq=False)
class _Check:
    """One request in flight; in its protocol's `transactions` until answered or late."""

    watched: _Watched
    key: bytes
    protocol: Any  # the pair's aioice StunProtocol
    transaction_id: bytes
    refused: Callable[[_Watched], None]  # an error response: a failure at once
    answered: bool = False
    entered: bool = True

    def response_received(self, message: stun.Message, addr) -> None:
        # as aioice's transactions: an unauthenticated answer is no answer
        if self.answered or not message.check_message_integrity(self.key):
            return
        self.answered = True
        self.leave()
        if message.message_class == stun.Class.RESPONSE:
            self.watched.failures = 0
        else:
            self.refused(self.watched)

    def leave(self) -> None:
        if self.entered:
            self.entered = False
            if self.protocol.transactions.get(self.transaction_id) is self:
                del self.protocol.transactions[self.transaction_id]


class ConsentFreshness:
    """Consent checks for every watched connection, from one task (`start`/`stop`)."""

    def __init__(self, interval: float = CONSENT_INTERVAL,
                 failures_allowed: int = CONSENT_FAILURES,
                 timeout: float = CONSENT_TIMEOUT, tick: float = CONSENT_TICK) -> None:
        self.interval = interval
        self.failures_allowed = failures_allowed
        self.timeout = timeout
        self.tick = tick
        self.sent = 0  # requests sent
        self.failed = 0  # requests unanswered in time, or refused
        self.expired = 0  # connections whose consent ran out
        self._watched: set[_Watched] = set()
        self._due: list[tuple[float, int, _Watched]] = []  # (when, tie-break, watched)
        self._late: list[tuple[float, int, _Check]] = []  # (deadline, tie-break, check)
        self._order = itertools.count()
        self._task: asyncio.Task | None = None

    @property
    def watching(self) -> int:
        return len(self._watched)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def hold(self, connection: Any, pairs) -> None:
        """Return once `connection`'s consent expired (`pairs()`: its nominated pairs);
        cancel to stop checking it."""
        watched = _Watched(connection, pairs, asyncio.get_running_loop().create_future())
        self._watched.add(watched)
        self._schedule(watched, asyncio.get_running_loop().time())
        try:
            await watched.expired
        finally:
            watched.gone = True
            self._watched.discard(watched)

    def _schedule(self, watched: _Watched, now: float) -> None:
        # spread over 0.8-1.2 intervals, as aioice (and RFC 7675 section 5.1) do
        when = now + self.interval * (0.8 + 0.4 * random.random())
        heapq.heappush(self._due, (when, next(self._order), watched))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            try:
                self.check(loop.time())
            except Exception:  # noqa: BLE001 - one bad connection must not stop the checks
                log.exception("consent check failed")

    def check(self, now: float) -> None:
        """Count the late answers, then send what is due (the loop calls it every tick)."""
        while self._late and self._late[0][0] <= now:
            _, _, check = heapq.heappop(self._late)
            if not check.answered:
                check.leave()
                self._failure(check.watched)
        while self._due and self._due[0][0] <= now:
            _, _, watched = heapq.heappop(self._due)
            if watched.gone:
                continue
            self._send(watched, now)
            self._schedule(watched, now)

    def _failure(self, watched: _Watched) -> None:
        self.failed += 1
        watched.failures += 1
        if watched.failures >= self.failures_allowed and not watched.expired.done():
            self.expired += 1
            watched.expired.set_result(None)

    def _send(self, watched: _Watched, now: float) -> None:
        connection = watched.connection
        if watched.expired.done() or connection.remote_password is None:
            return
        key = connection.remote_password.encode("utf8")
        for pair in watched.pairs():
            request = connection.build_request(pair, nominate=False)
            request.add_message_integrity(key)
            check = _Check(watched, key, pair.protocol, request.transaction_id, self._failure)
            pair.protocol.transactions[request.transaction_id] = check
            heapq.heappush(self._late, (now + self.timeout, next(self._order), check))
            self.sent += 1
            try:
                pair.protocol.send_stun(request, pair.remote_addr)
            except Exception:  # noqa: BLE001 - a closed socket: the deadline counts it
                log.debug("consent request not sent", exc_info=True)
