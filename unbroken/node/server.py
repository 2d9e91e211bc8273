"""Run a node until SIGTERM/SIGINT; drain first (refuse new sessions, let current
ones end for up to `drain_timeout`), then close every session cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from unbroken.media.fastpath import PATH
from unbroken.media.consent import ConsentFreshness
from unbroken.media.rtc_internals import (cache_host_addresses, check_hooks, use_consent_freshness,
                                          use_udp_mux)
from unbroken.media.udp_mux import UdpMux

from .app import create_app
from .config import NodeConfig
from .http_common import STATE

log = logging.getLogger("unbroken.node")


async def drain(app: web.Application, timeout: float | None = None, redirect: str | None = None) -> None:
    """Drain: no new sessions, clients told where to go, until they left or the deadline
    (`timeout` from now, or the one a drain request set, whichever comes first)."""
    state = app[STATE]
    if timeout is not None:
        state.request_drain(timeout)
    log.info("draining", extra={"sessions": len(state.sessions), "timeout": round(state.drain_left(), 3)})
    state.begin_drain(redirect)
    while state.sessions and state.drain_left() > 0:
        await state.end_unwatched_publishers()
        await asyncio.sleep(0.05)


# seconds the node's interface list is reused for ICE gathering
HOST_ADDRESSES_TTL = 1.0


async def serve(config: NodeConfig) -> None:
    check_hooks()  # fail at start, naming the hook, if aiortc's privates moved
    # a burst of new sessions enumerates the interfaces for ICE once, not once each
    cache_host_addresses(HOST_ADDRESSES_TTL)
    log.info(f"forwarding path: {PATH.name} ({PATH.reason})")
    # every session's ICE on one shared socket per address (the process is only a node)
    mux = UdpMux(config.ice_udp_port) if config.ice_udp_port >= 0 else None
    use_udp_mux(mux)
    # every session's consent checks (RFC 7675) on one timer, not a task each
    consent = ConsentFreshness()
    consent.start()
    use_consent_freshness(consent)
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    log.info("node listening", extra={"host": config.host, "port": config.port})
    state = app[STATE]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, state.request_drain, config.drain_timeout)
    # SIGTERM/SIGINT, or POST /api/v1/drain with the node token (unbroken.protocol.node_admin)
    await state.shutdown.wait()
    # behind a manager, clients go back to it (relative paths resolve against it)
    await drain(app, None, "/ws" if config.manager else None)
    await runner.cleanup()
    use_consent_freshness(None)
    await consent.stop()
    if mux is not None:
        use_udp_mux(None)
        mux.close()
    log.info("node stopped")


def run(config: NodeConfig) -> None:
    asyncio.run(serve(config))
