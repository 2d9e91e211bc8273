"""Restore times per fault class: detect, restore and media gap, p50/p95, against the targets.

    python bench/restore.py [--quick] [--rounds N] [--codec vp8|h264]

Set-up (every part in its own process): two nodes (listening on all addresses), one
publisher (test pattern 640x360 at 30 fps), one decoding subscriber that measures
(it reads the frame counter of every picture), and 20 load viewers (`Subscriber(...,
decode=False)`, in two processes). Every client is an SDK client with auto-restore and
the URL list of both nodes. When network namespaces work here, the publisher and the
measuring subscriber each run in a namespace of their own, joined to the root namespace by
a veth pair (10.201.N.0/24), so their paths can be cut one at a time; the load viewers run in
the root namespace (with the network watcher off: other work on this machine changes root
namespace interfaces, and that must not count as their network change).

Fault classes, `--rounds` each (20; `--quick`: 3):
  node_killed      SIGKILL of the node the clients are on; the other node is up. After the
                   round the killed node is started again, so every round has two nodes.
  publisher_stall  the publisher's video track stops producing frames (bitrate 0):
                   `publisher.attempt.tracks[0].stall()`; the republish makes fresh tracks.
  silent_loss_subscriber / silent_loss_publisher
                   every packet on the measuring subscriber's (publisher's) path is
                   dropped (a zero-length FIFO on both veth ends: no RST, no ICMP, no link
                   change) until that client reports FAILED; then the path works again.

Per fault and client, the SDK's restore report (detect_ms, restore_ms, gap_ms), and
`fault_to_media_ms`: from the fault to media again, the design's definition of a
restore — for the measuring subscriber the first decoded frame after the picture gap
(from its own frame log, also when it kept its session and made no report), for the
others the moment their `restored` event was emitted. `frame_gap_ms` is the longest
pause between two decoded frames around the fault.

Output: one JSON object on stdout (the summary; bench/results/restore.json, or
restore.quick.json with --quick, also has every sample); progress and the table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path

from _harness import (LOGS, REPO, _env, busy_pct, cpu_seconds, machine, machine_busy,
                      percentile, table, write_results)

sys.path.insert(1, str(REPO / "tests"))

LOAD_VIEWERS = 20
LOAD_PROCESSES = 2
STREAM = "restore-bench"
LIVE = {"PLAYING", "PUBLISHING"}
TARGETS = {
    # fault class: [(metric, percentile, limit in ms)], from the design brief
    "node_killed": [("fault_to_media_ms", 50, 300), ("fault_to_media_ms", 95, 600)],
    "publisher_stall": [("fault_to_media_ms", 95, 1200), ("detect_ms", 95, 800)],
    "silent_loss_subscriber": [("fault_to_media_ms", 95, 1500)],
    "silent_loss_publisher": [("fault_to_media_ms", 95, 1500)],
}
GAP_MS = 250  # a pause between decoded frames this long or longer is a picture gap
ROUND_TIMEOUT = 12.0  # s for every client to be back after one fault
SETTLE = 1.0  # s of steady media (no fault, no inactive stream) that ends a round


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- agents (child processes) ----------------------------------------------------------

def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def stdin_lines():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        yield line.decode().split()


def frame_gap(log_: deque, fault_at: float) -> dict | None:
    """The measuring subscriber's picture around `fault_at` (wall clock): the longest pause
    between two decoded frames, how many pauses of GAP_MS or more there were, and when the
    picture came back for good (the first frame after the last such pause)."""
    times = [t for t, _ in log_ if t >= fault_at - 1.0]
    pairs = [(a, b) for a, b in zip(times, times[1:]) if b > fault_at]
    if not pairs:
        return None
    longest = max(pairs, key=lambda p: p[1] - p[0])
    pauses = [(a, b) for a, b in pairs if b - a >= GAP_MS / 1000]
    back = pauses[-1][1] if pauses else pairs[0][1]
    return {"frame_gap_ms": round((longest[1] - longest[0]) * 1000, 1),
            "fault_to_media_ms": round((back - fault_at) * 1000, 1),
            "pauses": len(pauses)}


async def follow_frames(clients: dict, last_frame: dict[str, float]) -> None:
    """When each client last received a video frame (whatever its current session)."""
    seen: dict[str, tuple[int, int]] = {}
    while True:
        now = time.time()
        for who, client in clients.items():
            viewer = getattr(client, "viewer", None)
            mark = (id(viewer), viewer.frames if viewer else 0)
            if viewer is not None and mark != seen.get(who) and mark[1] > 0:
                last_frame[who] = now
            seen[who] = mark
        await asyncio.sleep(0.02)


TIMELINE = ("start", "post", "answer", "connected", "rtp", "frame")


def instrument_sessions() -> None:
    """Note (wall clock) when each WHIP/WHEP session of this process POSTed its offer,
    got the answer, connected (ICE + DTLS), received its first video RTP packet and its
    first video frame: the restore's timeline (`timeline` in the restored events)."""
    from unbroken.client.whep import WhepViewer
    from unbroken.client.whip import OfferAnswerSession

    def mark(session, name: str) -> None:
        marks = session.__dict__.setdefault("bench_marks", {})
        marks.setdefault(name, time.time())

    start = OfferAnswerSession.start
    post_offer = OfferAnswerSession._post_offer
    on_state = OfferAnswerSession._on_connection_state
    rtp_counter = WhepViewer._rtp_counter
    frame_arrived = WhepViewer._video_frame_arrived

    async def _start(self):
        mark(self, "start")
        return await start(self)

    async def _post_offer(self, offer_sdp):
        mark(self, "post")
        answer = await post_offer(self, offer_sdp)
        mark(self, "answer")
        return answer

    def _on_connection_state(self):
        if self.pc.connectionState == "connected":
            mark(self, "connected")
        on_state(self)

    def _rtp_counter(self, kind):
        count = rtp_counter(self, kind)
        if kind != "video":
            return count

        def counted(packet):
            mark(self, "rtp")
            count(packet)

        return counted

    def _video_frame_arrived(self, counter):
        mark(self, "frame")
        frame_arrived(self, counter)

    OfferAnswerSession.start = _start
    OfferAnswerSession._post_offer = _post_offer
    OfferAnswerSession._on_connection_state = _on_connection_state
    WhepViewer._rtp_counter = _rtp_counter
    WhepViewer._video_frame_arrived = _video_frame_arrived


