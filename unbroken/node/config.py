"""Node configuration: defaults, a TOML file (`--config`), then command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from unbroken.httpkit.config import check_types, load_settings


@dataclass
class NodeConfig:
    """Every setting of a node process, validated."""

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
    # the UDP port every WebRTC session's ICE uses, one socket per local address shared by
    # all sessions (one port to open; the native path batches all viewers' sends on it):
    # 0 = a free port chosen at the first session, -1 = a socket per session (aioice's way)
    ice_udp_port: int = 0
    max_sessions: int = 2000
    max_body_bytes: int = 64 * 1024
    # seconds to wait for sessions to end after SIGTERM before closing them
    drain_timeout: float = 5.0
    # a session channel that came through a proxy (the stream manager) and broke keeps its
    # streams this long for the client to resume it (ms; 0 = never)
    session_resume_ms: int = 10000
    log_level: str = "info"
    # HLS fallback (docs/hls.md): "on_demand" packages a stream while HLS requests come,
    # "always" packages every H264 stream from its start, "off" serves no HLS
    hls: str = "on_demand"
    # VP8/Opus sources: "on_demand" transcodes to H264/AAC while watched over HLS, "off" never
    hls_transcode: str = "on_demand"
    # target segment duration (s); segments are cut at keyframes (asked for with PLI)
    hls_segment_duration: float = 1.0
    # LL-HLS part duration (s); 0 = plain HLS without parts
    hls_part_duration: float = 0.5
    # segments listed in the playlist
    hls_window: int = 6
    # seconds without HLS requests after which on-demand packaging/transcoding stops
    hls_idle_timeout: float = 15.0
    # seconds a stream may be without publisher before its playlist ends (EXT-X-ENDLIST)
    hls_end_grace: float = 5.0
    # libx264 preset of the VP8 → H264 transcoder
    hls_x264_preset: str = "superfast"
    # "standalone" (takes publishers and viewers), "origin" (the same, for edges to pull
    # from), "edge" (pulls the streams its viewers ask for from an upstream)
    role: str = "standalone"
    # edge: comma-separated base URLs of the upstreams to pull from (origins, or edges of
    # a relay tier), all tried for every stream; empty with a manager: the manager says
    # where each stream is
    upstream: str = ""
    # edge: the bearer token presented to upstreams (empty = none)
    upstream_token: str = ""
    # edge: seconds a pull goes on after its stream's last viewer left
    relay_linger: float = 5.0
    # the stream manager to register with (http(s) URL); empty = a node on its own
    manager: str = ""
    group: str = "default"
    # the base URL the manager reaches this node at (default http://HOST:PORT)
    advertise: str = ""
    node_id: str = ""  # default: ROLE-HOST-PORT of the advertised URL
    node_token: str = ""  # the manager's node token
    # trusting a manager with a self-signed certificate: its CA/certificate file, or the
    # SHA-256 fingerprint it printed (pinned)
    manager_ca: str = ""
    manager_fingerprint: str = ""
    heartbeat_interval: float = 1.0
    # per client address (0 = no limit): requests and new sessions per second, and their
    # bursts; beyond them 429 with Retry-After. Behind a manager, set them on the manager
    # (the node sees the manager's address)
    client_requests_per_s: float = 0.0
    client_request_burst: int = 100
    client_sessions_per_s: float = 0.0
    client_session_burst: int = 20

    @property
    def upstream_urls(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.upstream.split(",") if u.strip()]

    @classmethod
    def load(cls, path: str | None = None, **overrides) -> "NodeConfig":
        config = load_settings(cls, "node", path, **overrides)
        config.validate()
        return config

    def validate(self) -> None:
        check_types(self)
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if not -1 <= self.ice_udp_port <= 65535:
            raise ValueError("ice_udp_port must be -1 (a socket per session) or 0 to 65535")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be debug, info, warning or error")
        if self.max_sessions < 1 or self.max_body_bytes < 1:
            raise ValueError("max_sessions and max_body_bytes must be positive")
        if self.retry_after < 0 or self.drain_timeout < 0:
            raise ValueError("retry_after and drain_timeout must not be negative")
        if not 0 <= self.session_resume_ms <= 600_000:
            raise ValueError("session_resume_ms must be between 0 and 600000")
        if self.on_publisher_conflict not in ("reject", "replace"):
            raise ValueError("on_publisher_conflict must be 'reject' or 'replace'")
        if not 0.1 <= self.media_timeout <= 60:
            raise ValueError("media_timeout must be between 0.1 and 60 seconds")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        if self.hls not in ("on_demand", "always", "off"):
            raise ValueError("hls must be 'on_demand', 'always' or 'off'")
        if self.hls_transcode not in ("on_demand", "off"):
            raise ValueError("hls_transcode must be 'on_demand' or 'off'")
        if self.hls_idle_timeout <= 0 or self.hls_end_grace < 0:
            raise ValueError("hls_idle_timeout must be positive, hls_end_grace not negative")
        if self.hls_x264_preset not in _X264_PRESETS:
            raise ValueError(f"hls_x264_preset must be one of {', '.join(_X264_PRESETS)}")
        self._validate_cluster()
        from unbroken.media.hls import HlsSettings

        HlsSettings(segment_duration=self.hls_segment_duration,
                    part_duration=self.hls_part_duration, window=self.hls_window).validate()


    @property
    def advertise_url(self) -> str:
        if self.advertise:
            return self.advertise.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def cluster_id(self) -> str:
        """The node's id in a cluster: `node_id`, or ROLE-HOST-PORT of its advertised URL."""
        if self.node_id:
            return self.node_id
        parts = urlsplit(self.advertise_url)
        return f"{self.role}-{parts.hostname}-{parts.port or 80}"

    def _validate_cluster(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        for url in self.upstream_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream URLs must be http:// or https://, not {url!r}")
        if self.role == "edge" and not (self.upstream_urls or self.manager):
            raise ValueError("an edge needs --upstream URL[,URL...] or --manager URL")
        if self.upstream_urls and self.role != "edge":
            raise ValueError("--upstream is for --role edge")
        if not 0 <= self.relay_linger <= 3600:
            raise ValueError("relay_linger must be between 0 and 3600 seconds")
        if self.advertise and not self.advertise.startswith(("http://", "https://")):
            raise ValueError("advertise must be an http(s) URL")
        if min(self.client_requests_per_s, self.client_sessions_per_s) < 0 or \
                min(self.client_request_burst, self.client_session_burst) < 1:
            raise ValueError("client rates must not be negative, bursts at least 1")
        if not self.manager:
            return
        if not self.manager.startswith(("http://", "https://")):
            raise ValueError("manager must be an http(s) URL")
        if not self.node_token:
            raise ValueError("node_token is required to register with a manager")
        if self.manager_ca and self.manager_fingerprint:
            raise ValueError("give manager_ca or manager_fingerprint, not both")
        if not 0.1 <= self.heartbeat_interval <= 10:
            raise ValueError("heartbeat_interval must be between 0.1 and 10 seconds")


ROLES = ("standalone", "origin", "edge")
_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")

