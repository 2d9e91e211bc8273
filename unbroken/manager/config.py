"""Manager configuration: defaults, a TOML file (`--config`, `[manager]` table), then
command-line overrides; unknown keys and wrong types are refused (httpkit.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from unbroken.httpkit.config import check_types, load_settings

__all__ = ["ManagerConfig"]


@dataclass
class ManagerConfig:
    """Every setting of a manager process, validated."""

    host: str = "0.0.0.0"
    port: int = 8443
    # Bearer token required on the manager's own API (routes, nodes, streams); empty = none.
    # Proxied WHIP/WHEP/WS/HLS requests carry the client's Authorization to the node as is.
    token: str = ""
    # Bearer token nodes must present to register and heartbeat (required: without it
    # anyone could register a target and use the manager as an open proxy)
    node_token: str = ""
    # redis:// URL of the shared cluster store; empty = the in-process store (one manager)
    redis: str = ""
    # key and channel prefix in Redis: several clusters may share one server
    redis_prefix: str = "unbroken"
    tls_cert: str = ""
    tls_key: str = ""
    # a certificate made at start (development); its SHA-256 fingerprint is printed
    tls_self_signed: bool = False
    # seconds a node's record holds without a heartbeat (nodes heartbeat every second)
    lease: float = 3.0
    # seconds to connect to a node, and for a node to answer a proxied request's headers
    # (WHEP's wait_live_ms and LL-HLS blocking reloads wait inside this)
    node_connect_timeout: float = 1.0
    node_answer_timeout: float = 10.0
    # seconds a client has to send a request body
    max_body_bytes: int = 64 * 1024
    # per client address: requests per second (and burst), new sessions per second (and
    # burst); beyond them 429 with Retry-After. 0 = no limit
    client_requests_per_s: float = 50.0
    client_request_burst: int = 100
    client_sessions_per_s: float = 10.0
    client_session_burst: int = 20
    # seconds to let proxied streams and sockets end after SIGTERM
    drain_timeout: float = 5.0
    log_level: str = "info"
    # -- autoscaling (README "Autoscaling") --
    # who starts and stops nodes: "" (nobody: nodes join by themselves), "static" (the
    # static_nodes list: health only), "local" (node processes here), "kubernetes" (Pods)
    provider: str = ""
    # seconds between the leader's evaluations; the leader lease's TTL
    scaling_interval: float = 1.0
    leader_lease: float = 3.0
    # a node is faulty when its heartbeat seq has not advanced for fault_stall seconds,
    # or its /healthz failed fault_health_failures times in a row, or it did not register
    # within node_start_timeout seconds of its start
    fault_stall: float = 2.0
    fault_health_failures: int = 2
    node_start_timeout: float = 20.0
    # on scale-in: the node drains this long at most (clients moved make-before-break)
    node_drain_timeout: float = 10.0
    # local provider: where nodes listen, their ports, extra `unbroken node` arguments,
    # a directory for their logs ("" = discarded), the manager URL they register with
    # ("" = this manager's own URL)
    local_host: str = "127.0.0.1"
    local_ports: str = "9100-9199"
    local_node_args: str = ""
    local_log_dir: str = ""
    local_manager_url: str = ""
    # local provider: a JSON file that keeps the records of the nodes it started besides
    # the cluster store, so a restarted manager without Redis adopts them ("" = none)
    local_state_file: str = ""
    # kubernetes provider: namespace, Pod template file, node port, kubeconfig ("" = in-cluster)
    kubernetes_namespace: str = "unbroken"
    kubernetes_template: str = ""
    kubernetes_node_port: int = 8080
    kubernetes_kubeconfig: str = ""
    # static provider: "id=http://host:port, ..."
    static_nodes: str = ""
    # [manager.groups.GROUP.ROLE] tables: scaling policy per group and role (GroupPolicy)
    groups: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | None = None, **overrides) -> "ManagerConfig":
        config = load_settings(cls, "manager", path, **overrides)
        config.validate()
        return config

    def scaling_policies(self):
        """The `groups` tables as {GroupKey: GroupPolicy} (ValueError when malformed)."""
        from .scaling.policy import parse_groups

        return parse_groups(self.groups)

    @property
    def tls(self) -> bool:
        return self.tls_self_signed or bool(self.tls_cert)

    @property
    def redis_url(self) -> str | None:
        return self.redis or None

    def validate(self) -> None:
        check_types(self)
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if not self.node_token:
            raise ValueError("node_token is required (nodes register with it)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_cert and self.tls_self_signed:
            raise ValueError("give tls_cert/tls_key or tls_self_signed, not both")
        if self.redis and not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis must be a redis:// URL, not {self.redis!r}")
        if not 0.5 <= self.lease <= 60:
            raise ValueError("lease must be between 0.5 and 60 seconds")
        if self.node_connect_timeout <= 0 or self.node_answer_timeout <= 0:
            raise ValueError("node timeouts must be positive")
        if self.max_body_bytes < 1 or self.drain_timeout < 0:
            raise ValueError("max_body_bytes must be positive, drain_timeout not negative")
        if min(self.client_requests_per_s, self.client_sessions_per_s) < 0:
            raise ValueError("client rates must not be negative")
        if min(self.client_request_burst, self.client_session_burst) < 1:
            raise ValueError("client bursts must be at least 1")
        self.scaling_policies()
        if self.provider not in ("", "static", "local", "kubernetes"):
            raise ValueError("provider must be static, local or kubernetes (or empty)")
        if self.provider == "kubernetes" and not self.kubernetes_template:
            raise ValueError("the kubernetes provider needs kubernetes_template (a Pod manifest)")
        if not 0.1 <= self.scaling_interval <= 60 or not 0.5 <= self.leader_lease <= 60:
            raise ValueError("scaling_interval must be 0.1-60 s and leader_lease 0.5-60 s")
        if min(self.fault_stall, self.node_start_timeout, self.node_drain_timeout) <= 0:
            raise ValueError("fault_stall, node_start_timeout and node_drain_timeout must be positive")
        if self.fault_health_failures < 1:
            raise ValueError("fault_health_failures must be at least 1")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be debug, info, warning or error")
