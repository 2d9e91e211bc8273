"""The local provider: a second provider (another manager, a new leader) adopts the node
processes the first one started, and can stop them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal

from unbroken.manager.model import NodeRole
from unbroken.manager.providers import LocalProvider, LocalSettings


def settings(token: str) -> LocalSettings:
    base = 22000 + (os.getpid() % 300) * 20
    # the nodes register nowhere (nothing listens on port 9): they just run
    return LocalSettings(manager_url="http://127.0.0.1:9", node_token=token, ports=range(base, base + 20))


async def test_another_provider_adopts_and_stops_a_node_it_did_not_start():
    token = f"t-{secrets.token_hex(6)}"
    first = LocalProvider(settings(token))
    node = await first.start_node("default", NodeRole.EDGE)
    pid = first.pid(node.node_id)
    try:
        stranger = LocalProvider(settings("another-token"))
        assert node.node_id not in {n.node_id for n in await stranger.list_nodes()}

        second = LocalProvider(settings(token))  # e.g. the next scaling leader
        listed = {n.node_id: n for n in await second.list_nodes()}
        assert node.node_id in listed
        adopted = listed[node.node_id]
        assert (adopted.group, adopted.role, adopted.url) == ("default", NodeRole.EDGE, node.url)
        assert second.pid(node.node_id) == pid

        os.kill(pid, signal.SIGSTOP)  # faulty: stuck
        await second.stop_node(node.node_id, 0)
        for _ in range(100):
            if first._children[node.node_id].process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert first._children[node.node_id].process.poll() is not None  # killed
        assert node.node_id not in {n.node_id for n in await second.list_nodes()}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
