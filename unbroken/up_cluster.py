"""`unbroken up --cluster`: on one machine, a stream manager with a self-signed
certificate (Redis if `redis-server` is on the PATH, else the in-process store) whose
local provider starts and keeps two origins and two edges (replacing faulty ones), and
a test publisher through the manager: one command, a stream to watch at
https://localhost:PORT/.

Publishers are routed to an origin, viewers to an edge, which pulls the stream from its
origin (the manager tells the edge where it is)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import aiohttp

from unbroken.manager.config import ManagerConfig
from unbroken.manager.providers import LocalProvider
from unbroken.manager.server import start
from unbroken.manager.service import MANAGER
from unbroken.httpkit.tls import client_context

__all__ = ["up_cluster"]

READY_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(directory: str) -> tuple[subprocess.Popen | None, str]:
    if shutil.which("redis-server") is None:
        return None, ""
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", directory],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"redis://127.0.0.1:{port}/0"


async def _wait_serving(url: str, fingerprint: str, count: int) -> None:
    connector = aiohttp.TCPConnector(ssl=client_context(fingerprint=fingerprint))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/api/v1/nodes") as resp:
                        nodes = (await resp.json())["nodes"] if resp.status == 200 else []
                        if sum(1 for n in nodes if n["state"] == "serving") >= count:
                            return
                await asyncio.sleep(0.2)


async def up_cluster(port: int = 8443, stream: str = "demo", codec: str = "vp8",
                     origins: int = 2, edges: int = 2) -> None:
    work = tempfile.mkdtemp(prefix="unbroken-up-")
    redis, redis_url = _start_redis(work)
    node_token = secrets.token_urlsafe(16)
    # the local provider keeps each group at its size (a fixed size: min = max)
    groups = {"default": {"origin": {"min": origins, "max": origins},
                          "edge": {"min": edges, "max": edges}}}
    config = ManagerConfig(host="0.0.0.0", port=port, node_token=node_token, redis=redis_url,
                           tls_self_signed=True, log_level="warning", provider="local",
                           local_node_args="--log-level warning", groups=groups)
    config.validate()
    running = await start(config)
    nodes: list[subprocess.Popen] = []
    try:
        await _wait_serving(running.url, running.fingerprint or "", origins + edges)
        # the SDK publisher, through the manager: it trusts the certificate made at start
        # (SSL_CERT_FILE for its process alone), and restores by itself
        env = {**os.environ, "SSL_CERT_FILE": running.cert_file or ""}
        nodes.append(subprocess.Popen([sys.executable, "-m", "unbroken", "publish", running.url,
                                       stream, "--codec", codec], env=env))
        print(f"unbroken up --cluster: dashboard https://localhost:{port}/  "
              f"(store: {'Redis ' + redis_url if redis_url else 'in-process'}; "
              f"certificate SHA-256 {running.fingerprint}); watch "
              f"https://localhost:{port}/web/index.html?stream={stream}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for proc in reversed(nodes):
            proc.send_signal(signal.SIGTERM)
        for proc in nodes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        autoscaler = running.app[MANAGER].autoscaler
        provider = autoscaler.provider if autoscaler is not None else None
        await running.drain_and_stop(1.0)
        if isinstance(provider, LocalProvider):
            await provider.terminate_all(drain_s=2.0)
        if redis is not None:
            redis.kill()
            redis.wait(5)
