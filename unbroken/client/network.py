"""Network change detection: the default routes and their interfaces' addresses, read over
netlink."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pyroute2 import AsyncIPRoute

log = logging.getLogger("unbroken.client.network")

POLL_INTERVAL = 0.2


async def path_signature(ipr: AsyncIPRoute) -> tuple:
    """What a change of network path changes: the default routes (gateway, interface) and
    the global unicast addresses of the interfaces they go out of. Other interfaces are
    left out: a bridge or veth coming or going (a container starting, a VPN's side link)
    is not this host's path, and must not restore every session."""
    routes = []
    for family in (2, 10):
        async for route in await ipr.route("dump", family=family):
            if route["dst_len"] == 0 and route["table"] == 254:
                routes.append((family, route.get_attr("RTA_GATEWAY"), route.get_attr("RTA_OIF")))
    uplinks = {oif for _, _, oif in routes}
    addresses = []
    async for addr in await ipr.addr("dump"):
        # global scope: leaves loopback and link-local out
        if addr["scope"] == 0 and addr["index"] in uplinks:
            addresses.append((addr.get_attr("IFA_ADDRESS"), addr["index"]))
    return tuple(sorted(routes, key=repr)), tuple(sorted(addresses, key=repr))


class NetworkWatcher:
    """Calls `on_change(unchanged_at)` when the path signature changes (polled over
    netlink); `unchanged_at` is the monotonic time of the last poll that saw the old path."""

    def __init__(self, on_change: Callable[[float], None],
                 interval: float = POLL_INTERVAL) -> None:
        self.on_change = on_change
        self.interval = interval
        self.signature: tuple | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        try:
            async with AsyncIPRoute() as ipr:
                self.signature = await path_signature(ipr)
                unchanged_at = time.monotonic()
                while True:
                    await asyncio.sleep(self.interval)
                    current = await path_signature(ipr)
                    if current != self.signature:
                        previous, self.signature = self.signature, current
                        log.info("network path changed", extra={"old": previous,
                                                                "new": current})
                        self.on_change(unchanged_at)
                    unchanged_at = time.monotonic()
        except asyncio.CancelledError:
            raise
        except Exception:  # no netlink here (a sandbox): run without the watcher
            log.warning("network watcher unavailable", exc_info=True)