def session_marks(client) -> dict:
    attempt = getattr(client, "attempt", None)
    session = getattr(attempt, "viewer", None) or getattr(attempt, "session", None)
    return dict(getattr(session, "bench_marks", {}))


async def agent(args) -> None:
    if os.environ.get("RESTORE_AGENT_LOG"):  # e.g. info: the SDK's log on the agent's stderr
        import logging

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(created).3f %(name)s %(message)s %(error)s",
                                               defaults={"error": ""}))
        logging.basicConfig(level=os.environ["RESTORE_AGENT_LOG"].upper(), handlers=[handler])
        for noisy in ("aioice", "aiortc", "aiohttp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from unbroken.client.options import RestoreOptions
    from unbroken.client.publisher import Publisher
    from unbroken.client.subscriber import Subscriber

    instrument_sessions()
    options = lambda: RestoreOptions(network_watch=args.network_watch)  # noqa: E731
    clients: dict[str, object] = {}
    frames: deque = deque(maxlen=40_000)

    def on_event(who: str):
        def handle(event) -> None:
            extra = {}
            if event.kind == "restored":
                extra["timeline"] = session_marks(clients[who])
            emit(who=who, **event.as_dict(), **extra)

        return handle

    if args.role == "pub":
        # the default source: the test pattern, 640x360 at 30 fps, and a tone
        clients["pub"] = Publisher(args.urls, args.stream, codec=args.codec,
                                   options=options(), on_event=on_event("pub"))
    elif args.role == "sub":
        clients["sub"] = Subscriber(args.urls, args.stream, options=options(),
                                    on_event=on_event("sub"),
                                    on_frame=lambda f, c: frames.append((time.time(), c)))
    else:
        for i in range(args.count):
            who = f"load{args.first + i}"
            clients[who] = Subscriber(args.urls, args.stream, decode=False, options=options(),
                                      on_event=on_event(who))
    try:
        await asyncio.gather(*(c.start() for c in clients.values()))
    except Exception as exc:
        emit(who=args.name, kind="error", error=repr(exc))
        raise
    emit(who=args.name, kind="ready", pid=os.getpid())
    last_frame: dict[str, float] = {}
    if args.role != "sub":
        watch = asyncio.create_task(follow_frames(clients, last_frame))  # noqa: F841
    async for words in stdin_lines():
        if not words or words[0] == "stop":
            break
        if words[0] == "stall":
            track = clients["pub"].attempt.tracks[0]
            track.stall()
            emit(who="pub", kind="stalled", track=track.kind)
        elif words[0] == "gap":  # once the picture is back: a frame after this command
            asked = time.time()
            deadline = time.monotonic() + 5.0
            while (not frames or frames[-1][0] <= asked) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            emit(who="sub", kind="gap", result=frame_gap(frames, float(words[1])))
        elif words[0] == "fresh":  # how long since the last video frame (the oldest client)
            if args.role == "sub":
                age = time.time() - frames[-1][0] if frames else None
            else:
                now = time.time()
                ages = [now - last_frame.get(who, 0) for who in clients]
                age = max(ages) if ages else None
            emit(who=args.name, kind="fresh", age=None if age is None else round(age, 3))
    await asyncio.gather(*(c.stop() for c in clients.values()), return_exceptions=True)


# --- harness -------------------------------------------------------------------------------

def profiled(name: str) -> list[str]:
    """The interpreter's argv: under cProfile (CPU clock, bench/_profiled.py) with the
    profile in $RESTORE_PROFILE_DIR/<name>.pstats when that is set (and `name` starts
    with $RESTORE_PROFILE_ONLY, if set)."""
    where = os.environ.get("RESTORE_PROFILE_DIR")
    only = os.environ.get("RESTORE_PROFILE_ONLY")  # e.g. "node": only the nodes
    if not where or (only and not name.startswith(only)):
        return [sys.executable]
    os.makedirs(where, exist_ok=True)
    return [sys.executable, str(Path(__file__).resolve().parent / "_profiled.py"),
            os.path.join(where, f"{name}.pstats")]


class Hub:
    """Every agent's JSON lines, in arrival order, with a way to wait for one."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.changed = asyncio.Condition()
        self.state: dict[str, str] = {}  # client → last stream state
        self.url: dict[str, str] = {}  # client → URL of its current session

    async def add(self, event: dict) -> None:
        who, kind = event.get("who"), event.get("kind")
        if kind in ("stream", "restored") and event.get("state"):
            self.state[who] = event["state"]
        if kind in ("session", "restored") and event.get("url"):
            self.url[who] = event["url"]
        async with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    async def wait(self, predicate, timeout: float, since: int = 0) -> tuple[int, dict]:
        deadline = time.monotonic() + timeout
        async with self.changed:
            while True:
                for i in range(since, len(self.events)):
                    if predicate(self.events[i]):
                        return i, self.events[i]
                since = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no such event in {timeout} s; last: "
                                       f"{self.events[-5:]}")
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except TimeoutError:
                    pass

    async def wait_all_live(self, clients: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            down = [c for c in clients if self.state.get(c) not in LIVE]
            if not down:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not live after {timeout} s: {down}")
            await asyncio.sleep(0.05)


class Proc:
    """A child process (node or agent) whose stdout lines, if JSON, go to the hub."""

    def __init__(self, name: str, argv: list[str], hub: Hub | None = None) -> None:
        self.name, self.argv, self.hub = name, argv, hub
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = LOGS / f"restore-{name}.log"
        self._reader: asyncio.Task | None = None

    async def start(self) -> "Proc":
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=REPO, env=_env(), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE if self.hub else log_file,
                stderr=log_file, start_new_session=True, limit=1 << 20)
        if self.hub:
            self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["seen_at"] = time.time()
            await self.hub.add(event)

    async def send(self, command: str) -> None:
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self, timeout: float = 8.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            if self.hub:
                await self.send("stop")
            else:
                self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), timeout)
        except (TimeoutError, ConnectionError, ProcessLookupError):
            self.kill()
            await self.proc.wait()


class Node:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: Proc | None = None
        self.restarts = 0

    async def start(self, timeout: float = 20.0) -> None:
        import aiohttp

        self.proc = await Proc(f"node-{self.port}", [
            *profiled(f"node-{self.port}-{self.restarts}"), "-m", "unbroken", "node", "--host", "0.0.0.0",
            "--port", str(self.port), "--log-level",
            os.environ.get("BENCH_NODE_LOG_LEVEL", "warning")]).start()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while True:
                if self.proc.proc.returncode is not None:
                    raise RuntimeError(f"node {self.port} exited, see {self.proc.log_path}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {self.port} not up after {timeout} s")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.proc.kill()


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.rounds = 3 if args.quick else args.rounds
        self.hub = Hub()
        self.nodes: list[Node] = []
        self.agents: dict[str, Proc] = {}
        self.netns = []
        self.links: dict[str, object] = {}
        self.switches: dict[str, object] = {}
        self.netns_skip: str | None = None
        self.samples: dict[str, list[dict]] = {}
        self.round_figures: list[dict] = []  # per round: the surviving node's CPU seconds
        self.notes: list[str] = []
        self.viewers = args.viewers
        self.clients = ["pub", "sub"] + [f"load{i}" for i in range(self.viewers)]

    # set-up ---------------------------------------------------------------------------
    def urls(self, link=None) -> str:
        host = link.root_ip if link is not None else "127.0.0.1"
        return ",".join(f"http://{host}:{n.port}" for n in self.nodes)

    def make_namespaces(self) -> None:
        import netns_helpers as nh

        self.netns_skip = nh.unavailable()
        if self.netns_skip:
            log(f"silent loss skipped: {self.netns_skip}")
            return
        for role in ("pub", "sub"):
            ns = nh.Netns(f"b{role[0]}")
            self.netns.append(ns)
            ns.create()
            link = ns.add_link()
            ns.set_default_route(link)
            self.links[role] = (ns, link)
            self.switches[role] = nh.PathSwitch(link)  # opened in setup()

    async def start_agent(self, name: str, role: str, *extra: str, link_of: str | None = None,
                          timeout: float = 60.0) -> None:
        ns_link = self.links.get(link_of) if link_of else None
        prefix = ns_link[0].argv() if ns_link else []
        urls = self.urls(ns_link[1] if ns_link else None)
        argv = [*prefix, *profiled(name), str(Path(__file__).resolve()), "agent", role,
                "--urls", urls, "--stream", STREAM, "--name", name, *extra]
        if ns_link:
            argv.append("--network-watch")  # its own namespace: a change there is real
        proc = await Proc(name, argv, self.hub).start()
        self.agents[name] = proc
        ready = asyncio.create_task(self.hub.wait(
            lambda e: e.get("who") == name and e.get("kind") in ("ready", "error"), timeout))
        exited = asyncio.create_task(proc.proc.wait())
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not ready.done():
            ready.cancel()
            raise RuntimeError(f"agent {name} exited, see {proc.log_path}")
        _, event = ready.result()
        if event["kind"] == "error":
            raise RuntimeError(f"agent {name} failed: {event.get('error')} "
                               f"(see {proc.log_path})")

    async def setup(self) -> None:
        from _harness import free_port

        self.make_namespaces()
        for switch in self.switches.values():
            await switch.open()
        self.nodes = [Node(free_port()), Node(free_port())]
        await asyncio.gather(*(n.start() for n in self.nodes))
        await self.start_agent("pub", "pub", "--codec", self.args.codec, link_of="pub")
        counts = [self.viewers // LOAD_PROCESSES + (k < self.viewers % LOAD_PROCESSES)
                  for k in range(LOAD_PROCESSES)]
        await asyncio.gather(*(
            self.start_agent(f"load-{k}", "load", "--count", str(n), "--first",
                             str(sum(counts[:k])))
            for k, n in enumerate(counts) if n))
        await self.start_agent("sub", "sub", link_of="sub")
        await self.steady()

    async def teardown(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents.values()),
                             return_exceptions=True)
        for node in self.nodes:
            if node.proc:
                await node.proc.stop()
        for switch in self.switches.values():
            await switch.close()
        for ns in self.netns:
            ns.close()

    # rounds ---------------------------------------------------------------------------
    async def steady(self, timeout: float = 20.0) -> None:
        """Every client live and the measuring subscriber decoding, then SETTLE seconds
        without a new fault or an inactive stream."""
        deadline = time.monotonic() + timeout
        while True:
            await self.hub.wait_all_live(self.clients, max(0.1, deadline - time.monotonic()))
            mark = len(self.hub.events)
            await asyncio.sleep(SETTLE)
            unsettled = [e for e in self.hub.events[mark:]
                         if (e.get("kind") == "stream" and e.get("state") == "FAILED")
                         or (e.get("kind") == "stream_event" and e.get("reason") == "inactive")]
            age = await self.frame_age()
            if not unsettled and age is not None and age < 0.25:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"clients do not settle: {unsettled[-3:]}, last frame "
                                   f"{age} s ago")

    async def frame_age(self) -> float | None:
        """Seconds since the last video frame of the client that has gone longest without."""
        mark = len(self.hub.events)
        names = [n for n in self.agents if n != "pub"]
        for name in names:
            await self.agents[name].send("fresh")
        ages = []
        for name in names:
            _, event = await self.hub.wait(
                lambda e, n=name: e.get("kind") == "fresh" and e.get("who") == n, 5, mark)
            ages.append(event["age"])
        return None if None in ages else max(ages)

    async def all_media(self, timeout: float = ROUND_TIMEOUT) -> None:
        """Every viewer receives video again (the round's restores are all done)."""
        deadline = time.monotonic() + timeout
        while True:
            age = await self.frame_age()
            if age is not None and age < 0.25:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"a viewer has had no video for {age} s")
            await asyncio.sleep(0.05)

    async def gap(self, fault_at: float) -> dict | None:
        mark = len(self.hub.events)
        await self.agents["sub"].send(f"gap {fault_at}")
        _, event = await self.hub.wait(lambda e: e.get("kind") == "gap", 8, mark)
        return event["result"]

    def collect(self, fault: str, fault_at: float, mark: int, subject: str,
                gap: dict | None, path_back_at: float | None = None) -> None:
        """Samples of one round (the events from `mark` until the clients settled): per
        client its first restore report (the answer to the fault), when its last restore
        brought media back, and the measuring subscriber's picture gap."""
        reports: dict[str, list[dict]] = {}
        for event in self.hub.events[mark:]:
            if event.get("kind") == "restored":
                reports.setdefault(event["who"], []).append(event)
        rows = self.samples.setdefault(fault, [])
        start = len(rows)
        for who, events in reports.items():
            first, last = events[0], events[-1]
            role = "viewers" if who.startswith("load") else ("publisher" if who == "pub"
                                                             else "subscriber")
            row = {"role": role, "client": who, "fault_seen": first.get("fault"),
                   "detect_ms": first.get("detect_ms"), "restore_ms": first.get("restore_ms"),
                   "gap_ms": first.get("gap_ms"), "tries": first.get("tries"),
                   "restores": len(events), "node": last.get("url", "").rsplit(":", 1)[-1],
                   "fault_to_media_ms": round((last["t"] - fault_at) * 1000, 1)}
            restoring = next((e for e in self.hub.events[mark:] if e.get("who") == who
                              and e.get("kind") == "restoring"), None)
            marks = dict(last.get("timeline") or {})
            if restoring:
                marks["detected"] = restoring["t"]
            row["timeline"] = {k: round((v - fault_at) * 1000, 1) for k, v in marks.items()}
            if who == "sub" and gap:
                row.update(frame_gap_ms=gap["frame_gap_ms"], pauses=gap["pauses"],
                           fault_to_media_ms=gap["fault_to_media_ms"])
            rows.append(row)
        if "sub" not in reports and gap:  # kept its session: the picture's gap is the figure
            rows.append({"role": "subscriber", "client": "sub", "fault_seen": None,
                         "kept_session": True, "restores": 0, **gap})
        for who in self.clients:  # load viewers that kept their session (no restore)
            if who.startswith("load") and who not in reports:
                rows.append({"role": "viewers", "client": who, "fault_seen": None,
                             "kept_session": True, "restores": 0})
        if path_back_at is not None:
            blocked = round((path_back_at - fault_at) * 1000, 1)
            for row in rows[start:]:
                row["path_blocked_ms"] = blocked
                if row.get("fault_to_media_ms") is not None:
                    row["path_back_to_media_ms"] = round(row["fault_to_media_ms"] - blocked, 1)
        brief = {w: [e.get("fault") for e in r] for w, r in reports.items()
                 if not w.startswith("load")}
        loads = sum(1 for w in reports if w.startswith("load"))
        figures = self.round_figures[-1] if self.round_figures else {}
        log(f"  {fault}: {subject}; {figures}; restores {brief}, {loads} load viewers restored; "
            f"subscriber picture gap {gap and gap['frame_gap_ms']} ms "
            f"({gap and gap['pauses']} pause(s)), back for good "
            f"{gap and gap['fault_to_media_ms']} ms after the fault")

    async def round_node_killed(self):
        port = int(self.hub.url["sub"].rsplit(":", 1)[1])
        node = next(n for n in self.nodes if n.port == port)
        if int(self.hub.url["pub"].rsplit(":", 1)[1]) != port:
            self.notes.append("node_killed: publisher and subscriber were on different nodes")
        survivor = next(n for n in self.nodes if n is not node)
        cpu0 = cpu_seconds(survivor.proc.proc.pid)
        agents_cpu0 = {name: cpu_seconds(a.proc.pid) for name, a in self.agents.items()}
        busy0 = machine_busy()
        mark = len(self.hub.events)
        fault_at = time.time()
        node.kill()
        try:
            await self.wait_restored(self.clients, mark)
            self.round_figures.append({
                "fault": "node_killed",
                "restored_s": round(time.time() - fault_at, 3),
                "survivor_cpu_s": round(cpu_seconds(survivor.proc.proc.pid) - cpu0, 3),
                "agents_cpu_s": {name: round(cpu_seconds(a.proc.pid) - agents_cpu0[name], 3)
                                 for name, a in self.agents.items()},
                "machine_busy_pct": busy_pct(busy0, machine_busy())})
            await self.all_media()
        finally:
            await node.proc.proc.wait()
            await node.start()  # two nodes again for the next round
            node.restarts += 1
        return fault_at, mark, f"killed node :{port}", None

    async def round_publisher_stall(self):
        mark = len(self.hub.events)
        fault_at = time.time()
        await self.agents["pub"].send("stall")
        await self.wait_restored(["pub"], mark)
        await self.all_media()
        return fault_at, mark, "video track stalled", None

    async def round_silent_loss(self, role: str):
        switch = self.switches[role]
        mark = len(self.hub.events)
        fault_at = time.time()
        await switch.block()
        back_at = None
        try:
            await self.hub.wait(lambda e: e.get("who") == role and e.get("kind") == "stream"
                                and e.get("state") == "FAILED", 5, mark)
        finally:
            await switch.unblock()  # the path is back the moment the client noticed the loss
            back_at = time.time()
        await self.wait_restored([role], mark)
        await self.all_media()
        return fault_at, mark, f"path blocked {round((back_at - fault_at) * 1000)} ms", back_at

    async def wait_restored(self, clients: list[str], mark: int) -> None:
        left = set(clients)
        deadline = time.monotonic() + ROUND_TIMEOUT
        while left:
            try:
                _, event = await self.hub.wait(
                    lambda e: e.get("kind") == "restored" and e.get("who") in left,
                    max(0.05, deadline - time.monotonic()), mark)
            except TimeoutError:
                raise TimeoutError(f"not restored after {ROUND_TIMEOUT} s: "
                                   f"{sorted(left)}") from None
            left.discard(event["who"])

    async def run_phase(self, name: str, round_fn) -> None:
        log(f"{name}: {self.rounds} rounds")
        started = time.monotonic()
        for i in range(self.rounds):
            try:
                fault_at, mark, subject, path_back_at = await round_fn()
                await self.steady()  # late restores still count for this round
                self.collect(name, fault_at, mark, subject, await self.gap(fault_at),
                             path_back_at)
            except TimeoutError as exc:
                self.notes.append(f"{name} round {i + 1}: {exc}")
                log(f"  {name} round {i + 1}: {exc}")
                await self.steady()
        log(f"{name}: {time.monotonic() - started:.0f} s")

    async def run(self) -> dict:
        started = time.monotonic()
        await self.setup()
        log(f"set up in {time.monotonic() - started:.0f} s: 2 nodes, publisher, measuring "
            f"subscriber, {self.viewers} load viewers"
            + ("" if self.netns_skip else " (publisher and subscriber in namespaces)"))
        phases = {
            "node_killed": self.round_node_killed,
            "publisher_stall": self.round_publisher_stall,
            "silent_loss_subscriber": lambda: self.round_silent_loss("sub"),
            "silent_loss_publisher": lambda: self.round_silent_loss("pub"),
        }
        for name, round_fn in phases.items():
            if self.args.faults and name not in self.args.faults.split(","):
                continue
            if name.startswith("silent_loss") and self.netns_skip:
                continue
            await self.run_phase(name, round_fn)
        return self.results(time.monotonic() - started)

    # results ---------------------------------------------------------------------------
    def results(self, duration: float) -> dict:
        summary = []
        for fault, rows in self.samples.items():
            for role in ("publisher", "subscriber", "viewers"):
                mine = [r for r in rows if r["role"] == role]
                if not mine:
                    continue
                entry = {"fault": fault, "role": role, "n": len(mine),
                         "faults_seen": sorted({str(r.get("fault_seen")) for r in mine}),
                         "kept_session": sum(1 for r in mine if r.get("kept_session"))}
                for metric in ("detect_ms", "restore_ms", "gap_ms", "frame_gap_ms",
                               "fault_to_media_ms", "path_back_to_media_ms"):
                    values = [r[metric] for r in mine if r.get(metric) is not None]
                    for p in (50, 95):
                        value = percentile(values, p)
                        entry[f"{metric}_p{p}"] = None if value is None else round(value, 1)
                timeline = {}
                for phase in ("detected", *TIMELINE):
                    values = [r["timeline"][phase] for r in mine
                              if phase in r.get("timeline", {})]
                    if values:
                        timeline[phase] = [round(percentile(values, 50), 1),
                                           round(percentile(values, 95), 1)]
                entry["timeline_ms_p50_p95"] = timeline
                entry["targets"] = self.check(fault, role, entry)
                summary.append(entry)
        skipped = {}
        if self.netns_skip:
            skipped = {"silent_loss_subscriber": self.netns_skip,
                       "silent_loss_publisher": self.netns_skip}
        return {
            "benchmark": "restore", "quick": self.args.quick, "rounds": self.rounds,
            "codec": self.args.codec, "load_viewers": self.viewers,
            "duration_s": round(duration, 1), "machine": machine(),
            "namespaces": not self.netns_skip, "skipped": skipped,
            "node_restarts": sum(n.restarts for n in self.nodes),
            "summary": summary, "notes": self.notes, "rounds_detail": self.round_figures,
            "samples": self.samples,
        }

    @staticmethod
    def check(fault: str, role: str, entry: dict) -> list[dict]:
        checks = []
        for metric, p, limit in TARGETS.get(fault, []):
            if metric == "detect_ms" and role != "publisher":
                continue  # the stall's detection target is the publisher's
            value = entry.get(f"{metric}_p{p}")
            if value is None:
                continue  # e.g. load viewers that kept their session: nothing to check
            checks.append({"metric": f"{metric}_p{p}", "limit": limit, "value": value,
                           "met": value <= limit})
        return checks


def print_table(results: dict) -> None:
    rows = []
    for e in results["summary"]:
        row = dict(e)
        row["class"] = e["fault"]
        row["seen"] = ",".join(f for f in e["faults_seen"] if f != "None") or "-"
        row["target"] = "; ".join(
            f"{c['metric'].replace('_ms', '').replace('fault_to_media', 'media')}"
            f"≤{c['limit']}:{'ok' if c['met'] else 'MISS'}" for c in e["targets"]) or "-"
        rows.append(row)
    columns = [("class", "fault class"), ("role", "role"), ("n", "n"),
               ("kept_session", "kept"), ("seen", "seen as"),
               ("detect_ms_p50", "detect p50"), ("detect_ms_p95", "p95"),
               ("restore_ms_p50", "restore p50"), ("restore_ms_p95", "p95"),
               ("gap_ms_p50", "gap p50"), ("gap_ms_p95", "p95"),
               ("frame_gap_ms_p50", "picture gap p50"), ("frame_gap_ms_p95", "p95"),
               ("fault_to_media_ms_p50", "fault→media p50"), ("fault_to_media_ms_p95", "p95"),
               ("target", "target")]
    log(table(columns, rows))
    phases = ("detected", *TIMELINE)
    timeline_rows = [{"class": e["fault"], "role": e["role"],
                      **{p: "/".join(f"{v:.0f}" for v in e["timeline_ms_p50_p95"][p])
                         for p in phases if p in e.get("timeline_ms_p50_p95", {})}}
                     for e in results["summary"] if e.get("timeline_ms_p50_p95")]
    if timeline_rows:
        log("\nrestore timeline, ms after the fault (p50/p95; the last restore's session): "
            "detected = the client's restoring event, start = the session's start (the attempt "
            "that succeeded), post = its offer POSTed, answer, "
            "connected = ICE + DTLS, rtp = first video packet, frame = first video frame")
        log(table([("class", "fault class"), ("role", "role")]
                  + [(p, p) for p in phases], timeline_rows))
    for fault, reason in results["skipped"].items():
        log(f"{fault}: skipped ({reason})")
    for note in results["notes"]:
        log(f"note: {note}")


async def harness(args) -> int:
    bench = Bench(args)
    try:
        results = await bench.run()
    finally:
        await bench.teardown()
    path = write_results("restore", results, args.quick)
    # stdout: everything but the per-fault samples (those are in the results file)
    print(json.dumps({k: v for k, v in results.items() if k != "samples"}, indent=2))
    print_table(results)
    log(f"results: {path}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    a = sub.add_parser("agent", help="(internal) one role in a child process")
    a.add_argument("role", choices=["pub", "sub", "load"])
    a.add_argument("--urls", required=True)
    a.add_argument("--stream", required=True)
    a.add_argument("--codec", default="vp8")
    a.add_argument("--count", type=int, default=1)
    a.add_argument("--first", type=int, default=0)
    a.add_argument("--network-watch", action="store_true")
    a.add_argument("--name", default="agent")
    parser.add_argument("--quick", action="store_true", help="3 rounds per fault class")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per fault class")
    parser.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    parser.add_argument("--viewers", type=int, default=LOAD_VIEWERS,
                        help=f"load viewers (default {LOAD_VIEWERS})")
    parser.add_argument("--faults", help="comma-separated fault classes to run (default all)")
    args = parser.parse_args()
    if args.command == "agent":
        asyncio.run(agent(args))
    else:
        sys.exit(asyncio.run(harness(args)))


if __name__ == "__main__":
    main()
