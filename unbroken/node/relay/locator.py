"""Where a stream can be pulled from: the one replaceable piece of the relay."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

__all__ = ["ManagerUpstreams", "StaticUpstreams", "Upstream", "UpstreamLocator"]


@dataclass(frozen=True)
class Upstream:
    """A node a stream may be pulled from: its base URL (``http://host:port``) and the
    bearer token to present there (empty: none)."""

    url: str
    token: str = ""


class UpstreamLocator(ABC):
    """Answers "where is stream X": the upstreams to try for a stream, in order of
    preference. The relay asks again before every attempt (after a failure too), so an
    implementation may change its answer at any time (a manager that knows where the
    stream's publisher went).

    Implementations must return quickly or be bounded themselves: the relay waits for
    `locate` with a timeout (``LOCATE_TIMEOUT``) and counts a timeout as "nowhere"."""

    @abstractmethod
    async def locate(self, stream: str, unresponsive: str | None = None) -> Sequence[Upstream]:
        """The upstreams to try for `stream`, best first; empty when none is known now.
        `unresponsive`: the URL of an upstream that just stopped answering us."""

    def describe(self) -> dict:
        """What the node's API shows about this locator."""
        return {"kind": type(self).__name__}


class StaticUpstreams(UpstreamLocator):
    """A fixed list of upstreams (``--upstream URL[,URL...]``: origins, or edges of a relay
    tier), all tried for every stream; one token (``--upstream-token``) for all."""

    def __init__(self, urls: Sequence[str], token: str = "") -> None:
        if not urls:
            raise ValueError("a static upstream list needs at least one URL")
        self.upstreams = tuple(Upstream(url.rstrip("/"), token) for url in urls)

    async def locate(self, stream: str, unresponsive: str | None = None) -> Sequence[Upstream]:
        return self.upstreams

    def describe(self) -> dict:
        return {"kind": "static", "urls": [u.url for u in self.upstreams]}


class ManagerUpstreams(UpstreamLocator):
    """The stream manager says where a stream is (``--manager`` without ``--upstream``):
    `lookup(stream, unresponsive)` asks it (the node's manager link) for the base URLs of
    the nodes that carry the stream now, its origin first, and tells it which one stopped
    answering (it checks that node at once, as after a client's report); one token
    (``--upstream-token``) for all."""

    def __init__(self, lookup: Callable[[str, str | None], Awaitable[Sequence[str]]],
                 token: str = "",
                 manager: str = "") -> None:
        self.lookup = lookup
        self.token = token
        self.manager = manager

    async def locate(self, stream: str, unresponsive: str | None = None) -> Sequence[Upstream]:
        return tuple(Upstream(url.rstrip("/"), self.token)
                     for url in await self.lookup(stream, unresponsive))

    def describe(self) -> dict:
        return {"kind": "manager", "manager": self.manager}
