"""When a new media session's media starts flowing (PUBLISHING / PLAYING)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .media_session import MediaSession


async def announce_media_start(session: MediaSession,
                               started: Callable[[MediaSession], None]) -> None:
    """Call `started(session)` once the publisher's first packet arrives or the first
    packet goes out to the player (the data plane's signal); not if the session closes
    first."""
    peer = session.peer
    flowing = asyncio.ensure_future(peer.media_flowing.wait())
    closed = asyncio.ensure_future(peer.closed.wait())
    try:
        await asyncio.wait({flowing, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        flowing.cancel()
        closed.cancel()
    if peer.media_flowing.is_set() and not peer.closed.is_set():
        started(session)
