"""A NACK generator that asks again (aiortc's asks once per new gap).

aiortc's receiver NACKs a missing packet only when a *new* gap appears: a packet whose
NACK or retransmission was lost (as a burst of loss ends) is never asked for again, and
never repaired. `RetryingNackGenerator` stands in for aiortc's on a video receiver
(`rtc_internals.use_nack_generator`): the node's ingest of publishers and edge pulls,
and the SDK's decoding viewer (unbroken.client.jitter).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RtpPacket

__all__ = ["NACK_RETRY_INTERVAL", "RetryingNackGenerator", "behind"]

NACK_RETRY_INTERVAL = 0.1  # s between NACKs for packets still missing

Clock = Callable[[], float]


def behind(seq: int, ref: int) -> bool:
    """`seq` comes before `ref` (16-bit sequence numbers)."""
    return seq != ref and (ref - seq) & 0xFFFF < 0x8000


class RetryingNackGenerator(NackGenerator):
    """aiortc's NACK generator (`missing`, within its 128-packet window), which also says
    "send a NACK" when packets are still missing and the last NACK is
    `retry_interval` old. aiortc's receiver then NACKs every missing packet."""

    def __init__(self, retry_interval: float = NACK_RETRY_INTERVAL,
                 clock: Clock = time.monotonic) -> None:
        super().__init__()
        self.retry_interval = retry_interval
        self.clock = clock
        self.retries = 0  # NACKs sent again for packets asked for before
        self._last_nack = float("-inf")

    def add(self, packet: RtpPacket) -> bool:
        missed = super().add(packet)
        if not self.missing:
            return missed
        now = self.clock()
        if missed or now - self._last_nack >= self.retry_interval:
            if not missed:
                self.retries += 1
            self._last_nack = now
            return True
        return False

    def forget_before(self, seq: int) -> None:
        """Stop asking for packets before `seq` (the jitter buffer went on without them)."""
        self.missing = {s for s in self.missing if not behind(s, seq)}
