"""Forwarding to nodes: HTTP requests (answers streamed through unbuffered: SSE, LL-HLS
blocking reloads) and the session channel's WebSocket (both directions).

Only registered, live nodes are ever targets (the caller resolves them through the
registry). Clients speak HTTPS/WSS to the manager; nodes are reached over plain HTTP at
the URL they advertised. A node that cannot be reached, answers garbage or does not
answer in time makes the request fail with 502/504 and a reason, and is marked suspect
at once (out of routing while the registry checks it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from unbroken.httpkit.errors import HttpError
from unbroken.protocol.channel_codes import ChannelClose, close_code

from .metrics import ManagerMetrics
from .model import NodeRecord
from .paths import rewrite_location
from .registry import NodeView, Registry

__all__ = ["NodeFailure", "NodeProxy", "ProxySettings"]

log = logging.getLogger("unbroken.manager.proxy")

# hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp sets itself
_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Sec-WebSocket-Key",
    "Sec-WebSocket-Version", "Sec-WebSocket-Extensions", "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol"))
_REWRITTEN = ("Location", "Link")
VIA = "unbroken-manager"  # our pseudonym in the Via header of proxied answers
MAX_WS_MESSAGE = 4 * 1024 * 1024
WS_CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class ProxySettings:
    connect_timeout: float = 1.0
    answer_timeout: float = 10.0


class NodeFailure(HttpError):
    """The node failed a proxied request: 502 (unreachable, garbage) or 504 (no answer);
    `retryable` = the node never got the request (another node may take it)."""

    def __init__(self, status: int, code: str, reason: str, retryable: bool = False) -> None:
        super().__init__(status, code, reason)
        self.code = code
        self.retryable = retryable


class NodeProxy:
    """Owns the HTTP client towards nodes and counts what passes; `active` is the number
    of answers and sockets being relayed right now (a draining manager waits for 0)."""

    def __init__(self, registry: Registry, metrics: ManagerMetrics, settings: ProxySettings) -> None:
        self.registry = registry
        self.metrics = metrics
        self.settings = settings
        self.active = 0
        self.stopping = False  # the manager shuts down (after its drain)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout,
                                          connect=self.settings.connect_timeout))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "NodeProxy.start() first"
        return self._http

    async def check(self, record: NodeRecord) -> bool:
        """The registry's health check of a suspect node: GET /healthz answers 200."""
        async with self.http.get(f"{record.url.rstrip('/')}/healthz",
                                 timeout=aiohttp.ClientTimeout(total=self.settings.answer_timeout)) as resp:
            return resp.status == 200

    # -- HTTP --------------------------------------------------------------------------

    async def forward(self, request: web.Request, view: NodeView, path_qs: str, kind: str,
                      body: bytes | None = None) -> web.StreamResponse:
        """Send the request to the node at `path_qs` and relay its answer; Location and
        Link paths are rewritten to name the node. NodeFailure when the node fails."""
        upstream = await self._open(request, view, path_qs, kind, body)
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() in _HOP:
                    continue
                if key in _REWRITTEN:
                    value = rewrite_location(_relative(value, view.record.url), view.node_id)
                response.headers.add(key, value)
            # a proxy says so (RFC 9110 7.6.3): clients then know the node may outlive us
            response.headers.add("Via", f"{upstream.version.major}.{upstream.version.minor} {VIA}")
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            self.metrics.proxied.labels(kind, str(upstream.status)).inc()
            self.active += 1
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                pass  # the client went away: the upstream closes below
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as e:
                # headers were sent: the client sees the stream end
                self.metrics.proxy_errors.labels("broken_answer").inc()
                log.info("answer from %s broke off: %r", view.node_id, e)
            finally:
                self.active -= 1
            return response
        finally:
            upstream.release()

    async def _open(self, request: web.Request, view: NodeView, path_qs: str, kind: str,
                    body: bytes | None) -> aiohttp.ClientResponse:
        url = view.record.url.rstrip("/") + path_qs
        try:
            async with asyncio.timeout(self.settings.answer_timeout):
                return await self.http.request(request.method, url, data=body, allow_redirects=False,
                                               headers=forward_headers(request))
        except TimeoutError:
            raise self._failed(view, 504, "node_timeout",
                               f"node did not answer within {self.settings.answer_timeout:g} s") from None
        except aiohttp.ClientConnectorError as e:
            raise self._failed(view, 502, "node_unreachable", f"node unreachable: {e.strerror or e}",
                               retryable=True) from None
        except (aiohttp.ClientResponseError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                aiohttp.ClientOSError) as e:
            raise self._failed(view, 502, "bad_node_answer", f"node answered badly: {type(e).__name__}") from None

    def _failed(self, view: NodeView, status: int, code: str, reason: str,
                retryable: bool = False) -> NodeFailure:
        self.metrics.proxy_errors.labels(code).inc()
        self.registry.mark_suspect(view.node_id, reason)
        return NodeFailure(status, code, reason, retryable)

    # -- WebSocket -----------------------------------------------------------------------

    async def websocket(self, request: web.Request, view: NodeView, path_qs: str) -> web.StreamResponse:
        """Relay the session channel: the node's socket is opened first (its refusal,
        e.g. 503 while draining, is the client's answer), then the client's."""
        url = view.record.url.rstrip("/").replace("http", "ws", 1) + path_qs
        try:
            async with asyncio.timeout(self.settings.answer_timeout):
                upstream = await self.http.ws_connect(
                    url, headers=forward_headers(request), autoping=True, heartbeat=None,
                    max_msg_size=MAX_WS_MESSAGE, timeout=aiohttp.ClientWSTimeout(ws_close=WS_CLOSE_TIMEOUT))
        except aiohttp.WSServerHandshakeError as e:
            self.metrics.proxied.labels("ws", str(e.status)).inc()
            raise HttpError(e.status, "node_refused", f"node refused the session channel: {e.message}",
                            {"Retry-After": "1"} if e.status in (429, 503) else None) from None
        except TimeoutError:
            raise self._failed(view, 504, "node_timeout", "node did not open the session channel") from None
        except aiohttp.ClientConnectorError as e:
            raise self._failed(view, 502, "node_unreachable", f"node unreachable: {e.strerror or e}",
                               retryable=True) from None
        except (aiohttp.ClientError, aiohttp.ClientOSError) as e:
            raise self._failed(view, 502, "bad_node_answer", f"node answered badly: {type(e).__name__}") from None
        self.metrics.proxied.labels("ws", "101").inc()
        client = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=MAX_WS_MESSAGE,
                                       compress=False, timeout=WS_CLOSE_TIMEOUT)
        self.active += 1
        try:
            await client.prepare(request)
            await _relay(client, upstream, lambda: self.stopping)
        finally:
            self.active -= 1
            await upstream.close()
        return client


