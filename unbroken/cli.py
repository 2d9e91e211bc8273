"""`unbroken` command line."""

from __future__ import annotations

import argparse
import sys


def _node_parser(sub) -> None:
    p = sub.add_parser("node", help="run a media node (WHIP ingest, WHEP playback)")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="unbroken", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _node_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "node":
        from unbroken.node.config import NodeConfig
        from unbroken.node.logs import setup_logging
        from unbroken.node.server import run

        try:
            config = NodeConfig.load(
                args.config, host=args.host, port=args.port, token=args.token,
                media_timeout=args.media_timeout, connect_timeout=args.connect_timeout,
                on_publisher_conflict=args.on_publisher_conflict,
                drain_timeout=args.drain_timeout, log_level=args.log_level)
        except (ValueError, OSError) as exc:
            sys.exit(f"unbroken node: {exc}")
        setup_logging(config.log_level, "node")
        run(config)
