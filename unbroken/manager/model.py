"""What the manager knows about a node: its role, lifecycle state, load and limits.

These are the values a node reports in its registration and heartbeats (over the public
HTTP API), and the records the cluster store shares between managers. They are plain
frozen dataclasses with a JSON form; nothing here knows how a node works inside.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from unbroken.protocol.names import valid_stream_name

__all__ = [
    "InvalidRecord",
    "NodeLimits",
    "NodeLoad",
    "NodeRecord",
    "NodeRole",
    "NodeState",
]


class InvalidRecord(ValueError):
    """A node record (from a node or from the store) is malformed."""


class NodeRole(enum.Enum):
    """What a node does in the cluster: origins take publishers, edges serve viewers
    (pulling from an origin or another edge), a standalone node does both."""

    STANDALONE = "standalone"
    ORIGIN = "origin"
    EDGE = "edge"

    @property
    def takes_publishers(self) -> bool:
        return self in (NodeRole.ORIGIN, NodeRole.STANDALONE)


class NodeState(enum.Enum):
    """A node's lifecycle as the manager sees it.

    A node reports JOINING, SERVING or DRAINING itself; SUSPECT (a proxied request to it
    failed, a check is under way) and GONE (lease lapsed or the node left) are the
    manager's own verdicts.
    """

    JOINING = "joining"
    SERVING = "serving"
    DRAINING = "draining"
    SUSPECT = "suspect"
    GONE = "gone"

    @property
    def reported_by_node(self) -> bool:
        return self in (NodeState.JOINING, NodeState.SERVING, NodeState.DRAINING)


def _number(data: Mapping[str, Any], key: str, default: float | None = 0) -> float | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRecord(f"{key} must be a finite number")
    if value < 0:
        raise InvalidRecord(f"{key} must not be negative")
    return value


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """A node's load at its last heartbeat. `cpu` is the fraction of the node's CPU
    in use (0..1, all cores together); `egress_bps` its outgoing bitrate."""

    sessions: int = 0
    publishers: int = 0
    viewers: int = 0
    cpu: float = 0.0
    egress_bps: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "publishers": self.publishers,
            "viewers": self.viewers,
            "cpu": self.cpu,
            "egress_bps": self.egress_bps,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeLoad:
        if not isinstance(data, Mapping):
            raise InvalidRecord("load must be an object")
        return cls(
            sessions=int(_number(data, "sessions")),
            publishers=int(_number(data, "publishers")),
            viewers=int(_number(data, "viewers")),
            cpu=float(_number(data, "cpu")),
            egress_bps=float(_number(data, "egress_bps")),
        )


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """The most a node takes before routing passes it by; None = no limit on that measure.
    `max_cpu` is a fraction (0..1]."""

    max_sessions: int | None = None
    max_publishers: int | None = None
    max_viewers: int | None = None
    max_cpu: float | None = 0.9
    max_egress_bps: float | None = None

    def ratios(self, load: NodeLoad) -> list[float]:
        """Load over limit for every declared limit (1.0 = at the limit)."""
        pairs = (
            (load.sessions, self.max_sessions),
            (load.publishers, self.max_publishers),
            (load.viewers, self.max_viewers),
            (load.cpu, self.max_cpu),
            (load.egress_bps, self.max_egress_bps),
        )
        return [value / limit if limit else math.inf for value, limit in pairs if limit is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "max_sessions": self.max_sessions,
            "max_publishers": self.max_publishers,
            "max_viewers": self.max_viewers,
            "max_cpu": self.max_cpu,
            "max_egress_bps": self.max_egress_bps,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeLimits:
        if not isinstance(data, Mapping):
            raise InvalidRecord("limits must be an object")
        default = cls()

        def count(key: str) -> int | None:
            value = _number(data, key, None)
            return None if value is None else int(value)

        return cls(
            max_sessions=count("max_sessions"),
            max_publishers=count("max_publishers"),
            max_viewers=count("max_viewers"),
            max_cpu=_number(data, "max_cpu", default.max_cpu),
            max_egress_bps=_number(data, "max_egress_bps", None),
        )


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as it registered and last reported: identity (`node_id`, `instance` = the
    process's boot id, so a restarted node is a new incarnation), `role`, `group`, the
    base `url` it advertises, its own lifecycle state, load, limits, the streams it
    carries (published here for an origin, pulled for an edge) and, for pulled streams,
    the upstream node URL each one comes from, and the viewers of each stream there.
    `seq` counts the instance's heartbeats:
    a record older than one already seen (an event that arrived late) is ignored."""

    node_id: str
    role: NodeRole
    url: str
    group: str = "default"
    instance: str = ""
    seq: int = 0
    state: NodeState = NodeState.JOINING
    load: NodeLoad = field(default_factory=NodeLoad)
    limits: NodeLimits = field(default_factory=NodeLimits)
    streams: frozenset[str] = frozenset()
    upstreams: tuple[tuple[str, str], ...] = ()
    stream_viewers: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.node_id or len(self.node_id) > 128 or not self.node_id.isprintable():
            raise InvalidRecord("node_id must be 1-128 printable characters")
        if not self.url.startswith(("http://", "https://")):
            raise InvalidRecord("url must be an http(s) URL")
        if self.seq < 0:
            raise InvalidRecord("seq must not be negative")
        if not self.group or len(self.group) > 64:
            raise InvalidRecord("group must be 1-64 characters")
        if not self.state.reported_by_node:
            raise InvalidRecord(f"a node cannot report itself {self.state.value}")
        bad = [name for name in self.streams if not valid_stream_name(name)]
        if bad:
            raise InvalidRecord(f"invalid stream name {bad[0]!r}")

    def carries(self, stream: str) -> bool:
        return stream in self.streams

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "role": self.role.value,
            "url": self.url,
            "group": self.group,
            "instance": self.instance,
            "seq": self.seq,
            "state": self.state.value,
            "load": self.load.to_json(),
            "limits": self.limits.to_json(),
            "streams": sorted(self.streams),
            "upstreams": dict(self.upstreams),
            "stream_viewers": dict(self.stream_viewers),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeRecord:
        """Parse a record; every malformed field raises InvalidRecord."""
        if not isinstance(data, Mapping):
            raise InvalidRecord("a node record must be an object")
        try:
            role = NodeRole(data["role"])
            state = NodeState(data.get("state", NodeState.JOINING.value))
            node_id, url = data["node_id"], data["url"]
            group, instance = data.get("group", "default"), data.get("instance", "")
            seq = data.get("seq", 0)
            streams = data.get("streams", [])
            upstreams = data.get("upstreams", {})
            stream_viewers = data.get("stream_viewers", {})
        except KeyError as e:
            raise InvalidRecord(f"missing field {e.args[0]!r}") from None
        except ValueError as e:
            raise InvalidRecord(str(e)) from None
        for name, value in (("node_id", node_id), ("url", url), ("group", group), ("instance", instance)):
            if not isinstance(value, str):
                raise InvalidRecord(f"{name} must be a string")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise InvalidRecord("seq must be an integer")
        if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
            raise InvalidRecord("streams must be a list of names")
        if not isinstance(upstreams, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in upstreams.items()
        ):
            raise InvalidRecord("upstreams must map stream names to URLs")
        if not isinstance(stream_viewers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in stream_viewers.items()
        ):
            raise InvalidRecord("stream_viewers must map stream names to counts")
        return cls(
            node_id=node_id,
            role=role,
            url=url,
            group=group,
            instance=instance,
            seq=seq,
            state=state,
            load=NodeLoad.from_json(data.get("load", {})),
            limits=NodeLimits.from_json(data.get("limits", {})),
            streams=frozenset(streams),
            upstreams=tuple(sorted(upstreams.items())),
            stream_viewers=tuple(sorted(stream_viewers.items())),
        )
