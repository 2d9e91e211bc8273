"""Clients of the chaos benchmark (``bench/chaos.py``), each group in a process of its own
(in a network namespace when its path is to be made lossy).

    python bench/_chaos_agents.py pub  --streams s0,s1 --managers URL,URL --fingerprint FP --epoch T
    python bench/_chaos_agents.py view --streams s0,s1 --managers URL,URL --fingerprint FP --epoch T
                                       [--per-stream N] [--no-decode]

Every client is an SDK client given both managers (``manager=[...]``): it asks them for a
route before every try and restores by itself. Publishers send the clocked test pattern
(``unbroken.client.testsrc.clocked_source``: the frame counter is the frame slot of a
clock shared by all processes, ``--epoch``), so a decoding viewer's missing counters
are exactly the frames it never got (``unbroken.client.framecode.FrameLog``).

Protocol: one JSON object per line. Out: ``{"who", "kind", ...}`` for every client event
(``ClientEvent.as_dict()`` plus ``mono``, the monotonic time it was emitted), ``ready``,
``error``, and one ``reply`` (with the command's ``id``) per command. In:
``{"cmd": "status"}`` (every client's state, node and media age), ``{"cmd": "frames",
"t0", "t1"}`` (each decoding viewer's pauses and missing frame slots around a fault),
``{"cmd": "produced", "stream", "slots": [[lo, hi], ...]}`` (which of those slots the
publisher produced), ``{"cmd": "stall", "who"}`` (the publisher's video source stops
producing frames), ``{"cmd": "restart", "who"}`` (a new client in place of the old one),
``{"cmd": "stop"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import sys
import time

PAUSE_S = 0.25  # a pause between two decoded frames this long or longer is a picture gap
OUTAGE_FRAMES = 3  # this many frames missing between two decoded ones: an outage, however short
FPS = 30


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class CheckedFrameLog:
    """A FrameLog (``unbroken.client.framecode``) that keeps only counters it can trust.
    A damaged picture can still read as a counter, a wrong one: a counter that does not
    follow the last one kept (more than JUMP frames ahead, or behind it) is held until
    the next one confirms it (a real jump, e.g. after an outage, goes on from there) and
    dropped as misread otherwise. A counter more than LATE_S behind the clock is stale
    (the clocked source's counter is the slot of its clock, at most a few frames ahead of
    it after a pacing burst). Unreadable pictures (no counter) are counted too."""

    JUMP = 90  # 3 s at 30 fps
    CONFIRM = 5
    LATE_S = 3.0

    def __init__(self, epoch: float) -> None:
        from unbroken.client.framecode import FrameLog

        self.log = FrameLog()
        self.epoch = epoch
        self.unreadable = 0
        self.misread: list[tuple[float, int, int]] = []  # (arrival, counter, the one before)
        self.late: list[tuple[float, int, float]] = []  # (arrival, counter, clock slot)
        self.last_decoded = 0.0
        self._held: tuple[float, int] | None = None

    def __call__(self, frame, counter: int | None) -> None:
        from unbroken.client.framecode import MODULUS

        now = time.monotonic()
        self.last_decoded = now
        if counter is None:
            self.unreadable += 1
            return
        expected = (now - self.epoch) * FPS
        slot = counter + round((expected - counter) / MODULUS) * MODULUS
        if slot < expected - self.LATE_S * FPS:
            self.late.append((now, counter, round(expected, 1)))
            return
        counters = self.log.counters
        if self._held is not None:
            held_t, held = self._held
            self._held = None
            if 0 < (counter - held) % MODULUS <= self.CONFIRM:
                counters.append((held_t, held))  # confirmed: a real jump
            else:
                self.misread.append((held_t, held, counters[-1][1] if counters else -1))
        if counters and not 0 < (counter - counters[-1][1]) % MODULUS <= self.JUMP:
            self._held = (now, counter)
            return
        counters.append((now, counter))

    def odd_since(self, t0: float) -> dict:
        return {"misread": [x for x in self.misread if x[0] >= t0][:5],
                "late": [x for x in self.late if x[0] >= t0][:5],
                "n_misread": sum(1 for x in self.misread if x[0] >= t0),
                "n_late": sum(1 for x in self.late if x[0] >= t0)}


def ranges(values) -> list[list[int]]:
    """Sorted integers as [[lo, hi], ...] runs."""
    out: list[list[int]] = []
    for value in sorted(values):
        if out and value == out[-1][1] + 1:
            out[-1][1] = value
        else:
            out.append([value, value])
    return out


class Clients:
    def __init__(self, args) -> None:
        self.args = args
        self.managers = args.managers.split(",")
        self.streams = args.streams.split(",")
        self.clients: dict[str, object] = {}
        self.stream_of: dict[str, str] = {}
        self.logs: dict[str, object] = {}  # decoding viewer -> FrameLog
        self.produced: dict[str, set[int]] = {s: set() for s in self.streams}
        self.frames_seen: dict[str, tuple[int, int, float]] = {}  # load viewer -> (id, frames, at)

    # clients -----------------------------------------------------------------------
    def names(self) -> list[tuple[str, str]]:
        if self.args.role == "pub":
            return [(f"{self.args.name}:{s}", s) for s in self.streams]
        return [(f"{self.args.name}:{s}:{i}", s) for s in self.streams
                for i in range(self.args.per_stream)]

    def make(self, who: str, stream: str):
        from unbroken.client import Publisher, RestoreOptions, Subscriber
        from unbroken.client.testsrc import ClockedPatternTrack

        options = RestoreOptions(network_watch=self.args.network_watch)
        common = dict(manager=self.managers, manager_fingerprint=self.args.fingerprint,
                      options=options, on_event=self.on_event(who))
        self.stream_of[who] = stream
        if self.args.role == "pub":
            produced = self.produced[stream]
            epoch = self.args.epoch

            class Recording(ClockedPatternTrack):
                async def recv(self):
                    frame = await super().recv()
                    produced.add(self.last_index)
                    return frame

            return Publisher(None, stream, source=lambda: [Recording(epoch, fps=FPS)],
                             codec="vp8", **common)
        if self.args.decode:
            log = self.logs[who] = CheckedFrameLog(self.args.epoch)
            return Subscriber(None, stream, on_frame=log, **common)
        return Subscriber(None, stream, decode=False, **common)

    def on_event(self, who: str):
        def handler(event) -> None:
            emit(who=who, mono=time.monotonic(), **event.as_dict())
        return handler

    async def start_all(self) -> None:
        made = {who: self.make(who, stream) for who, stream in self.names()}
        self.clients.update(made)
        await asyncio.gather(*(c.start() for c in made.values()))

    async def restart(self, who: str) -> None:
        old = self.clients[who]
        await asyncio.wait_for(old.stop(), 10)
        self.clients[who] = self.make(who, self.stream_of[who])
        await self.clients[who].start()

    # what the harness asks -----------------------------------------------------------
    def media_age(self, who: str, now: float) -> float | None:
        client = self.clients[who]
        if self.args.role == "pub":
            attempt = client.attempt
            last = getattr(attempt, "last_media_at", None)
            return None if last is None else now - last
        if who in self.logs:
            counters = self.logs[who].log.counters
            return now - counters[-1][0] if counters else None
        viewer = client.viewer
        mark = (id(viewer), getattr(viewer, "frames", 0))
        seen = self.frames_seen.get(who)
        if seen is None or seen[:2] != mark:
            self.frames_seen[who] = (*mark, now)
            return 0.0 if mark[1] else None
        return now - seen[2] if mark[1] else None

    def status(self) -> dict:
        now = time.monotonic()
        out = {}
        for who, client in self.clients.items():
            age = self.media_age(who, now)
            out[who] = {"stream": self.stream_of[who], "state": client.state, "node": client.node,
                        "url": client.url, "age": None if age is None else round(age, 3),
                        "restores": len(client.restores), "done": client.done.is_set()}
        return out

    def frames(self, t0: float, t1: float) -> dict:
        """Per decoding viewer, around a fault at `t0` until `t1` (monotonic): its outages
        after t0 (OUTAGE_FRAMES or more frame slots missing between two decoded frames, or
        a pause of PAUSE_S or more with any missing; a pause with every frame there is only
        a late delivery), when the picture came back for good (the end of the last
        outage), and the frame slots missing between its last frame before t0 and its last
        frame before t1."""
        from unbroken.client.framecode import MODULUS, unwrap_counters

        out = {}
        for who, checked in self.logs.items():
            log = checked.log
            counters = log.counters
            times = [t for t, _ in counters]
            start = max(0, bisect.bisect_left(times, t0) - 1)
            end = bisect.bisect_right(times, t1)
            window = counters[start:end]
            entry = {"stream": self.stream_of[who], "frames": len(window), "pauses": 0,
                     "late_pauses": 0, "longest_pause": None, "back_at": None, "missing": [],
                     "unreadable": checked.unreadable, **checked.odd_since(t0)}
            if len(window) >= 2:
                slots = unwrap_counters([c for _, c in window])
                missing = set(log.missing(start, end))  # the same unwrapped numbering
                # the frames missing between two arrivals: not delivered by any session
                # (during a make-before-break move the two sessions' frames interleave)
                gaps = [(window[i][0], window[i + 1][0],
                         sum(1 for v in range(slots[i] + 1, slots[i + 1]) if v in missing))
                        for i in range(len(window) - 1) if window[i + 1][0] > t0]
                if gaps:
                    entry["longest_pause"] = round(max(b - a for a, b, _ in gaps), 3)
                outages = [(a, b) for a, b, skipped in gaps
                           if skipped >= OUTAGE_FRAMES or (b - a >= PAUSE_S and skipped > 0)]
                entry["pauses"] = len(outages)
                entry["late_pauses"] = sum(1 for a, b, skipped in gaps if b - a >= PAUSE_S and skipped <= 0)
                entry["back_at"] = outages[-1][1] if outages else None
                # absolute slots: the first counter's wrap count from its arrival time
                first_t, first_c = window[0]
                expected = (first_t - self.args.epoch) * FPS
                shift = round((expected - first_c) / MODULUS) * MODULUS
                entry["missing"] = ranges(v + shift for v in missing)
            out[who] = entry
        return out

    def was_produced(self, stream: str, slots: list[list[int]]) -> list[list[int]]:
        produced = self.produced.get(stream, set())
        return ranges(v for lo, hi in slots for v in range(lo, hi + 1) if v in produced)

    async def command(self, message: dict) -> dict:
        cmd = message.get("cmd")
        if cmd == "status":
            return {"clients": self.status()}
        if cmd == "frames":
            return {"viewers": self.frames(message["t0"], message["t1"])}
        if cmd == "produced":
            return {"produced": self.was_produced(message["stream"], message["slots"])}
        if cmd == "stall":
            attempt = self.clients[message["who"]].attempt
            track = attempt.tracks[0]
            track.stall()
            return {"stalled": track.kind, "node": attempt.node}
        if cmd == "restart":
            await self.restart(message["who"])
            return {"restarted": message["who"]}
        raise ValueError(f"unknown command {cmd!r}")

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.clients.values()), return_exceptions=True)


async def serve(args) -> None:
    if args.log_level:  # the SDK's structured log (JSON lines) on stderr
        from unbroken.httpkit.logs import setup_logging

        setup_logging(args.log_level, args.name)
    clients = Clients(args)
    try:
        await clients.start_all()
    except Exception as exc:
        emit(who=args.name, kind="error", error=repr(exc))
        await clients.stop()
        return
    emit(who=args.name, kind="ready", pid=os.getpid())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: set[asyncio.Task] = set()

    async def answer(message: dict) -> None:
        try:
            result = await clients.command(message)
            emit(who=args.name, kind="reply", id=message.get("id"), ok=True, **result)
        except Exception as exc:  # the harness reads it as a failed command
            emit(who=args.name, kind="reply", id=message.get("id"), ok=False, error=repr(exc))

    try:
        while line := await reader.readline():
            message = json.loads(line)
            if message.get("cmd") == "stop":
                break
            task = asyncio.create_task(answer(message))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        for task in pending:
            task.cancel()
        await clients.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["pub", "view"])
    parser.add_argument("--name", required=True)
    parser.add_argument("--streams", required=True)
    parser.add_argument("--managers", required=True)
    parser.add_argument("--fingerprint", required=True)
    parser.add_argument("--epoch", type=float, required=True, help="the counter clock's zero "
                        "(time.monotonic())")
    parser.add_argument("--per-stream", type=int, default=1, help="viewers per stream")
    parser.add_argument("--no-decode", dest="decode", action="store_false",
                        help="viewers count packets only (load)")
    parser.add_argument("--network-watch", action="store_true",
                        help="restore on a network change (in a namespace of its own)")
    parser.add_argument("--log-level", default="info", help="the SDK's log on stderr ('' = none)")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
