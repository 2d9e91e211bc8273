"""The node's own WHEP client towards an upstream: POST the pull's offer, follow the
session's server-sent events (keep-alives tell a live upstream from a dead one), DELETE
the session. Only public protocol: what any WHEP client may do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp

from unbroken.protocol.sdp import SDP_CONTENT_TYPE
from unbroken.protocol.whip_whep import KEEPALIVE_MS, WAIT_LIVE_MS, parse_events_link

from .locator import Upstream

__all__ = ["UpstreamClient", "UpstreamGone", "UpstreamRefused", "UpstreamSession"]

CONNECT_TIMEOUT = 1.0  # s to open a TCP connection to an upstream
ANSWER_MARGIN = 3.0  # s an upstream may take to answer beyond the wait it was asked for
DELETE_TIMEOUT = 1.0
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class UpstreamSession:
    """A WHEP session the upstream granted: its answer and its absolute URLs."""

    upstream: Upstream
    answer: str
    location: str
    events: str | None


class UpstreamRefused(Exception):
    """The upstream answered the offer with an error (401, 404, 409 not live, 503...)
    or could not be reached (`status` 0)."""

    def __init__(self, upstream: Upstream, status: int, reason: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{upstream.url}: {status or 'unreachable'} {reason}")
        self.upstream = upstream
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class UpstreamGone(Exception):
    """The upstream session's event stream broke or fell silent."""


class UpstreamSilent(UpstreamGone):
    """The upstream's event stream sent nothing, not even a keep-alive, for too long: the
    node (or the path to it) stopped answering."""


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class UpstreamClient:
    """Owns the relay's HTTP connection pool; every request is bounded in time."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @staticmethod
    def _headers(upstream: Upstream, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if upstream.token:
            headers["Authorization"] = f"Bearer {upstream.token}"
        return headers

    async def offer(self, upstream: Upstream, stream: str, sdp: str,
                    wait_live_ms: int) -> UpstreamSession:
        """POST the offer to ``{upstream}/whep/{stream}``, asking it to hold the request up
        to `wait_live_ms` while the stream is not live there."""
        url = f"{upstream.url}/whep/{stream}?{WAIT_LIVE_MS}={wait_live_ms}"
        timeout = aiohttp.ClientTimeout(total=wait_live_ms / 1000 + ANSWER_MARGIN,
                                        sock_connect=CONNECT_TIMEOUT)
        try:
            async with self.http.post(
                    url, data=sdp, timeout=timeout,
                    headers=self._headers(upstream, **{"Content-Type": SDP_CONTENT_TYPE})
            ) as response:
                if response.status != 201:
                    body = (await response.content.read(2048)).decode(errors="replace")
                    raise UpstreamRefused(upstream, response.status, body.strip()[:200],
                                          _retry_after(response.headers.get("Retry-After")))
                answer = (await response.content.read(MAX_ANSWER_BYTES)).decode()
                location = response.headers.get("Location")
                if not location:
                    raise UpstreamRefused(upstream, response.status, "answer without Location")
                events = parse_events_link(response.headers.getall("Link", []))
                base = str(response.url)
                return UpstreamSession(upstream, answer, urljoin(base, location),
                                       urljoin(base, events) if events else None)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise UpstreamRefused(upstream, 0, f"{type(exc).__name__}: {exc}") from None

    async def end(self, session: UpstreamSession) -> None:
        """DELETE the session (best effort: a dead upstream has nothing to delete)."""
        try:
            async with self.http.delete(
                    session.location, headers=self._headers(session.upstream),
                    timeout=aiohttp.ClientTimeout(total=DELETE_TIMEOUT)):
                pass
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass

    async def events(self, session: UpstreamSession, keepalive_ms: int,
                     silence: float) -> AsyncIterator[str]:
        """The session's event names as they come; raises UpstreamGone when the stream
        breaks, ends, or sends nothing (not even a keep-alive) for `silence` seconds."""
        if session.events is None:
            raise UpstreamGone("the upstream offers no server-sent events")
        url = f"{session.events}?{KEEPALIVE_MS}={keepalive_ms}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        try:
            async with self.http.get(url, headers=self._headers(session.upstream),
                                     timeout=timeout) as response:
                if response.status != 200:
                    raise UpstreamGone(f"events: HTTP {response.status}")
                while True:
                    # not asyncio.wait_for: on Python 3.11 it returns a line that is already
                    # read and drops a cancel that came meanwhile (the pull then never stops)
                    async with asyncio.timeout(silence):
                        line = await response.content.readline()
                    if not line:
                        raise UpstreamGone("the upstream ended the session")
                    text = line.decode(errors="replace").strip()
                    if text.startswith("event:"):
                        yield text.split(":", 1)[1].strip()
        except asyncio.TimeoutError:
            raise UpstreamSilent(f"no keep-alive for {silence:.2f} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamGone(f"events: {type(exc).__name__}: {exc}") from None
