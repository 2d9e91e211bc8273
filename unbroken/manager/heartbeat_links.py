"""A node's heartbeat connection as a liveness signal: nodes heartbeat over one kept-alive
HTTP connection, and a SIGKILLed (or crashed) node's kernel closes it at once. When the
connection that carried a node's last heartbeat closes, the node is made suspect (out of
routing) and checked (`GET /healthz`): a dead node fails the check in milliseconds and is
gone from routing, instead of waiting for its lease (up to 3 s). A node that merely
opened a new connection passes the check and serves on. A silent loss (no FIN, no RST)
still ends with the lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

from aiohttp import web

__all__ = ["HeartbeatLinks"]

log = logging.getLogger("unbroken.manager.registry")


class HeartbeatLinks:
    """Which open connection carried each node's latest heartbeat; `watch(server)` hears
    every closed connection and calls `on_closed(node_id)` for a node's current one."""

    def __init__(self, on_closed: Callable[[str], None]) -> None:
        self._on_closed = on_closed
        self._node_by_connection: dict[Hashable, str] = {}
        self._connection_by_node: dict[str, Hashable] = {}

    def note(self, connection: Hashable, node_id: str) -> None:
        """`node_id`'s heartbeat just came over `connection`."""
        previous = self._connection_by_node.get(node_id)
        if previous is connection:
            return
        if previous is not None:
            self._node_by_connection.pop(previous, None)
        other = self._node_by_connection.get(connection)
        if other is not None:  # one connection, another node id: the newer one counts
            self._connection_by_node.pop(other, None)
        self._node_by_connection[connection] = node_id
        self._connection_by_node[node_id] = connection

    def forget(self, node_id: str) -> None:
        """The node left: its connection closing later means nothing."""
        connection = self._connection_by_node.pop(node_id, None)
        if connection is not None:
            self._node_by_connection.pop(connection, None)

    def closed(self, connection: Hashable) -> None:
        node_id = self._node_by_connection.pop(connection, None)
        if node_id is None:
            return
        self._connection_by_node.pop(node_id, None)
        log.info("node %s: heartbeat connection closed", node_id)
        self._on_closed(node_id)

    def watch(self, server: web.Server) -> None:
        """Hear every connection `server` loses (its `connection_lost(handler, exc)`)."""
        lost = server.connection_lost

        def connection_lost(handler, exc: BaseException | None = None) -> None:
            lost(handler, exc)
            self.closed(handler)

        server.connection_lost = connection_lost  # type: ignore[method-assign]