async def _pump(source, sink) -> None:
    async for message in source:
        if message.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse,
                 stopping: Callable[[], bool]) -> None:
    """Both directions until either side closes; the other side is closed with its code
    (the node's side with ``proxy_gone`` when it is the manager that `stopping()`)."""
    down = asyncio.create_task(_pump(upstream, client))
    up = asyncio.create_task(_pump(client, upstream))
    try:
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        if stopping() and not upstream.closed:
            # we stop, not the client: the node keeps the session for the client's resume
            await upstream.close(code=close_code(ChannelClose.PROXY_GONE))
    except asyncio.CancelledError:
        await asyncio.shield(upstream.close(code=close_code(ChannelClose.PROXY_GONE)))
        raise
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
    if upstream.closed and not client.closed:
        code = upstream.close_code or 1011
        await client.close(code=code if code >= 1000 else 1011, message=b"node closed")
    elif not upstream.closed:
        await upstream.close(code=client.close_code or 1000)
    if not client.closed:
        await client.close()


def forward_headers(request: web.Request) -> dict[str, str]:
    """The client's headers minus hop-by-hop ones, plus X-Forwarded-*."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    prior = request.headers.get("X-Forwarded-For")
    client = request.remote or ""
    headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    prior_via = request.headers.get("Via")
    via = f"{request.version.major}.{request.version.minor} {VIA}"
    headers["Via"] = f"{prior_via}, {via}" if prior_via else via
    return headers


def _relative(value: str, node_url: str) -> str:
    """A node's absolute URL made relative (clients never see a node's address)."""
    base = node_url.rstrip("/")
    return value.replace(base, "") if base in value else value
