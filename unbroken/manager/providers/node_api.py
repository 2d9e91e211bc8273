"""Asking a node to drain through its admin API (`unbroken.protocol.node_admin`), with
the cluster's node token: how any manager drains a node it did not start (no pid to
signal, maybe another machine), and how the local provider drains with the leader's
deadline rather than the one the node was started with."""

from __future__ import annotations

import logging

import aiohttp

from unbroken.protocol.node_admin import DRAIN_PATH, drain_request

__all__ = ["NodeDrainer"]

log = logging.getLogger("unbroken.manager.providers")

REQUEST_TIMEOUT_S = 1.0


class NodeDrainer:
    """Owns the HTTP client that sends drain requests (bounded by a timeout)."""

    def __init__(self, node_token: str, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.node_token = node_token
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    async def drain(self, url: str, timeout_s: float) -> bool:
        """Ask the node at `url` to drain and exit within `timeout_s`; True once it
        answered 202 (it drains), False when it refused or could not be reached."""
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        try:
            async with self._http.post(f"{url.rstrip('/')}{DRAIN_PATH}", json=drain_request(timeout_s),
                                       headers={"Authorization": f"Bearer {self.node_token}"},
                                       timeout=self.timeout) as resp:
                if resp.status == 202:
                    return True
                log.warning("node %s refused the drain request: %d %s", url, resp.status, (await resp.text())[:200])
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("node %s did not take the drain request: %r", url, e)
        return False

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
