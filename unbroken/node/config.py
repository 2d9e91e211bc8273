"""Node configuration: defaults, a TOML file (`--config`), then command-line overrides."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields


@dataclass
class NodeConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    # Bearer token required on WHIP/WHEP/API requests; empty = no auth
    token: str = ""
    # seconds without any media packet after which a publisher counts as gone
    media_timeout: float = 0.8
    # seconds a new session may take to connect (ICE + DTLS) and send media
    connect_timeout: float = 10.0
    # what a second publisher on a live stream gets: "reject" (409) or "replace"
    on_publisher_conflict: str = "reject"
    # Retry-After seconds sent with 409 when a WHEP stream is not live
    retry_after: int = 1
    max_sessions: int = 2000
    max_body_bytes: int = 64 * 1024
    # seconds to wait for sessions to end after SIGTERM before closing them
    drain_timeout: float = 5.0
    log_level: str = "info"

    @classmethod
    def load(cls, path: str | None = None, **overrides) -> "NodeConfig":
        values: dict = {}
        if path:
            with open(path, "rb") as f:
                data = tomllib.load(f)
            values.update(data.get("node", data))
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown node settings: {', '.join(sorted(unknown))}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.on_publisher_conflict not in ("reject", "replace"):
            raise ValueError("on_publisher_conflict must be 'reject' or 'replace'")
        if not 0.1 <= self.media_timeout <= 60:
            raise ValueError("media_timeout must be between 0.1 and 60 seconds")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
