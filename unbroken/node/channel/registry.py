"""Every open session-channel socket of a node."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

from unbroken.protocol import session as proto

from ..admission import Admission
from .limits import Limits

if TYPE_CHECKING:
    from .socket_session import SocketSession

MAX_SOCKETS = 5000


class ChannelRegistry:
    """Owns the node's open socket sessions: tells them when the node drains, closes them
    when it stops, and lists them."""

    def __init__(self, admission: Admission, limits: Limits | None = None) -> None:
        self.admission = admission
        self.state = admission.state
        self.limits = limits or Limits()
        self.sockets: dict[str, SocketSession] = {}
        self.state.drain_listeners.append(self._on_drain)

    def parked(self, session_id: str, token: str) -> "SocketSession | None":
        """The session `session_id`, if its socket broke and it waits for a resume with
        `token`."""
        session = self.sockets.get(session_id)
        if session is None or session.parked is None or session.parked.done():
            return None
        return session if secrets.compare_digest(session.resume_token, token) else None

    def _on_drain(self, info: dict) -> None:
        for session in list(self.sockets.values()):
            if session.welcomed:  # the others learn it in their welcome
                session.send({"type": "node_draining", **info})

    async def shutdown(self) -> None:
        """The node stops: every socket gets session_closing and a close (1001)."""
        sessions = list(self.sockets.values())
        for session in sessions:
            session.close(proto.NODE_SHUTDOWN, "node is shutting down")
        await asyncio.gather(*(s.finished.wait() for s in sessions), return_exceptions=True)

    def snapshot(self) -> list[dict]:
        return [s.snapshot() for s in self.sockets.values()]
