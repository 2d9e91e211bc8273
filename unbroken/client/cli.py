"""`unbroken publish` and `unbroken play`: SDK clients on the command line.

A live one-line status on a terminal; with --json one JSON object per line for
every state change and every restore report (with a `t` timestamp), and every second a
`{"kind": "stats", ...}` line with the client's figures (frames, packets, fps, ...)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

from .events import ClientEvent
from .options import RestoreOptions

STATUS_INTERVAL = 0.5
JSON_STATS_INTERVAL = 1.0


def add_restore_options(p: argparse.ArgumentParser) -> None:
    d = RestoreOptions()
    g = p.add_argument_group("restore (seed 004 knobs)")
    g.add_argument("--token", help="Bearer token")
    m = p.add_argument_group("stream manager")
    m.add_argument("--manager", metavar="URL[,URL]",
                   help="ask these stream managers for a route on every try (failover "
                        "across the list); URL may then be left out")
    trust = m.add_mutually_exclusive_group()
    trust.add_argument("--manager-fingerprint", metavar="FP",
                       help="trust the manager's (self-signed) certificate by its SHA-256 "
                            "fingerprint")
    trust.add_argument("--manager-ca", metavar="FILE", help="trust this CA file for the manager")
    g.add_argument("--signaling", choices=["http", "session"], default="http",
                   help="WHIP/WHEP over HTTP with server-sent events, or the session "
                        "channel (/ws) with server pings (default http)")
    g.add_argument("--no-restore", action="store_true", help="do not restore after faults")
    g.add_argument("--timeout-ms", type=int, default=d.timeout_ms,
                   help=f"longest wait between tries (default {d.timeout_ms})")
    g.add_argument("--max-tries", type=int, default=d.max_tries,
                   help=f"tries per fault before giving up (default {d.max_tries})")
    g.add_argument("--missing-pings", type=int, default=d.missing_pings,
                   help=f"missed server keep-alives that fail the session "
                        f"(default {d.missing_pings})")
    g.add_argument("--ping-period-ms", type=int, default=d.ping_period_ms,
                   help=f"server keep-alive period asked for (default {d.ping_period_ms})")
    g.add_argument("--connect-timeout", type=float, default=d.connect_timeout_s,
                   help=f"seconds one attempt may take (default {d.connect_timeout_s})")
    g.add_argument("--no-network-watch", action="store_true",
                   help="do not restore on network path changes")
    g.add_argument("--json", action="store_true", help="one JSON object per event line")


def add_publish_parser(sub) -> None:
    p = sub.add_parser("publish", help="publish a stream with auto-restore (WHIP)")
    p.add_argument("url", nargs="?", help="node URL, or a comma-separated failover list")
    p.add_argument("stream")
    p.add_argument("--source", default="testsrc", help="testsrc or a media file path")
    p.add_argument("--codec", choices=["h264", "vp8"], default="h264")
    d = RestoreOptions()
    p.add_argument("--no-bitrate-check", action="store_true")
    p.add_argument("--bitrate-check-interval-ms", type=int,
                   default=d.bitrate_check_interval_ms)
    p.add_argument("--bitrate-max-tries", type=int, default=d.bitrate_max_tries)
    p.add_argument("--change-codec", action="store_true",
                   help="when H264 publishing stalls, republish with VP8")
    add_restore_options(p)


def add_play_parser(sub) -> None:
    p = sub.add_parser("play", help="play a stream with auto-restore (WHEP)")
    p.add_argument("url", nargs="?", help="node URL, or a comma-separated failover list")
    p.add_argument("stream")
    d = RestoreOptions()
    p.add_argument("--media-silence-ms", type=int, default=d.media_silence_ms,
                   help=f"restore after this long without media (default {d.media_silence_ms})")
    p.add_argument("--frame-stall-ms", type=int, default=d.frame_stall_ms,
                   help="restore when video packets arrive but no frame is decoded this "
                        f"long; a keyframe is asked for at half of it (default "
                        f"{d.frame_stall_ms}; 0 = off)")
    p.add_argument("--inactive-timeout-ms", type=int, default=d.inactive_timeout_ms,
                   help="look elsewhere after the stream is inactive this long "
                        f"(default {d.inactive_timeout_ms})")
    p.add_argument("--transports", default="whep",
                   help="transport order, e.g. whep,hls: fail over to HLS when WebRTC keeps "
                        "failing (default whep)")
    p.add_argument("--no-decode", action="store_true", help="count packets only")
    p.add_argument("--record", metavar="FILE",
                   help="write the stream to FILE (.ts, .webm, .mkv) without re-encoding")
    add_restore_options(p)


def _options(args) -> RestoreOptions:
    o = RestoreOptions(
        restore=not args.no_restore, timeout_ms=args.timeout_ms, max_tries=args.max_tries,
        missing_pings=args.missing_pings, ping_period_ms=args.ping_period_ms,
        connect_timeout_s=args.connect_timeout, network_watch=not args.no_network_watch)
    if args.command == "publish":
        o.bitrate_check = not args.no_bitrate_check
        o.bitrate_check_interval_ms = args.bitrate_check_interval_ms
        o.bitrate_max_tries = args.bitrate_max_tries
        o.change_codec = args.change_codec
    else:
        o.media_silence_ms = args.media_silence_ms
        o.frame_stall_ms = args.frame_stall_ms
        o.inactive_timeout_ms = args.inactive_timeout_ms
        o.transports = tuple(t.strip() for t in args.transports.split(",") if t.strip())
    o.validate()
    return o


async def run(args) -> int:
    from .publisher import Publisher
    from .sources import from_spec
    from .subscriber import Subscriber

    try:
        options = _options(args)
    except ValueError as exc:
        print(f"unbroken {args.command}: {exc}", file=sys.stderr)
        return 2
    if not args.url and not args.manager:
        print(f"unbroken {args.command}: give a URL or --manager", file=sys.stderr)
        return 2
    tty = sys.stdout.isatty() and not args.json
    routing = {"manager": args.manager, "manager_fingerprint": args.manager_fingerprint,
               "manager_ca": args.manager_ca}

    def on_event(event: ClientEvent) -> None:
        if args.json:
            print(json.dumps(event.as_dict()), flush=True)
        elif event.kind != "stream_event":
            text = " ".join(f"{k}={v}" for k, v in event.as_dict().items() if k != "t")
            print(("\r\033[K" if tty else "") + text, flush=True)

    if args.command == "publish":
        client = Publisher(args.url, args.stream, source=from_spec(args.source),
                           codec=args.codec, token=args.token, options=options,
                           signaling=args.signaling, on_event=on_event, **routing)
    else:
        client = Subscriber(args.url, args.stream, decode=not args.no_decode,
                            record=args.record, token=args.token, options=options,
                            signaling=args.signaling, on_event=on_event, **routing)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await client.start()
    except ConnectionError:
        return 1
    if tty:
        status = asyncio.create_task(_status_line(client))
    elif args.json:
        status = asyncio.create_task(_json_stats(client))
    else:
        status = None
    waiter = asyncio.create_task(client.done.wait())
    await asyncio.wait({waiter, asyncio.create_task(stop.wait())},
                       return_when=asyncio.FIRST_COMPLETED)
    gave_up = client.done.is_set()
    if status:
        status.cancel()
    if args.json:
        _print_stats(client)
    await client.stop()  # a manual stop: never restores
    return 1 if gave_up else 0


def _print_stats(client) -> None:
    print(json.dumps({"kind": "stats", **client.stats(), "t": time.time()}), flush=True)


async def _json_stats(client) -> None:
    while True:
        await asyncio.sleep(JSON_STATS_INTERVAL)
        _print_stats(client)


async def _status_line(client) -> None:
    while True:
        s = client.stats()
        fields = [s.get("state"), s.get("codec") or "", f"{s.get('fps', 0):.0f}fps"
                  if "fps" in s else "", f"restores={s.get('restores')}", s.get("node") or s.get("url") or ""]
        print("\r\033[K" + "  ".join(str(f) for f in fields if f), end="", flush=True)
        await asyncio.sleep(STATUS_INTERVAL)
