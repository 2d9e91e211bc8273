"""When a new media session's media starts flowing (PUBLISHING / PLAYING)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from unbroken.media.peer import PublisherPeer

from .media_session import MediaSession

MEDIA_START_POLL = 0.02  # how often a new session is checked for media flowing


async def announce_media_start(session: MediaSession,
                               started: Callable[[MediaSession], None]) -> None:
    """Call `started(session)` once the publisher's media arrives or media goes out to the
    player. The data plane has no "first packet" signal yet, so this looks, briefly."""
    peer = session.peer
    polls = 0
    while not peer.closed.is_set():
        if isinstance(peer, PublisherPeer):
            flowing = peer.last_packet_at() is not None
        else:
            flowing = any(t.packets for t in peer.downtracks.values())
        if flowing:
            started(session)
            return
        polls += 1  # a viewer of a stream that stays inactive: look less often
        await asyncio.sleep(MEDIA_START_POLL if polls < 100 else 5 * MEDIA_START_POLL)
