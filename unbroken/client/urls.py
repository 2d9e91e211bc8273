"""Where a planned try really connects: the URL source, a small pluggable interface.

The restore policy plans each try with a URL from the client's list; the URL source turns
that plan into the URL to connect to. The default takes the planned URL as it is; a source
that asks a stream manager for a route on every try replaces it without touching the
restore loop.
"""

from __future__ import annotations

from typing import Protocol

from unbroken.protocol.states import Kind

from .policy import NextTry

__all__ = ["ListedUrls", "UrlSource"]


class UrlSource(Protocol):
    """Answers, before every try, the URL to connect to for ``kind`` of ``stream``."""

    async def next_url(self, stream: str, kind: Kind, attempt: NextTry) -> str: ...


class ListedUrls:
    """The URL the policy planned, from the client's own list."""

    async def next_url(self, stream: str, kind: Kind, attempt: NextTry) -> str:
        return attempt.url
