"""`unbroken up`: a node with a live test-pattern stream, ready to watch."""

from __future__ import annotations

import asyncio
import socket

from unbroken.client.publisher import Publisher
from unbroken.node.config import NodeConfig
from unbroken.node.server import serve


async def up(config: NodeConfig, stream: str, codec: str) -> None:
    node = asyncio.create_task(serve(config))
    local = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    url = f"http://{local}:{config.port}"
    for _ in range(100):  # the node listens within a few ms; bounded anyway
        try:
            with socket.create_connection((local, config.port), timeout=0.1):
                break
        except OSError:
            await asyncio.sleep(0.05)
    # the SDK publisher: it restores by itself, e.g. after the node was restarted
    publisher = Publisher(url, stream, codec=codec, token=config.token or None)
    await publisher.start()
    print(f"unbroken up: watch {url}/?stream={stream}  "
          f"(WHEP: {url}/whep/{stream}, API: {url}/api/v1/streams)", flush=True)
    try:
        await node  # ends on SIGTERM / Ctrl-C
    finally:
        await publisher.stop()
