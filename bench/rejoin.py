"""Where the time of a burst of re-joins goes: N WHEP viewers joining one node at once.

    python bench/rejoin.py [--viewers 20] [--processes 2] [--rounds 10]
                           [--republish] [--py-spy node|viewers] [--quick]

What bench/restore.py's node_killed row measures, taken apart: one node, one publisher
(test pattern 640x360 at 30 fps, VP8, its own process), and N viewers in `--processes`
processes (like restore.py's load viewers: `decode=False`, the SDK's `wait_live_ms`). In
each round every viewer starts a new WHEP session at the same moment (the `go` command,
as after a node SIGKILL, without the fault detection), waits for its first video frame,
and leaves again. `--republish`: the publisher starts a new session at the same moment too
(as in the restore, where it also moves to the surviving node).

Per viewer, ms after the round's go (wall clock, across processes):
  pc        RTCPeerConnection made (aiortc makes a DTLS certificate per connection)
  offer     createOffer + setLocalDescription done (ICE gathering), the POST goes out
  answer    the node's 201 arrived (with --republish this includes waiting for the stream)
  ice       ICE completed
  dtls      connection "connected" (DTLS handshake done)
  rtp       first video RTP packet
  frame     first video frame (RTP marker bit)
and per round the CPU seconds the node and the viewer processes spent in it (a 2-core
box: 2 s of CPU per second of wall time is all there is), and the node's CPU per join:
its CPU in the round less its forwarding rate (measured for `--idle` s before each
round, the previous round's viewers gone; so it includes forwarding to the new viewers once they play) times
the round's duration.

`--py-spy node|viewers` samples that process (the first viewer process) with py-spy over
all rounds and prints its hottest functions (needs `pip install py-spy`, root or ptrace).

Output: one JSON object on stdout (also bench/results/rejoin.json or rejoin.quick.json);
the table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time

from _harness import (LOGS, REPO, Server, _env, busy_pct, cpu_seconds, machine, machine_busy,
                      percentile, table, write_results)

STREAM = "rejoin-bench"
PHASES = ("pc", "offer", "answer", "ice", "dtls", "rtp", "frame")
WAIT_LIVE_MS = 500  # as the SDK's play attempts
FRAME_TIMEOUT = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def command_lines():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        yield line.decode().split()


# --- agents (child processes) ------------------------------------------------------------

def timed_viewer_class():
    from unbroken.client.whep import WhepViewer

    class TimedViewer(WhepViewer):
        """A WHEP viewer that notes (wall clock) when each step of its join was done."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, on_state=self._state, **kwargs)
            self.marks: dict[str, float] = {}

        def _mark(self, name: str) -> None:
            self.marks.setdefault(name, time.time())

        def _add_transceivers(self, pc) -> None:
            self._mark("pc")
            pc.on("iceconnectionstatechange", lambda: pc.iceConnectionState == "completed"
                  and self._mark("ice"))
            super()._add_transceivers(pc)

        async def _post_offer(self, offer_sdp: str):
            self._mark("offer")
            answer = await super()._post_offer(offer_sdp)
            self._mark("answer")
            return answer

        def _state(self, state: str) -> None:
            if state == "connected":
                self._mark("dtls")

        def _rtp_counter(self, kind: str):
            count = super()._rtp_counter(kind)
            if kind != "video":
                return count

            def counted(packet) -> None:
                self._mark("rtp")
                count(packet)

            return counted

        def _video_frame_arrived(self, counter) -> None:
            self._mark("frame")
            super()._video_frame_arrived(counter)

    return TimedViewer


async def viewers_agent(args) -> None:
    TimedViewer = timed_viewer_class()
    viewers: list = []

    async def join(k: int) -> None:
        deadline = time.monotonic() + FRAME_TIMEOUT
        retried = None
        while True:
            viewer = viewers[k] = TimedViewer(args.url, STREAM, decode=False,
                                              wait_live_ms=WAIT_LIVE_MS)
            try:
                await viewer.start()
                break
            except Exception as exc:  # 409 (not live yet) or a busy node: again, as the SDK
                if time.monotonic() > deadline:
                    raise
                retried = repr(exc)[:200]
                await asyncio.sleep(0.025)
        if retried:
            viewer.marks["error"] = retried
        await viewer.wait_first_frame(FRAME_TIMEOUT)

    emit(event="ready", pid=os.getpid())
    async for words in command_lines():
        if not words or words[0] == "stop":
            break
        if words[0] == "go":
            go = float(words[1])
            await asyncio.sleep(max(0.0, go - time.time()))
            viewers = [None] * args.count
            results = await asyncio.gather(*(join(k) for k in range(args.count)),
                                           return_exceptions=True)
            emit(event="joined", marks=[v.marks for v in viewers if v is not None],
                 errors=[repr(r) for r in results if isinstance(r, BaseException)])
        elif words[0] == "leave":
            await asyncio.gather(*(v.stop() for v in viewers if v), return_exceptions=True)
            viewers = []
            emit(event="left")
    await asyncio.gather(*(v.stop() for v in viewers if v), return_exceptions=True)


