"""`unbroken up`: a node with a live test-pattern stream, ready to watch."""

from __future__ import annotations

import asyncio
import logging
import socket

from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whip import WhipPublisher
from unbroken.node.config import NodeConfig
from unbroken.node.server import serve

log = logging.getLogger("unbroken.up")

REPUBLISH_DELAY = 0.5


async def publish_test_pattern(url: str, stream: str, codec: str, token: str | None) -> None:
    """Keep a test-pattern publisher on `stream`, publishing again whenever it drops."""
    while True:
        publisher = None
        try:
            publisher = await WhipPublisher(
                url, stream, tracks=[TestPatternVideoTrack(), ToneAudioTrack()],
                video_codec=codec, token=token).start()
            log.info("test pattern publishing", extra={"stream": stream, "codec": codec})
            while publisher.connection_state not in ("failed", "closed"):
                await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("test pattern publisher failed", extra={"error": str(exc)})
        finally:
            if publisher is not None:
                await publisher.stop()
        await asyncio.sleep(REPUBLISH_DELAY)


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
    publisher = asyncio.create_task(publish_test_pattern(url, stream, codec,
                                                         config.token or None))
    print(f"unbroken up: watch {url}/?stream={stream}  "
          f"(WHEP: {url}/whep/{stream}, API: {url}/api/v1/streams)", flush=True)
    try:
        await node  # ends on SIGTERM / Ctrl-C
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
