"""The Redis cluster store (redis.asyncio): any number of managers share one Redis.

Keys, under a prefix (default "unbroken"):

    {p}:node:{id}        the node's NODE_UPDATED event (record and lease, JSON), PX = the lease
    {p}:nodes            set of node ids (an index; entries whose record lapsed are pruned)
    {p}:origin:{stream}  the origin owner's node id, PX = the claim's TTL
    {p}:edges:{stream}   sorted set: node id -> membership expiry (ms, Redis server clock)
    {p}:lease:{name}     a named lease's holder (e.g. the scaling leader), PX = its TTL
    {p}:table:{name}     hash: a named table's entries (e.g. the local provider's nodes)
    {p}:events           the pub/sub channel

Every write is one Lua script that changes the state and publishes its event together, so
no manager ever sees a change without its event or the other way round. Claims and
releases compare the owner inside the script: a release by anyone but the owner is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Iterator

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import BusyLoadingError, ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, TimeoutError as RedisTimeoutError

from ..model import InvalidRecord, NodeRecord
from .base import (
    ClusterEvent,
    ClusterSnapshot,
    ClusterStore,
    EventKind,
    EventSubscription,
    LeaseGrant,
    OriginClaim,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    StoredNode,
)
from .subscription import QueueSubscription

__all__ = ["RedisStore"]

log = logging.getLogger("unbroken.manager.store")

SOCKET_TIMEOUT_S = 1.0
COMMAND_RETRIES = 2  # quick retries on a dropped connection, then StoreUnavailable
PUBSUB_POLL_S = 1.0
RESUBSCRIBE_MIN_S = 0.05
RESUBSCRIBE_MAX_S = 1.0
MAX_SCAN_ROUNDS = 10_000  # SCAN pages of 1000 keys: bounds a snapshot at 10 M keys

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)

# Shared Lua helpers; each script below is these plus its body.
_LUA_HELPERS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function claim(key, stream, node, ttl_ms, replacing, channel)
  local owner = redis.call('GET', key)
  if (not owner) or owner == node or (replacing ~= '' and owner == replacing) then
    redis.call('SET', key, node, 'PX', ttl_ms)
    if owner ~= node then
      redis.call('PUBLISH', channel, cjson.encode({kind='origin_claimed', node_id=node, stream=stream}))
      return {node, 1}
    end
    return {node, 0}
  end
  return {owner, 0}
end

local function release(key, stream, node, channel)
  if redis.call('GET', key) == node then
    redis.call('DEL', key)
    redis.call('PUBLISH', channel, cjson.encode({kind='origin_released', node_id=node, stream=stream}))
    return 1
  end
  return 0
end

local function add_edge(key, stream, node, ttl_ms, channel)
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local old = redis.call('ZSCORE', key, node)
  redis.call('ZADD', key, 'GT', now + tonumber(ttl_ms), node)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', key, top[2])
  if not old then
    redis.call('PUBLISH', channel, cjson.encode({kind='edge_added', node_id=node, stream=stream, ttl_ms=tonumber(ttl_ms)}))
    return 1
  end
  return 0
end

local function remove_edge(key, stream, node, channel)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms())
  if redis.call('ZREM', key, node) == 1 then
    redis.call('PUBLISH', channel, cjson.encode({kind='edge_removed', node_id=node, stream=stream}))
    return 1
  end
  return 0
end
"""

# KEYS: origin key. ARGV: stream, node, ttl_ms, replacing ('' = none), channel.
_CLAIM = _LUA_HELPERS + "return claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])"
# KEYS: origin key. ARGV: stream, node, channel.
_RELEASE = _LUA_HELPERS + "return release(KEYS[1], ARGV[1], ARGV[2], ARGV[3])"
# KEYS: edges key. ARGV: stream, node, ttl_ms, channel.
_ADD_EDGE = _LUA_HELPERS + "return add_edge(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"
# KEYS: edges key. ARGV: stream, node, channel.
_REMOVE_EDGE = _LUA_HELPERS + "return remove_edge(KEYS[1], ARGV[1], ARGV[2], ARGV[3])"

