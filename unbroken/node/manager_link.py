"""The node's link to its stream manager: register, then heartbeat every second with the
node's role, state and load (sessions, publishers, viewers, CPU, egress bitrate, its
streams and their upstreams), over the manager's public API
(`PUT /api/v1/nodes/{id}` with the node token); leave on shutdown.

A manager whose certificate is self-signed is trusted through an option: a CA file or
the certificate's SHA-256 fingerprint (pinned); verification is never switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import ssl
import time
from urllib.parse import quote

import aiohttp

from unbroken.httpkit.tls import client_context
from unbroken.protocol.faults import ROUTE_UNRESPONSIVE
from unbroken.protocol.states import Kind

from .config import NodeConfig
from .figures import live_figures
from .state import NodeState

__all__ = ["ManagerLink", "node_record"]

log = logging.getLogger("unbroken.node.manager")

HEARTBEAT_TIMEOUT_S = 1.0
LEAVE_TIMEOUT_S = 1.0
LOCATE_TIMEOUT_S = 1.0


class _Load:
    """CPU share and egress bitrate between two heartbeats."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._cpu = time.process_time()
        self._octets = 0

    def sample(self, octets: int) -> tuple[float, float]:
        now, cpu = time.monotonic(), time.process_time()
        elapsed = max(now - self._at, 1e-3)
        share = (cpu - self._cpu) / elapsed / (os.cpu_count() or 1)
        egress = max(0, octets - self._octets) * 8 / elapsed
        self._at, self._cpu, self._octets = now, cpu, octets
        return min(max(share, 0.0), 1.0), egress


def node_record(state: NodeState, config: NodeConfig, node_id: str, instance: str, seq: int,
                cpu: float, egress_bps: float) -> dict:
    """The node's record as the manager's API takes it."""
    streams = sorted(name for name, s in state.streams.items() if s.live)
    viewers = {name: len(s.subscriber_ids) for name, s in state.streams.items() if s.live}
    _, publishers, subscribers, _, _ = live_figures(state)
    upstreams = state.puller.upstream_urls() if state.puller is not None else {}
    return {
        "node_id": node_id,
        "role": config.role,
        "url": config.advertise_url,
        "group": config.group,
        "instance": instance,
        "seq": seq,
        "state": "draining" if state.draining else "serving",
        "load": {"sessions": len(state.sessions), "publishers": publishers,
                 "viewers": subscribers, "cpu": round(cpu, 4), "egress_bps": round(egress_bps)},
        "limits": {"max_sessions": config.max_sessions},
        "streams": streams,
        "upstreams": upstreams,  # an edge's pulled streams and where from
        "stream_viewers": viewers,
    }


class ManagerLink:
    """Owns the heartbeat task; `beat()` sends one at once (on drain)."""

    def __init__(self, state: NodeState, config: NodeConfig) -> None:
        self.state = state
        self.config = config
        self.node_id = config.cluster_id
        self.instance = secrets.token_hex(8)
        self.seq = 0
        self.registered = False
        self._load = _Load()
        self._url = f"{config.manager.rstrip('/')}/api/v1/nodes/{quote(self.node_id, safe='')}"
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.config.manager.startswith("https://"):
            return False
        return client_context(ca_file=self.config.manager_ca or None,
                              fingerprint=self.config.manager_fingerprint or None)

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl()),
            headers={"Authorization": f"Bearer {self.config.node_token}"})
        self.state.drain_listeners.append(lambda info: asyncio.ensure_future(self.beat()))
        self.state.state_listeners.append(self._on_session_state)
        self._task = asyncio.create_task(self._run(), name="unbroken-node-manager-link")

    def _on_session_state(self, session, state) -> None:
        # a stream went live or ended here: the manager hears it now, not within a second
        if session.kind is Kind.PUBLISH and self._http is not None:
            asyncio.ensure_future(self.beat())

    async def stop(self) -> None:
        """Stop heartbeating and leave the cluster (bounded)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._http.delete(self._url, timeout=aiohttp.ClientTimeout(total=LEAVE_TIMEOUT_S)):
                    pass
            await self._http.close()

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.config.heartbeat_interval)

    async def beat(self) -> bool:
        """One heartbeat; True when the manager took it."""
        async with self._lock:
            self.seq += 1
            cpu, egress = self._load.sample(live_figures(self.state)[4])
            record = node_record(self.state, self.config, self.node_id, self.instance, self.seq, cpu, egress)
            try:
                async with self._http.put(self._url, data=json.dumps(record),
                                          headers={"Content-Type": "application/json"},
                                          timeout=aiohttp.ClientTimeout(total=HEARTBEAT_TIMEOUT_S)) as resp:
                    body = await resp.text()
                    if resp.status != 200:
                        log.warning("manager refused the heartbeat", extra={"status": resp.status,
                                                                            "answer": body[:200]})
                        return False
            except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as e:
                log.warning("manager unreachable", extra={"manager": self.config.manager, "error": repr(e)})
                return False
            if not self.registered:
                log.info("registered with the manager", extra={"manager": self.config.manager,
                                                               "node_id": self.node_id})
            self.registered = True
            return True


    async def locate(self, stream: str, unresponsive: str | None = None) -> list[str]:
        """The base URLs the manager says `stream` can be pulled from now (its origin
        first); empty when it knows none or cannot be reached (the relay retries).
        `unresponsive`: the base URL of an upstream that just stopped answering."""
        url = (f"{self.config.manager.rstrip('/')}/api/v1/locate/{quote(stream, safe='')}"
               f"?node={quote(self.node_id, safe='')}")
        if unresponsive:
            url += f"&{ROUTE_UNRESPONSIVE}={quote(unresponsive, safe='')}"
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=LOCATE_TIMEOUT_S)) as resp:
                if resp.status != 200:
                    return []
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, ValueError) as e:
            log.warning("manager lookup failed", extra={"stream": stream, "error": repr(e)})
            return []
        return [entry["url"] for entry in body.get("upstreams", [])
                if isinstance(entry, dict) and isinstance(entry.get("url"), str)]
