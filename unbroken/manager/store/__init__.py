"""The cluster store: the state every manager shares (see base.py), in process or in Redis."""

from __future__ import annotations

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
from .local import LocalStore
from .redis_store import RedisStore

__all__ = [
    "ClusterEvent",
    "ClusterSnapshot",
    "ClusterStore",
    "EventKind",
    "EventSubscription",
    "LeaseGrant",
    "LocalStore",
    "OriginClaim",
    "RedisStore",
    "StoreClosed",
    "StoreError",
    "StoreUnavailable",
    "StoredNode",
    "open_store",
]


def open_store(redis_url: str | None, *, prefix: str = "unbroken") -> ClusterStore:
    """The Redis store when a URL is given (redis:// or rediss://), else the in-process
    store that serves a single manager."""
    if redis_url is None:
        return LocalStore()
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"not a redis URL: {redis_url!r}")
    return RedisStore(redis_url, prefix=prefix)
