"""`unbroken` command line."""

from __future__ import annotations

import argparse
import sys


def _node_parser(sub) -> None:
    p = sub.add_parser("node", help="run a media node (WHIP ingest, WHEP playback)")
    _node_options(p)


def _node_options(p) -> None:
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--token", help="Bearer token required on WHIP/WHEP/API requests")
    p.add_argument("--config", help="TOML file with node settings ([node] table)")
    p.add_argument("--media-timeout", type=float,
                   help="seconds without media before a publisher is gone (default 0.8)")
    p.add_argument("--connect-timeout", type=float,
                   help="seconds a session may take to connect (default 10)")
    p.add_argument("--on-publisher-conflict", choices=["reject", "replace"],
                   help="second publisher on a live stream: 409 or take over (default reject)")
    p.add_argument("--ice-udp-port", type=int,
                   help="UDP port all WebRTC sessions share, one socket per local address "
                        "(default 0: a free port; -1: a socket per session)")
    p.add_argument("--drain-timeout", type=float,
                   help="seconds to let sessions end after SIGTERM (default 5)")
    p.add_argument("--log-level", help="debug, info, warning, error (default info)")
    p.add_argument("--hls", choices=["on_demand", "always", "off"],
                   help="HLS packaging: while watched, always for H264 streams, or off "
                        "(default on_demand)")
    p.add_argument("--hls-transcode", choices=["on_demand", "off"],
                   help="transcode VP8/Opus to H264/AAC for HLS viewers (default on_demand)")
    p.add_argument("--hls-segment-duration", type=float,
                   help="HLS target segment duration in seconds (default 1)")
    p.add_argument("--hls-part-duration", type=float,
                   help="LL-HLS part duration in seconds, 0 = plain HLS (default 0.5)")
    p.add_argument("--hls-window", type=int, help="segments in the HLS playlist (default 6)")
    p.add_argument("--hls-idle-timeout", type=float,
                   help="seconds without HLS requests before packaging stops (default 15)")
    p.add_argument("--hls-end-grace", type=float,
                   help="seconds without publisher before the playlist ends (default 5)")
    g = p.add_argument_group("cluster (docs: README, 'Origins and edges', 'The stream manager')")
    g.add_argument("--role", choices=["standalone", "origin", "edge"],
                   help="standalone: publishers and viewers; origin: the same, for edges "
                        "to pull from; edge: pulls the streams its viewers ask for from "
                        "--upstream (default standalone)")
    g.add_argument("--upstream",
                   help="edge: comma-separated base URLs of origins (or edges of a relay "
                        "tier) to pull streams from (default none)")
    g.add_argument("--upstream-token",
                   help="edge: bearer token presented to upstreams (default none)")
    g.add_argument("--relay-linger", type=float,
                   help="edge: seconds a pull goes on after its last viewer left "
                        "(default 5)")
    g.add_argument("--manager", help="stream manager URL to register with (http(s)://...)")
    g.add_argument("--group", help="node group (default 'default')")
    g.add_argument("--advertise", help="base URL the manager reaches this node at "
                                       "(default http://HOST:PORT)")
    g.add_argument("--node-id", help="node id (default ROLE-HOST-PORT)")
    g.add_argument("--node-token", help="the manager's node token")
    g.add_argument("--manager-ca", help="CA or certificate file that signs the manager's "
                                        "certificate")
    g.add_argument("--manager-fingerprint",
                   help="SHA-256 fingerprint of the manager's (self-signed) certificate, as "
                        "it printed it: the certificate is pinned")


def _up_parser(sub) -> None:
    p = sub.add_parser("up", help="run a node with a live test-pattern stream to watch")
    _node_options(p)
    p.add_argument("--stream", default="demo", help="stream name (default demo)")
    p.add_argument("--codec", choices=["h264", "vp8"], default="vp8",
                   help="test pattern video codec (default vp8)")
    p.add_argument("--cluster", action="store_true",
                   help="a manager (self-signed TLS, on --port, default 8443) with two "
                        "origins and two edges, publishing through the manager")