async def publisher_agent(args) -> None:
    from unbroken.client.testsrc import TestPatternVideoTrack
    from unbroken.client.whip import WhipPublisher

    video = TestPatternVideoTrack(640, 360, 30)

    async def connect() -> WhipPublisher:
        publisher = WhipPublisher(args.url, STREAM, tracks=[video], video_codec="vp8")
        await publisher.start()
        await publisher.wait_connected(10.0)
        return publisher

    publisher = await connect()
    emit(event="ready", pid=os.getpid())
    async for words in command_lines():
        if not words or words[0] == "stop":
            break
        if words[0] == "go":  # a new session at the go (the old one ends first)
            await asyncio.sleep(max(0.0, float(words[1]) - time.time()))
            await publisher.stop()
            started = time.time()
            publisher = await connect()
            emit(event="republished", started=started, connected=time.time())
    await publisher.stop()


# --- harness ------------------------------------------------------------------------------

class Child:
    def __init__(self, name: str, argv: list[str]) -> None:
        self.name, self.argv = name, argv
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> dict:
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / f"rejoin-{self.name}.log", "ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=REPO, env=_env(), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log_file, limit=1 << 22)
        return await self.expect("ready", 60)

    async def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, event: str, timeout: float) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} exited (see {LOGS}/rejoin-{self.name}.log)")
                message = json.loads(line)
                if message.get("event") == event:
                    return message

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            await self.send("stop")
            await asyncio.wait_for(self.proc.wait(), 10)
        except (TimeoutError, ConnectionError):
            self.proc.kill()
            await self.proc.wait()


def summarize_spy(raw_path: str, top: int = 30) -> str:
    from profile_node import summarize

    return summarize(raw_path) if os.path.getsize(raw_path) else "(no samples)"


