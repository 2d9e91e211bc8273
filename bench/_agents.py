"""Benchmark agents, each run in its own process by the harness (``bench/_harness.py``).

    python bench/_agents.py publish URL STREAM [--codec vp8|h264] [--size 640x360]
                                               [--fps 30] [--bitrate BPS] [--audio]
    python bench/_agents.py view URL STREAM [--count N] [--decode]

Protocol: the agent prints ``{"event": "ready", ...}`` once its sessions are up
(the publisher connected, every viewer got its first frame), then answers each
``snap`` line on stdin with ``{"event": "snap", ...}`` (counters since start and
the agent's own CPU time). ``stop`` or end of stdin ends it; failures are
reported as ``{"event": "error", "error": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from _harness import cpu_seconds

VIEW_TIMEOUT = 20.0  # seconds for all viewers of an agent to get their first frame
JOIN_TIMEOUT = 10.0  # seconds a viewer keeps retrying while the stream is not live yet


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def own_cpu() -> float:
    return cpu_seconds(os.getpid())


def pin_encoder_bitrate(codec: str, bitrate: int) -> None:
    """Make aiortc's encoders hold ``bitrate``: its default, floor and ceiling.

    aiortc's sender moves the encoder's target with the receiver's REMB estimate
    within [MIN_BITRATE, MAX_BITRATE]; pinning all three keeps every run at the
    same nominal bitrate (the actual one depends on the picture and is measured).
    """
    if codec == "vp8":
        from aiortc.codecs import vpx as module
    else:
        from aiortc.codecs import h264 as module
    module.DEFAULT_BITRATE = module.MIN_BITRATE = module.MAX_BITRATE = bitrate


async def commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve_commands(snapshot) -> None:
    """Answer ``snap`` with ``snapshot()`` until ``stop`` or end of input."""
    reader = await commands()
    while True:
        line = (await reader.readline()).strip()
        if not line or line == b"stop":
            return
        if line == b"snap":
            emit("snap", t=time.monotonic(), cpu=own_cpu(), **await snapshot())


async def publish(args) -> None:
    """Publish until told to stop; republish at once if the server ends the session
    (e.g. its media timeout fired while this box was starved of CPU). Viewers stay on
    their sessions meanwhile; ``restarts`` in the snapshots says it happened."""
    from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
    from unbroken.client.whip import WhipPublisher

    if args.bitrate:
        pin_encoder_bitrate(args.codec, args.bitrate)
    width, height = (int(x) for x in args.size.split("x"))
    video = TestPatternVideoTrack(width, height, args.fps)
    tracks = [video, ToneAudioTrack()] if args.audio else [video]
    lost = asyncio.Event()
    restarts = 0
    sent_before = {"packets": 0, "bytes": 0}  # by the publishers replaced so far

    async def connect() -> WhipPublisher:
        lost.clear()
        publisher = WhipPublisher(
            args.url, args.stream, tracks=tracks, video_codec=args.codec,
            on_state=lambda state: lost.set() if state in ("failed", "closed") else None)
        await publisher.start()
        await publisher.wait_connected(10.0)
        return publisher

    async def video_sent(publisher: WhipPublisher) -> dict:
        for sender in publisher.pc.getSenders():
            for stat in (await sender.getStats()).values():
                if stat.type == "outbound-rtp" and stat.kind == "video":
                    return {"packets": stat.packetsSent, "bytes": stat.bytesSent}
        return {"packets": 0, "bytes": 0}

    async def keep_publishing() -> None:
        nonlocal publisher, restarts
        while True:
            await lost.wait()
            sent = await video_sent(publisher)
            for key in sent_before:
                sent_before[key] += sent[key]
            await publisher.stop()
            restarts += 1
            while True:
                try:
                    publisher = await connect()
                    break
                except Exception as exc:  # the server may be busy: try again
                    print(f"republishing failed: {exc!r}", file=sys.stderr)
                    await asyncio.sleep(0.5)

    async def snapshot() -> dict:
        sent = await video_sent(publisher)
        return {"frames_sent": video.frames_sent, "restarts": restarts,
                "connection": publisher.connection_state,
                "video": {key: sent_before[key] + sent[key] for key in sent}}

    publisher = await connect()
    emit("ready", codec=publisher.codec)
    keeper = asyncio.ensure_future(keep_publishing())
    try:
        await serve_commands(snapshot)
    finally:
        keeper.cancel()
        await publisher.stop()


class CounterLog:
    """Frame counters read by a decoding viewer since the last snapshot."""

    def __init__(self) -> None:
        self.counters: list[int | None] = []

    def on_frame(self, frame, counter: int | None) -> None:
        self.counters.append(counter)

    def take(self) -> dict:
        """Summary of the counters since the last call: did the picture advance in order?"""
        counters, self.counters = self.counters, []
        readable = [c for c in counters if c is not None]
        steps = [(b - a) % 65536 for a, b in zip(readable, readable[1:])]
        return {
            "decoded": len(counters),
            "unreadable": len(counters) - len(readable),
            "first": readable[0] if readable else None,
            "last": readable[-1] if readable else None,
            "in_order": sum(1 for s in steps if s == 1),
            "skipped": sum(s - 1 for s in steps if 1 < s < 32768),  # frames never shown
            "backwards": sum(1 for s in steps if s == 0 or s >= 32768),  # repeats, reorders
        }


async def view(args) -> None:
    from unbroken.client.whep import WhepError, WhepViewer

    logs = [CounterLog() for _ in range(args.count)]
    joined: list[tuple[WhepViewer, CounterLog]] = []  # in order of joining

    async def join(log: CounterLog) -> None:
        """Start a viewer, retrying while the server answers 409 (stream not live yet)."""
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            viewer = WhepViewer(args.url, args.stream, decode=args.decode, audio=args.audio,
                                on_frame=log.on_frame if args.decode else None)
            try:
                joined.append((await viewer.start(), log))
                return
            except WhepError as exc:
                if exc.status != 409 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(min(exc.retry_after or 0.2, 0.2))

    try:
        await asyncio.gather(*(join(log) for log in logs))
        viewers = [viewer for viewer, _ in joined]
        await asyncio.gather(*(v.wait_first_frame(VIEW_TIMEOUT) for v in viewers))
        emit("ready", ttff_ms=[round(v.time_to_first_frame * 1000, 1) for v in viewers],
             codec=viewers[0].codec)

        async def snapshot() -> dict:
            out = []
            for viewer, log in joined:
                entry = {"frames": viewer.frames, "packets": viewer.packets,
                         "bytes": viewer.bytes, "connection": viewer.connection_state}
                if args.decode:
                    entry["counters"] = log.take()
                out.append(entry)
            return {"viewers": out}

        await serve_commands(snapshot)
    finally:
        await asyncio.gather(*(v.stop() for v, _ in joined), return_exceptions=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("publish")
    p.add_argument("url")
    p.add_argument("stream")
    p.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    p.add_argument("--size", default="640x360")
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--bitrate", type=int, help="pin the encoder bitrate (bit/s)")
    p.add_argument("--audio", action="store_true", help="also send an Opus tone")
    v = sub.add_parser("view")
    v.add_argument("url")
    v.add_argument("stream")
    v.add_argument("--count", type=int, default=1)
    v.add_argument("--decode", action="store_true", help="decode and read frame counters")
    v.add_argument("--audio", action="store_true", help="also receive audio")
    args = parser.parse_args()
    try:
        await (publish(args) if args.role == "publish" else view(args))
    except Exception as exc:  # the harness reads this instead of a traceback
        emit("error", error=f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    asyncio.run(main())