def _manager_parser(sub) -> None:
    p = sub.add_parser("manager", help="run a stream manager (routing, TLS proxy)")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port (default 8443)")
    p.add_argument("--token", help="Bearer token required on the manager's API")
    p.add_argument("--node-token", help="token nodes register with (required)")
    p.add_argument("--redis", help="redis:// URL of the shared store (default: in-process, "
                                   "one manager)")
    p.add_argument("--redis-prefix", help="key prefix in Redis (default 'unbroken')")
    p.add_argument("--config", help="TOML file with manager settings ([manager] table)")
    p.add_argument("--tls-cert", help="certificate file (PEM)")
    p.add_argument("--tls-key", help="private key file (PEM)")
    p.add_argument("--tls-self-signed", action="store_true", default=None,
                   help="make a certificate at start (development); prints its fingerprint")
    p.add_argument("--lease", type=float, help="seconds a node record holds (default 3)")
    p.add_argument("--ice-udp-port", type=int,
                   help="UDP port all WebRTC sessions share, one socket per local address "
                        "(default 0: a free port; -1: a socket per session)")
    p.add_argument("--drain-timeout", type=float,
                   help="seconds to let proxied streams end after SIGTERM (default 5)")
    p.add_argument("--log-level", help="debug, info, warning, error (default info)")


def _manager_config(args):
    from unbroken.manager.config import ManagerConfig

    try:
        return ManagerConfig.load(
            args.config, host=args.host, port=args.port, token=args.token,
            node_token=args.node_token, redis=args.redis, redis_prefix=args.redis_prefix, tls_cert=args.tls_cert,
            tls_key=args.tls_key, tls_self_signed=args.tls_self_signed, lease=args.lease,
            drain_timeout=args.drain_timeout, log_level=args.log_level)
    except (ValueError, OSError) as exc:
        sys.exit(f"unbroken manager: {exc}")


def _node_config(args, command: str):
    from unbroken.node.config import NodeConfig

    try:
        return NodeConfig.load(
            args.config, host=args.host, port=args.port, token=args.token,
            media_timeout=args.media_timeout, connect_timeout=args.connect_timeout,
            on_publisher_conflict=args.on_publisher_conflict,
            drain_timeout=args.drain_timeout, log_level=args.log_level,
            ice_udp_port=args.ice_udp_port, hls=args.hls, hls_transcode=args.hls_transcode,
            hls_segment_duration=args.hls_segment_duration,
            hls_part_duration=args.hls_part_duration, hls_window=args.hls_window,
            hls_idle_timeout=args.hls_idle_timeout, hls_end_grace=args.hls_end_grace,
            manager=args.manager, role=args.role, group=args.group, advertise=args.advertise,
            node_id=args.node_id, node_token=args.node_token, manager_ca=args.manager_ca,
            manager_fingerprint=args.manager_fingerprint, upstream=args.upstream,
            upstream_token=args.upstream_token, relay_linger=args.relay_linger)
    except (ValueError, OSError) as exc:
        sys.exit(f"unbroken {command}: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="unbroken", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _node_parser(sub)
    _up_parser(sub)
    _manager_parser(sub)
    from unbroken.client import cli as client_cli

    client_cli.add_publish_parser(sub)
    client_cli.add_play_parser(sub)
    args = parser.parse_args(argv)
    from unbroken.httpkit.logs import setup_logging

    if args.command in ("publish", "play"):
        import asyncio

        setup_logging("warning", args.command)
        sys.exit(asyncio.run(client_cli.run(args)))

    if args.command == "manager":
        config = _manager_config(args)
        setup_logging(config.log_level, "manager")
        from unbroken.manager.server import run as run_manager

        run_manager(config)
        return
    if args.command == "up" and args.cluster:
        import asyncio

        from unbroken.up_cluster import up_cluster

        setup_logging(args.log_level or "warning", "up")
        asyncio.run(up_cluster(port=args.port or 8443, stream=args.stream, codec=args.codec))
        return
    config = _node_config(args, args.command)
    setup_logging(config.log_level, args.command)
    if args.command == "node":
        from unbroken.node.server import run

        run(config)
    elif args.command == "up":
        import asyncio

        from unbroken.up import up

        asyncio.run(up(config, args.stream, args.codec))
