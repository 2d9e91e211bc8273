"""A URL source that asks a stream manager for a route before every try (seed 000: "ask
the stream manager for an edge each time").

Before each try ``ManagerRoutes`` calls ``GET /api/v1/route/{publish|play}/{stream}`` on a
manager and connects to the node the answer names, directly. The Python SDK reaches
nodes' plain-HTTP addresses where it runs (the same network as the cluster, or a VPN), so
the direct way saves the proxy's hop on every request; media never crosses the manager
either way. A secure browser page cannot do that (mixed content): the browser SDK gives
the manager's URL as its base and goes through the manager's TLS proxy instead.

Several managers (replicas on one shared store) fail over: the one that answered last is
asked first, and a manager that does not answer (refused, reset, timed out, 5xx, TLS
failure) is skipped for the next one within the same try. A manager's certificate is
trusted by the system's CAs, a CA file, or a pinned SHA-256 fingerprint
(``unbroken.httpkit.tls``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import aiohttp

from unbroken.httpkit.tls import client_context
from unbroken.protocol.faults import ROUTE_UNRESPONSIVE
from unbroken.protocol.states import Kind

from .policy import NextTry

__all__ = ["ManagerRoutes", "NoRoute", "Route", "split_managers"]

ROUTE_TIMEOUT_S = 2.0  # one route request, whole
CONNECT_TIMEOUT_S = 0.5  # TCP + TLS connect to one manager
UNREACHABLE = (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError)


def split_managers(managers: str | Sequence[str]) -> list[str]:
    """Manager base URLs from a comma-separated string or a list (trailing '/' dropped)."""
    items = managers.split(",") if isinstance(managers, str) else list(managers)
    return [m.strip().rstrip("/") for m in items if m.strip()]


@dataclass(frozen=True)
class Route:
    """One manager's answer: which node takes the session, and its base URL."""

    manager: str
    node_id: str
    role: str
    url: str


class NoRoute(ConnectionError):
    """No manager gave a route: ``status`` 404 (no node), 409 (the stream is not live;
    ``retry_after`` seconds), or 0 when no manager answered at all."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ManagerRoutes:
    """A ``UrlSource``: asks the managers (in failover order) for a route on every try
    and answers the routed node's URL; ``node_of(url)`` names the node behind a URL it
    answered (restore reports carry it). ``fingerprint`` pins a self-signed manager
    certificate, ``ca_file`` trusts a CA (or the certificate itself); neither: the
    system's CAs. ``token``: Bearer token of the manager's API. ``group``: route within
    that node group. Close it with ``await close()`` (a client closes the sources it made
    itself)."""

    def __init__(self, managers: str | Sequence[str], *, token: str | None = None,
                 fingerprint: str | None = None, ca_file: str | None = None,
                 group: str | None = None, timeout_s: float = ROUTE_TIMEOUT_S) -> None:
        self.managers = split_managers(managers)
        if not self.managers:
            raise ValueError("at least one manager URL is needed")
        self.token = token
        self.group = group
        self.timeout = aiohttp.ClientTimeout(total=timeout_s,
                                             sock_connect=min(timeout_s, CONNECT_TIMEOUT_S))
        self._ssl = (client_context(fingerprint=fingerprint, ca_file=ca_file)
                     if fingerprint or ca_file else None)
        self._http: aiohttp.ClientSession | None = None
        self._preferred = 0  # index of the manager that answered last
        self._nodes: dict[str, str] = {}  # node URL -> node id, from answers
        self._unresponsive: str | None = None  # named in the next route request
        self.last_route: Route | None = None

    # UrlSource ----------------------------------------------------------------------
    async def next_url(self, stream: str, kind: Kind, attempt: NextTry) -> str:
        return (await self.route(stream, kind)).url

    def node_of(self, url: str) -> str | None:
        """The node id behind a URL this source answered (None if it never did)."""
        return self._nodes.get(url)

    def node_unresponsive(self, url: str) -> None:
        """The node behind `url` stopped answering this client (NODE_UNRESPONSIVE): the
        next route request names it, so the manager checks it at once and routes
        elsewhere meanwhile (a frozen node's port still takes connections)."""
        self._unresponsive = self._nodes.get(url)

    # the route ----------------------------------------------------------------------
    async def route(self, stream: str, kind: Kind) -> Route:
        """A route from the first manager that answers; NoRoute otherwise."""
        refusal: NoRoute | None = None
        errors: list[str] = []
        n = len(self.managers)
        for step in range(n):
            index = (self._preferred + step) % n
            manager = self.managers[index]
            try:
                route = await self._ask(manager, stream, kind)
            except NoRoute as e:  # this manager answered: no node, or not live
                refusal = refusal or e
                continue  # a manager on its own store may know other nodes
            except UNREACHABLE as e:
                errors.append(f"{manager}: {e!r}"[:200])
                continue
            self._preferred = index
            self._unresponsive = None
            self._nodes[route.url] = route.node_id
            self.last_route = route
            return route
        if refusal is not None:
            raise refusal
        raise NoRoute(f"no manager answered: {'; '.join(errors)}")

    async def _ask(self, manager: str, stream: str, kind: Kind) -> Route:
        url = f"{manager}/api/v1/route/{kind.value}/{quote(stream, safe='')}"
        query = {"group": self.group} if self.group else {}
        if self._unresponsive:
            query[ROUTE_UNRESPONSIVE] = self._unresponsive
        if query:
            url += "?" + urlencode(query)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self._session().get(url, headers=headers) as resp:
            if resp.status >= 500:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                  message=f"manager answered {resp.status}")
            if resp.status != 200:
                retry = resp.headers.get("Retry-After")
                raise NoRoute(f"{manager}: {resp.status} {(await resp.text())[:200]}", resp.status,
                              float(retry) if retry and retry.replace(".", "", 1).isdigit() else None)
            body = await resp.json()
        return Route(manager, str(body["node_id"]), str(body.get("role", "")),
                     str(body["url"]).rstrip("/"))

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await asyncio.shield(http.close())
