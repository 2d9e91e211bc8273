"""Run a manager until SIGTERM/SIGINT: TLS (given, or self-signed at start with its
fingerprint printed), then on the signal drain (healthz 503, no new sessions, open
streams and sockets get `drain_timeout` to end) and stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import tempfile
import time
from dataclasses import dataclass

from aiohttp import web

from .app import create_app
from .config import ManagerConfig
from .service import MANAGER
from .tls import create_self_signed, server_context

__all__ = ["RunningManager", "run", "serve", "start"]

log = logging.getLogger("unbroken.manager")

SHUTDOWN_GRACE_S = 0.5


@dataclass
class RunningManager:
    """A started manager: its runner, app, URL and (self-signed) certificate fingerprint."""

    runner: web.AppRunner
    app: web.Application
    url: str
    fingerprint: str | None
    cert_file: str | None

    async def drain_and_stop(self, timeout: float) -> None:
        manager = self.app[MANAGER]
        manager.draining = True
        log.info("draining", extra={"active": manager.proxy.active, "timeout": timeout})
        deadline = time.monotonic() + timeout
        while manager.proxy.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        manager.proxy.stopping = True
        await self.runner.cleanup()
        log.info("manager stopped")


def _tls(config: ManagerConfig) -> tuple[ssl.SSLContext | None, str | None, str | None]:
    if config.tls_self_signed:
        cert = create_self_signed(config.host)
        cert_file, key_file = cert.write(tempfile.mkdtemp(prefix="unbroken-manager-tls-"))
        return server_context(cert_file, key_file), cert.fingerprint, str(cert_file)
    if config.tls_cert:
        return server_context(config.tls_cert, config.tls_key), None, config.tls_cert
    return None, None, None


async def start(config: ManagerConfig) -> RunningManager:
    context, fingerprint, cert_file = _tls(config)
    app = create_app(config)
    # after our own drain, what still runs (event streams, sockets being relayed) gets
    # this long, then is cancelled (a relayed session socket is closed 'proxy_gone')
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    app[MANAGER].links.watch(runner.server)  # a closed heartbeat connection: check at once
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context, reuse_address=True)
    await site.start()
    local = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    url = f"{'https' if context else 'http'}://{local}:{config.port}"
    log.info("manager listening", extra={"url": url, "store": type(app[MANAGER].store).__name__})
    if fingerprint:
        # nodes and clients pin it: --manager-fingerprint
        print(f"unbroken manager: TLS certificate SHA-256 fingerprint {fingerprint} "
              f"(certificate: {cert_file})", flush=True)
    print(f"unbroken manager: listening on {url}", flush=True)
    await app[MANAGER].start_scaling(url, fingerprint, cert_file)
    return RunningManager(runner, app, url, fingerprint, cert_file)


async def serve(config: ManagerConfig) -> None:
    running = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.drain_and_stop(config.drain_timeout)


def run(config: ManagerConfig) -> None:
    asyncio.run(serve(config))