# KEYS: lease key. ARGV: holder, ttl_ms. Returns {holder now, ms left}.
_ACQUIRE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], tonumber(ARGV[2])}
end
return {holder, redis.call('PTTL', KEYS[1])}
"""
# KEYS: lease key. ARGV: holder.
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: node key, index, then one origin or edges key per stream.
# ARGV: node id, record JSON, lease_ms, channel, NODE_UPDATED event JSON,
#       '1' if the node takes publishers (claims) else '0' (edge sets), then the streams.
_PUT_NODE = _LUA_HELPERS + """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
local owners = {}
for i = 3, #KEYS do
  local stream = ARGV[i + 4]
  if ARGV[6] == '1' then
    local result = claim(KEYS[i], stream, ARGV[1], ARGV[3], '', ARGV[4])
    owners[#owners + 1] = stream
    owners[#owners + 1] = result[1]
  else
    add_edge(KEYS[i], stream, ARGV[1], ARGV[3], ARGV[4])
  end
end
return owners
"""

# KEYS: node key, index, then one origin or edges key per stream.
# ARGV: node id, channel, NODE_REMOVED event JSON, '1'/'0' as above, then the streams.
_REMOVE_NODE = _LUA_HELPERS + """
for i = 3, #KEYS do
  local stream = ARGV[i + 2]
  if ARGV[4] == '1' then
    release(KEYS[i], stream, ARGV[1], ARGV[2])
  else
    remove_edge(KEYS[i], stream, ARGV[1], ARGV[2])
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS: index. ARGV: node key prefix. Returns [record JSON, pttl_ms, ...]; prunes the index.
_LIVE_NODES = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  local record = redis.call('GET', key)
  if record then
    out[#out + 1] = record
    out[#out + 1] = redis.call('PTTL', key)
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
"""


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """Redis errors as store errors: unreachable -> StoreUnavailable, others StoreError."""
    try:
        yield
    except _UNAVAILABLE as e:
        raise StoreUnavailable(f"redis: {e}") from e
    except RedisError as e:
        raise StoreError(f"redis: {e}") from e


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore(ClusterStore):
    """Owns the connections to one Redis (a command client with quick retries, and one
    pub/sub connection per subscription) and the Lua scripts; the state itself lives in
    Redis. A subscription whose connection breaks reconnects by itself (capped backoff)
    and, once back, delivers RESYNC so its subscriber rebuilds from a snapshot."""

    def __init__(self, url: str, *, prefix: str = "unbroken") -> None:
        self._url = url
        self._prefix = prefix
        self._channel = f"{prefix}:events"
        self._redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), COMMAND_RETRIES),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        # Pub/sub without silent retries: a broken connection must surface, so the
        # subscription knows it may have missed events.
        self._pubsub_redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)
        self._add_edge = self._redis.register_script(_ADD_EDGE)
        self._remove_edge = self._redis.register_script(_REMOVE_EDGE)
        self._put_node = self._redis.register_script(_PUT_NODE)
        self._remove_node = self._redis.register_script(_REMOVE_NODE)
        self._live_nodes = self._redis.register_script(_LIVE_NODES)
        self._acquire_lease = self._redis.register_script(_ACQUIRE_LEASE)
        self._release_lease = self._redis.register_script(_RELEASE_LEASE)
        self._pumps: dict[QueueSubscription, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def url(self) -> str:
        return self._url

    # -- keys ------------------------------------------------------------------------

    def _node_key(self, node_id: str) -> str:
        return f"{self._prefix}:node:{node_id}"

    @property
    def _index_key(self) -> str:
        return f"{self._prefix}:nodes"

    def _origin_key(self, stream: str) -> str:
        return f"{self._prefix}:origin:{stream}"

    def _edges_key(self, stream: str) -> str:
        return f"{self._prefix}:edges:{stream}"

    def _stream_keys(self, record: NodeRecord) -> tuple[list[str], list[str]]:
        streams = sorted(record.streams)
        key = self._origin_key if record.role.takes_publishers else self._edges_key
        return streams, [key(stream) for stream in streams]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    # -- ClusterStore ----------------------------------------------------------------

    async def put_node(self, record: NodeRecord, lease_s: float) -> dict[str, str]:
        self._check_open()
        streams, keys = self._stream_keys(record)
        event = ClusterEvent(EventKind.NODE_UPDATED, node_id=record.node_id, record=record, lease_s=lease_s)
        record_json = event.to_json()
        with _translate_errors():
            flat = await self._put_node(
                keys=[self._node_key(record.node_id), self._index_key, *keys],
                args=[
                    record.node_id,
                    record_json,
                    _ms(lease_s),
                    self._channel,
                    record_json,
                    "1" if record.role.takes_publishers else "0",
                    *streams,
                ],
            )
        return dict(zip(flat[0::2], flat[1::2]))

    async def remove_node(self, record: NodeRecord) -> None:
        self._check_open()
        streams, keys = self._stream_keys(record)
        event = ClusterEvent(EventKind.NODE_REMOVED, node_id=record.node_id)
        with _translate_errors():
            await self._remove_node(
                keys=[self._node_key(record.node_id), self._index_key, *keys],
                args=[
                    record.node_id,
                    self._channel,
                    event.to_json(),
                    "1" if record.role.takes_publishers else "0",
                    *streams,
                ],
            )

    @staticmethod
    def _stored(text: str, pttl_ms: int) -> StoredNode | None:
        try:
            event = ClusterEvent.from_json(text)
        except InvalidRecord as e:
            log.warning("skipping a malformed node record in redis: %s", e)
            return None
        if event.record is None or pttl_ms < 0:
            return None
        return StoredNode(event.record, pttl_ms / 1000)

    async def get_node(self, node_id: str) -> StoredNode | None:
        self._check_open()
        key = self._node_key(node_id)
        with _translate_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                text, pttl = await pipe.get(key).pttl(key).execute()
        return None if text is None else self._stored(text, pttl)

    async def claim_origin(
        self, stream: str, node_id: str, ttl_s: float, *, replacing: str | None = None
    ) -> OriginClaim:
        self._check_open()
        with _translate_errors():
            owner, acquired = await self._claim(
                keys=[self._origin_key(stream)],
                args=[stream, node_id, _ms(ttl_s), replacing or "", self._channel],
            )
        return OriginClaim(stream, owner, bool(acquired))

    async def release_origin(self, stream: str, node_id: str) -> bool:
        self._check_open()
        with _translate_errors():
            done = await self._release(keys=[self._origin_key(stream)], args=[stream, node_id, self._channel])
        return bool(done)

    async def origin_of(self, stream: str) -> str | None:
        self._check_open()
        with _translate_errors():
            return await self._redis.get(self._origin_key(stream))

    async def add_stream_edge(self, stream: str, node_id: str, ttl_s: float) -> bool:
        self._check_open()
        with _translate_errors():
            added = await self._add_edge(
                keys=[self._edges_key(stream)], args=[stream, node_id, _ms(ttl_s), self._channel]
            )
        return bool(added)

    async def remove_stream_edge(self, stream: str, node_id: str) -> bool:
        self._check_open()
        with _translate_errors():
            removed = await self._remove_edge(keys=[self._edges_key(stream)], args=[stream, node_id, self._channel])
        return bool(removed)

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> LeaseGrant:
        self._check_open()
        with _translate_errors():
            current, left_ms = await self._acquire_lease(
                keys=[f"{self._prefix}:lease:{name}"], args=[holder, _ms(ttl_s)])
        return LeaseGrant(name, current, max(0, int(left_ms)) / 1000, held=current == holder)

    async def release_lease(self, name: str, holder: str) -> bool:
        self._check_open()
        with _translate_errors():
            done = await self._release_lease(keys=[f"{self._prefix}:lease:{name}"], args=[holder])
        return bool(done)

    async def put_entry(self, table: str, key: str, value: str) -> None:
        self._check_open()
        with _translate_errors():
            await self._redis.hset(f"{self._prefix}:table:{table}", key, value)

    async def delete_entry(self, table: str, key: str) -> bool:
        self._check_open()
        with _translate_errors():
            return bool(await self._redis.hdel(f"{self._prefix}:table:{table}", key))

    async def entries(self, table: str) -> dict[str, str]:
        self._check_open()
        with _translate_errors():
            return dict(await self._redis.hgetall(f"{self._prefix}:table:{table}"))

    async def _server_ms(self) -> int:
        seconds, micros = await self._redis.time()
        return seconds * 1000 + micros // 1000

    async def stream_edges(self, stream: str) -> frozenset[str]:
        self._check_open()
        with _translate_errors():
            now = await self._server_ms()
            members = await self._redis.zrange(self._edges_key(stream), f"({now}", "+inf", byscore=True)
        return frozenset(members)

    async def _scan(self, pattern: str) -> list[str]:
        keys: list[str] = []
        cursor = 0
        for _ in range(MAX_SCAN_ROUNDS):
            cursor, page = await self._redis.scan(cursor, match=pattern, count=1000)
            keys.extend(page)
            if cursor == 0:
                return keys
        raise StoreError(f"more than {MAX_SCAN_ROUNDS} SCAN pages for {pattern}")

    async def snapshot(self) -> ClusterSnapshot:
        self._check_open()
        with _translate_errors():
            flat = await self._live_nodes(keys=[self._index_key], args=[self._node_key("")])
            origin_keys = await self._scan(self._origin_key("*"))
            edge_keys = await self._scan(self._edges_key("*"))
            now = await self._server_ms()
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in origin_keys:
                    pipe.get(key)
                for key in edge_keys:
                    pipe.zrange(key, f"({now}", "+inf", byscore=True)
                values = await pipe.execute() if origin_keys or edge_keys else []
        nodes = [self._stored(text, int(pttl)) for text, pttl in zip(flat[0::2], flat[1::2])]
        origin_prefix, edges_prefix = len(self._origin_key("")), len(self._edges_key(""))
        origins = {
            key[origin_prefix:]: owner
            for key, owner in zip(origin_keys, values[: len(origin_keys)])
            if owner is not None
        }
        edges = {
            key[edges_prefix:]: frozenset(members)
            for key, members in zip(edge_keys, values[len(origin_keys) :])
            if members
        }
        return ClusterSnapshot(tuple(n for n in nodes if n is not None), origins, edges)

    def subscribe(self) -> EventSubscription:
        self._check_open()
        subscription = QueueSubscription(self._unsubscribe)
        self._pumps[subscription] = asyncio.create_task(
            self._pump(subscription), name="unbroken-manager-store-events"
        )
        return subscription

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        task = self._pumps.pop(subscription, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _messages(self, pubsub: Any, subscription: QueueSubscription) -> AsyncIterator[dict]:
        while not subscription.closed:
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=PUBSUB_POLL_S)
            if message is not None:
                yield message

    async def _pump(self, subscription: QueueSubscription) -> None:
        """Feed one subscription from Redis pub/sub for as long as it is open; every
        reconnection after a loss delivers RESYNC first."""
        lost = False
        delay = RESUBSCRIBE_MIN_S
        while not subscription.closed:
            pubsub = self._pubsub_redis.pubsub()
            try:
                await asyncio.wait_for(pubsub.subscribe(self._channel), SOCKET_TIMEOUT_S)
                async for message in self._messages(pubsub, subscription):
                    if message["type"] == "subscribe":
                        if lost:
                            log.info("cluster events: resubscribed to %s, resynchronising", self._channel)
                            subscription.push(ClusterEvent(EventKind.RESYNC))
                        lost, delay = False, RESUBSCRIBE_MIN_S
                        subscription.mark_ready()
                    elif message["type"] == "message":
                        try:
                            subscription.push(ClusterEvent.from_json(message["data"]))
                        except InvalidRecord as e:
                            log.warning("skipping a malformed cluster event: %s", e)
            except (*_UNAVAILABLE, RedisError, TimeoutError) as e:
                if not lost:
                    log.warning("cluster events: lost the redis subscription (%s); reconnecting", e)
                lost = True
            finally:
                with contextlib.suppress(*_UNAVAILABLE, RedisError):
                    await asyncio.wait_for(pubsub.aclose(), SOCKET_TIMEOUT_S)
            if not subscription.closed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_MAX_S)

    async def report_suspect(self, node_id: str) -> None:
        self._check_open()
        event = ClusterEvent(EventKind.NODE_SUSPECT, node_id=node_id)
        with _translate_errors():
            await self._redis.publish(self._channel, event.to_json())

    async def ping(self) -> None:
        self._check_open()
        with _translate_errors():
            await self._redis.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._pumps):
            subscription.end()
            await self._unsubscribe(subscription)
        with contextlib.suppress(*_UNAVAILABLE, RedisError):
            await self._redis.aclose()
            await self._pubsub_redis.aclose()
