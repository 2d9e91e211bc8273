"""WHIP/WHEP as node and clients speak it: resource paths (``Location``), the server-sent
events link (``Link``), and unbroken's query extensions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .states import Kind, StreamEvent

__all__ = ["KEEPALIVE_MS", "MAX_KEEPALIVE_MS", "MAX_WAIT_LIVE_MS", "MIN_KEEPALIVE_MS",
           "REPLACES", "SSE_EVENTS", "SSE_REL", "WAIT_LIVE_MS", "Resource", "SseEvent",
           "events_link", "parse_events_link"]

# the server-sent events extension (draft-ietf-wish-whep)
SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"


class SseEvent(StrEnum):
    """The server-sent events of a WHIP/WHEP session: the played stream's events,
    `reconnect` (go elsewhere or renegotiate: its ``code`` says why), and the stream
    states and drain notice with the session channel's fields."""

    ACTIVE = StreamEvent.ACTIVE.value
    INACTIVE = StreamEvent.INACTIVE.value
    RECONNECT = "reconnect"
    VIEWERCOUNT = StreamEvent.VIEWERCOUNT.value
    STREAM_STATE = "stream_state"
    NODE_DRAINING = "node_draining"


# the events a WHIP/WHEP client may subscribe to
SSE_EVENTS = tuple(SseEvent)

# query extensions
REPLACES = "replaces"  # POST /whip: the id of our previous session on this stream
WAIT_LIVE_MS = "wait_live_ms"  # POST /whep: wait this long for a publisher
MAX_WAIT_LIVE_MS = 5000
KEEPALIVE_MS = "keepalive_ms"  # GET .../events: keep-alive comment interval
MIN_KEEPALIVE_MS = 100
MAX_KEEPALIVE_MS = 10_000

_RESOURCE = re.compile(r"/(whip|whep)/([^/]+)/([^/?#]+)$")
_LINK = re.compile(r"<([^>]*)>([^<]*)")


@dataclass(frozen=True)
class Resource:
    """A media session as a WHIP/WHEP resource: ``/{whip|whep}/{stream}/{session}``
    (relative, so it works behind a proxy)."""

    kind: Kind
    stream: str
    session: str

    @property
    def location(self) -> str:
        return f"/{self.kind.path}/{self.stream}/{self.session}"

    @property
    def events(self) -> str:
        return f"{self.location}/events"

    @classmethod
    def parse(cls, location: str) -> "Resource | None":
        """The resource a ``Location`` (path or absolute URL) names, or None."""
        found = _RESOURCE.search(location.split("?")[0])
        if found is None:
            return None
        return cls(Kind.of_path(found.group(1)), found.group(2), found.group(3))


def events_link(resource: Resource) -> str:
    """The ``Link`` header that offers the session's server-sent events."""
    return f'<{resource.events}>; rel="{SSE_REL}"; events="{",".join(SSE_EVENTS)}"'


def parse_events_link(headers: Iterable[str]) -> str | None:
    """The server-sent events URL in the ``Link`` headers (as given: maybe relative)."""
    for header in headers:
        for url, params in _LINK.findall(header):
            if f'rel="{SSE_REL}"' in params.replace(" ", ""):
                return url
    return None
