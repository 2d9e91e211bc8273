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
    p.add_argument("--role", choices=["standalone", "origin", "edge"],
                   help="standalone: publishers and viewers; origin: the same, for edges "
                        "to pull from; edge: pulls the streams its viewers ask for from "
                        "--upstream (default standalone)")
    p.add_argument("--upstream",
                   help="edge: comma-separated base URLs of origins (or edges of a relay "
                        "tier) to pull streams from (default none)")
    p.add_argument("--upstream-token",
                   help="edge: bearer token presented to upstreams (default none)")
    p.add_argument("--relay-linger", type=float,
                   help="edge: seconds a pull goes on after its last viewer left "
                        "(default 5)")


def _up_parser(sub) -> None:
    p = sub.add_parser("up", help="run a node with a live test-pattern stream to watch")
    _node_options(p)
    p.add_argument("--stream", default="demo", help="stream name (default demo)")
    p.add_argument("--codec", choices=["h264", "vp8"], default="vp8",
                   help="test pattern video codec (default vp8)")


def _node_config(args, command: str):
    from unbroken.node.config import NodeConfig

    try:
        return NodeConfig.load(
            args.config, host=args.host, port=args.port, token=args.token,
            media_timeout=args.media_timeout, connect_timeout=args.connect_timeout,
            on_publisher_conflict=args.on_publisher_conflict,
            drain_timeout=args.drain_timeout, log_level=args.log_level,
            hls=args.hls, hls_transcode=args.hls_transcode,
            hls_segment_duration=args.hls_segment_duration,
            hls_part_duration=args.hls_part_duration, hls_window=args.hls_window,
            hls_idle_timeout=args.hls_idle_timeout, hls_end_grace=args.hls_end_grace,
            role=args.role, upstream=args.upstream, upstream_token=args.upstream_token,
            relay_linger=args.relay_linger)
    except (ValueError, OSError) as exc:
        sys.exit(f"unbroken {command}: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="unbroken", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _node_parser(sub)
    _up_parser(sub)
    from unbroken.client import cli as client_cli

    client_cli.add_publish_parser(sub)
    client_cli.add_play_parser(sub)
    args = parser.parse_args(argv)
    from unbroken.httpkit.logs import setup_logging

    if args.command in ("publish", "play"):
        import asyncio

        setup_logging("warning", args.command)
        sys.exit(asyncio.run(client_cli.run(args)))

    config = _node_config(args, args.command)
    setup_logging(config.log_level, args.command)
    if args.command == "node":
        from unbroken.node.server import run

        run(config)
    elif args.command == "up":
        import asyncio

        from unbroken.up import up

        asyncio.run(up(config, args.stream, args.codec))