async def run(args) -> dict:
    rounds = 3 if args.quick else args.rounds
    server = Server.node()
    if args.profile_node:  # the same node under cProfile (CPU-time clock)
        server.argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "_profiled.py"), args.profile_node,
                       *server.argv[1:]]
    await server.start()
    me = [sys.executable, os.path.abspath(__file__)]
    publisher = Child("pub", [*me, "agent-pub", "--url", server.url])
    counts = [args.viewers // args.processes + (k < args.viewers % args.processes)
              for k in range(args.processes)]
    groups = [Child(f"viewers{k}", [*me, "agent-viewers", "--url", server.url,
                                    "--count", str(n)]) for k, n in enumerate(counts) if n]
    spy = None
    samples: list[dict] = []
    rounds_out: list[dict] = []
    try:
        await publisher.start()
        pids = [(await g.start())["pid"] for g in groups]
        await asyncio.sleep(1.0)
        for i in range(-args.warmup, rounds):  # negative: warm-up rounds, not counted
            if i == 0 and args.py_spy:  # after the warm-up
                target = server.pid if args.py_spy == "node" else pids[0]
                spy = await asyncio.create_subprocess_exec(
                    "py-spy", "record", "--pid", str(target), "--rate", "500", "--format",
                    "raw", "--output", args.spy_out, "--nonblocking",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                await asyncio.sleep(1.0)
            # the node's CPU rate while it only forwards (the viewers of the last round
            # gone): what the round's joins cost is the rest
            idle0, idle_t0 = cpu_seconds(server.pid), time.monotonic()
            await asyncio.sleep(args.idle)
            forwarding_rate = (cpu_seconds(server.pid) - idle0) / (time.monotonic() - idle_t0)
            node_cpu0 = cpu_seconds(server.pid)
            viewers_cpu0 = sum(cpu_seconds(p) for p in pids)
            busy0 = machine_busy()
            go = time.time() + 0.3
            if args.republish:
                await publisher.send(f"go {go}")
            for g in groups:
                await g.send(f"go {go}")
            joined = [await g.expect("joined", 60) for g in groups]
            done = time.time()
            node_cpu = cpu_seconds(server.pid) - node_cpu0
            viewers_cpu = sum(cpu_seconds(p) for p in pids) - viewers_cpu0
            busy = busy_pct(busy0, machine_busy())
            republished = await publisher.expect("republished", 30) if args.republish else None
            errors = [e for j in joined for e in j["errors"]]
            if i < 0:
                log(f"warm-up round: {done - go:.2f} s")
                for g in groups:
                    await g.send("leave")
                for g in groups:
                    await g.expect("left", 30)
                await asyncio.sleep(args.pause)
                continue
            for j in joined:
                for marks in j["marks"]:
                    row = {p: round((marks[p] - go) * 1000, 1) for p in PHASES if p in marks}
                    if "error" in marks:
                        row["retried"] = marks["error"]
                    samples.append(row)
            joins_cpu = node_cpu - forwarding_rate * (done - go + 0.3)
            entry = {"round": i + 1, "wall_s": round(done - go, 3),
                     "node_cpu_s": round(node_cpu, 3),
                     "node_join_cpu_ms": round(1000 * joins_cpu / args.viewers, 2),
                     "viewers_cpu_s": round(viewers_cpu, 3),
                     "machine_busy_pct": busy, "errors": errors}
            if republished:
                entry["publisher_ms"] = round((republished["connected"] - go) * 1000, 1)
            rounds_out.append(entry)
            frames = sorted(s["frame"] for s in samples[-args.viewers:] if "frame" in s)
            if not frames:
                log(f"no frames: {joined}")
            log(f"round {i + 1}: frame p50 {percentile(frames, 50):.0f} ms, max "
                f"{frames[-1] if frames else None} ms; node CPU {node_cpu:.2f} s, viewers "
                f"{viewers_cpu:.2f} s, machine busy {busy}%"
                + (f"; {len(errors)} errors" if errors else ""))
            for g in groups:
                await g.send("leave")
            for g in groups:
                await g.expect("left", 30)
            await asyncio.sleep(args.pause)
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes what it has
            await spy.wait()
        for child in [*groups, publisher]:
            await child.stop()
        await server.stop()
    summary = {}
    for phase in PHASES:
        values = [s[phase] for s in samples if phase in s]
        summary[phase] = {"p50": round(percentile(values, 50), 1) if values else None,
                          "p95": round(percentile(values, 95), 1) if values else None}
    result = {"benchmark": "rejoin", "viewers": args.viewers, "processes": args.processes,
              "rounds": rounds, "republish": args.republish, "machine": machine(),
              "summary": summary,
              "node_cpu_s_per_round": percentile([r["node_cpu_s"] for r in rounds_out], 50),
              "node_cpu_ms_per_join": percentile([r["node_join_cpu_ms"] for r in rounds_out],
                                                 50),
              "viewers_cpu_s_per_round": percentile([r["viewers_cpu_s"] for r in rounds_out],
                                                    50),
              "rounds_detail": rounds_out, "samples": samples}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    for name in ("agent-viewers", "agent-pub"):
        a = sub.add_parser(name)
        a.add_argument("--url", required=True)
        a.add_argument("--count", type=int, default=1)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.5, help="s between rounds")
    parser.add_argument("--idle", type=float, default=1.0,
                        help="s before each round measuring the node's forwarding CPU")
    parser.add_argument("--republish", action="store_true",
                        help="the publisher starts a new session at each go too")
    parser.add_argument("--py-spy", choices=["node", "viewers"])
    parser.add_argument("--spy-out", default="/tmp/rejoin-spy.txt")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first")
    parser.add_argument("--profile-node", metavar="PSTATS",
                        help="run the node under cProfile (CPU clock), stats to this file")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.command == "agent-viewers":
        asyncio.run(viewers_agent(args))
        return
    if args.command == "agent-pub":
        asyncio.run(publisher_agent(args))
        return
    if args.py_spy and shutil.which("py-spy") is None:
        sys.exit("py-spy not found: pip install py-spy")
    result = asyncio.run(run(args))
    path = write_results("rejoin", result, args.quick)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    rows = [{"phase": p, **result["summary"][p]} for p in PHASES]
    log(table([("phase", "ms after go"), ("p50", "p50"), ("p95", "p95")], rows))
    log(f"node CPU per join (p50, its forwarding taken out) "
        f"{result['node_cpu_ms_per_join']:.1f} ms; node CPU per round (p50) "
        f"{result['node_cpu_s_per_round']:.2f} s, viewer processes "
        f"{result['viewers_cpu_s_per_round']:.2f} s; results: {path}")
    if args.py_spy:
        log(f"\npy-spy ({args.py_spy}):\n" + summarize_spy(args.spy_out))


if __name__ == "__main__":
    main()
