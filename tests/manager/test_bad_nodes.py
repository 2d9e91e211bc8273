"""Bad input at the manager: nodes that hang or answer garbage (502/504 with a reason,
the manager unharmed), slow clients, and the per-client limits (429 + Retry-After)."""

from __future__ import annotations

import asyncio
import json

import pytest
from cluster_helpers import NODE_TOKEN, pinned_http

pytestmark = pytest.mark.timeout(60)


async def _fake_node(answer: bytes | None) -> tuple[asyncio.AbstractServer, int]:
    """A TCP server posing as a node: it sends `answer` to every request, or (None) never
    answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if answer is None:
                await asyncio.sleep(30)
            else:
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _register(http, base: str, node_id: str, port: int) -> None:
    record = {"node_id": node_id, "role": "origin", "url": f"http://127.0.0.1:{port}", "state": "serving",
              "instance": "x", "seq": 1}
    async with http.put(f"{base}/api/v1/nodes/{node_id}", data=json.dumps(record),
                        headers={"Authorization": f"Bearer {NODE_TOKEN}"}) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("answer, status, code", [
    (None, 504, "node_timeout"),
    (b"this is not HTTP\r\n\r\n", 502, "bad_node_answer"),
])
async def test_a_bad_node_costs_one_request(start_manager, tmp_path, answer, status, code):
    settings = tmp_path / "manager.toml"
    settings.write_text("[manager]\nnode_answer_timeout = 1.0\n")
    manager = start_manager("--config", str(settings))
    server, port = await _fake_node(answer)
    try:
        async with pinned_http(manager.fingerprint) as http:
            await _register(http, manager.url, "bad", port)
            async with http.post(f"{manager.url}/whip/cam", data="v=0\r\n",
                                 headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status == status
                assert (await resp.json())["error"] == code
            # suspect at once, then gone (its check fails): out of routing
            async with http.get(f"{manager.url}/api/v1/route/publish/cam") as resp:
                assert resp.status == 404
            async with http.get(f"{manager.url}/healthz") as resp:
                assert resp.status == 200  # unharmed
            async with http.get(f"{manager.url}/metrics") as resp:
                assert f'unbroken_manager_proxy_errors_total{{reason="{code}"}} 1.0' in await resp.text()
    finally:
        server.close()


async def test_per_client_limits(start_manager, tmp_path):
    settings = tmp_path / "manager.toml"
    settings.write_text("[manager]\nclient_requests_per_s = 1.0\nclient_request_burst = 3\n")
    manager = start_manager("--config", str(settings))
    async with pinned_http(manager.fingerprint) as http:
        statuses = []
        for _ in range(5):
            async with http.get(f"{manager.url}/healthz") as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert (await resp.json())["error"] == "rate_limited"
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]


async def test_slow_client_body_times_out(start_manager):
    manager = start_manager()
    host, port = "127.0.0.1", manager.port
    from unbroken.manager.tls import client_context

    reader, writer = await asyncio.open_connection(host, port, ssl=client_context(fingerprint=manager.fingerprint))
    writer.write(b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                 b"Content-Length: 100\r\n\r\nv=0")  # 97 bytes never come
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 15)
    assert b" 408 " in status
    writer.close()
