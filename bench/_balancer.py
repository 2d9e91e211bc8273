"""A TCP balancer in front of manager replicas, for the chaos benchmark: what a
Kubernetes Service or any L4 load balancer is in a real cluster. Nodes register and
heartbeat at one manager URL; behind it, each new connection goes to the next replica
that accepts it (round robin; a refused or unanswered connect moves on to the next).
TLS passes through untouched. When either side of a connection closes, both do: a node's
SIGKILL still closes its heartbeat connection at the manager, and a manager's SIGKILL
closes the node's connection, whose next heartbeat reaches another replica.

    python bench/_balancer.py HOST:PORT UPSTREAM_HOST:PORT [UPSTREAM_HOST:PORT ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys

CONNECT_TIMEOUT_S = 0.5
CHUNK = 1 << 16


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               other: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (writer, other):
            w.close()


async def main(listen: str, upstreams: list[tuple[str, int]]) -> None:
    turn = itertools.count()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = next(turn)
        for step in range(len(upstreams)):
            host, port = upstreams[(first + step) % len(upstreams)]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                              CONNECT_TIMEOUT_S)
                break
            except (OSError, TimeoutError):
                continue
        else:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer, writer), pipe(up_reader, writer, up_writer))
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                await w.wait_closed()

    host, _, port = listen.rpartition(":")
    server = await asyncio.start_server(handle, host, int(port), reuse_address=True)
    print(f"balancer listening on {listen}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    targets = [(h, int(p)) for h, _, p in (a.rpartition(":") for a in sys.argv[2:])]
    asyncio.run(main(sys.argv[1], targets))
