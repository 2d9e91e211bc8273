"""Chaos: a cluster under steady load, random faults one after the other, and what each
one cost: restore time, frames lost, clients that never came back, state lost.

    python bench/chaos.py [--quick] [--faults N] [--seed S] [--kinds a,b] [--plan ...]
                          [--scale-outs N] [--no-netns]
                          # full (100 faults) ≈ 10-12 min, quick (10 faults) ≈ 1.5 min

The cluster (real processes, all on this machine): a redis-server; two stream managers
on it (TLS with one certificate, the local provider; the scaling leader starts the
nodes); a TCP balancer in front of the two managers (what a Kubernetes Service is: the
nodes register and heartbeat through it, so a manager's death moves their heartbeats
to the other one); the origin and edge groups (min 2 each: the autoscaler replaces a
faulty node). The load: one SDK Publisher per stream (3; --quick 2; the clocked test
pattern 512x64 at 30 fps, VP8) and two decoding SDK Subscribers per stream, every one
given both managers (`manager=[A, B]`: a route before every try). When network namespaces
work here (root), one publisher and one viewer process each run in a namespace of their
own, joined by a veth pair, so their paths can be made lossy; nodes and managers listen
on an address every namespace reaches.

Faults (`--faults`, 100; `--quick` 10), drawn with `--seed` in shuffled rounds of one of
each kind, so every kind comes up equally often:
  node_kill        SIGKILL of a random serving node with sessions (origin or edge)
  node_stop        SIGSTOP of a random serving node with sessions (alive, stuck: the
                   manager must find it, take it out of routing and replace it)
  node_drain       SIGTERM of a random serving node with sessions (it drains: clients move
                   make-before-break)
  manager_kill     SIGKILL of a random manager; restarted 1 s later (a supervisor would)
  redis_restart    SIGKILL of redis-server, started again 0.5 s later, empty
  path_loss        10 % random loss, both directions, on the publisher's or the viewer's
                   namespace path for 5 s (htb + cls_bpf, `tests/netns_helpers.py`)
  publisher_stall  a random publisher's video source stops producing frames (the SDK finds
                   the zero bitrate and republishes with fresh tracks)
After each fault the harness waits (at most 45 s) for the cluster to be back to steady
state: every client PUBLISHING/PLAYING with media flowing, each group at its minimum
with every node serving, both managers answering and agreeing, one scaling leader, every
stream known with its origin where its publisher is and its viewers on its edges, no
node process left that is not in the cluster. Then 1 s of quiet, then the next fault.

Per fault: `restore` = fault → every affected client's media back (a viewer: its first
frame after its last outage, i.e. 3 or more frames that no session delivered, or a pause
of 250 ms or more with any missing; a publisher: its `restored` event, 0 when the old
session kept feeding: make-before-break), over the clients the fault touched
(`affected`: a restore, a lost frame, or an outage); `steady` = fault → steady state;
`missed` = frame slots a viewer never decoded (the clocked counter's holes), `lost` =
those the publisher did produce (a publisher that lags skips slots; a stalled one
produces none); `never back` = clients still down at the bound; `state lost` = streams,
origins or viewers the managers did not know at the bound; `out of routing` (node_kill,
node_stop) = fault → the node no longer `serving` on the first manager and on both.
If the bound passes, what is wrong is noted, every node's own view is saved
(`diag-N.json`), the harness repairs (stray processes killed, clients restarted, extra
nodes drained) and goes on. Before the faults,
`--scale-outs` times (1; full 3): load viewers join until the edge group's viewers per
node pass `scale_out_viewers`; decision (the leader's log) → the new edge `serving` at
the managers, and → a first decoded frame played from it; then the load leaves and the
group scales back in.

Output: JSON on stdout and in bench/results/chaos.json (chaos.quick.json), every fault in
it; the table on stderr. Logs of every process: /tmp/unbroken-bench/chaos/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from _harness import (LOGS, REPO, _env, busy_pct, free_port, machine, machine_busy, percentile,
                      table, write_results)

sys.path.insert(1, str(REPO / "tests"))

KINDS = ["node_kill", "node_stop", "node_drain", "manager_kill", "redis_restart", "path_loss",
         "publisher_stall"]
LIVE = {"PUBLISHING", "PLAYING"}
FAULT_BOUND_S = 45.0  # fault → steady state, at most
REPAIR_BOUND_S = 30.0  # after the harness repaired what the cluster did not
SETTLE_S = 1.0  # quiet between faults
CHECK_EVERY_S = 0.25
STEADY_PASSES = 2  # checks in a row that must pass
VIEWER_AGE_S = 0.5  # a viewer's last decoded frame at most this old
PUBLISHER_AGE_S = 1.0  # a publisher's sent bytes grew at most this long ago
MANAGER_RESTART_S = 1.0
REDIS_DOWN_S = 0.5
LOSS_PERCENT = 10.0
LOSS_S = 5.0
OUT_POLL_S = 0.05
# the least time after a fault before steady state may be declared: the fault must have
# had time to show (a stall is found after 0.6 s, a stopped node after 2 s)
MIN_OBSERVE_S = {"node_stop": 5.0, "path_loss": LOSS_S + 1.0}
OUT_BOUND_S = 10.0
DRAIN_TIMEOUT_S = 5.0  # the nodes' drain deadline
VIEWERS_PER_STREAM = 2  # one in the root namespace, one in the viewers' namespace
WORK = LOGS / "chaos"
DIAGNOSE_AFTER_S = 10.0  # a fault not restored by then: the nodes' own view is saved
EVENTS = None  # the file every client event is written to (WORK/events.jsonl)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- child processes -----------------------------------------------------------------------

class Child:
    """A child process with its output in a log file (kept across restarts)."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name, self.argv = name, argv
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = WORK / f"{name}.log"

    async def start(self) -> "Child":
        with open(self.log_path, "ab") as out:
            out.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=REPO, env=_env(), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def kill(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self, timeout: float = 8.0) -> None:
        if not self.alive:
            return
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()


class Agent:
    """A client process (`bench/_chaos_agents.py`): its events go to `events`, its replies
    answer `command()`."""

    def __init__(self, name: str, argv: list[str], events: list[dict]) -> None:
        self.name, self.argv, self.events = name, argv, events
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = WORK / f"agent-{name}.log"
        self._replies: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future | None = None
        self._reader: asyncio.Task | None = None

    async def start(self, timeout: float = 60.0) -> None:
        self._ready = asyncio.get_running_loop().create_future()
        with open(self.log_path, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=REPO, env=_env(), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err, start_new_session=True,
                limit=1 << 24)
        self._reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            raise RuntimeError(f"agent {self.name} not ready in {timeout} s "
                               f"(see {self.log_path})") from None

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            kind = message.get("kind")
            if kind == "reply":
                future = self._replies.pop(message.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif kind in ("ready", "error") and message.get("who") == self.name:
                if not self._ready.done():
                    if kind == "ready":
                        self._ready.set_result(message)
                    else:
                        self._ready.set_exception(RuntimeError(
                            f"agent {self.name}: {message.get('error')} (see {self.log_path})"))
            else:
                self.events.append(message)
                if EVENTS is not None:
                    EVENTS.write(line.decode(errors="replace"))
        for future in [*self._replies.values(), self._ready]:
            if future is not None and not future.done():
                future.set_exception(RuntimeError(f"agent {self.name} exited "
                                                  f"(see {self.log_path})"))

    async def command(self, cmd: str, timeout: float = 10.0, **fields) -> dict:
        ident = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._replies[ident] = future
        self.proc.stdin.write(json.dumps({"cmd": cmd, "id": ident, **fields}).encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._replies.pop(ident, None)
        if not reply.get("ok"):
            raise RuntimeError(f"agent {self.name}: {cmd} failed: {reply.get('error')}")
        return reply

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self.proc.stdin.write(b'{"cmd": "stop"}\n')
            await self.proc.stdin.drain()
            await asyncio.wait_for(self.proc.wait(), 15)
        except (TimeoutError, ConnectionError):
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)


def node_processes(token: str) -> dict[str, tuple[int, str]]:
    """This cluster's node processes (by the node token on their command line): node id →
    (pid, process state letter: R/S running or sleeping, T stopped, Z zombie...)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if b"node" not in argv or token.encode() not in argv or b"--node-id" not in argv:
                continue
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        state = stat[stat.rindex(")") + 2]
        node_id = argv[argv.index(b"--node-id") + 1].decode()
        if state != "Z":
            found[node_id] = (int(entry), state)
    return found


def dropped(link) -> int:
    """Packets the loss dropped on both ends of `link` (the root qdisc counts its classes')."""
    import netns_helpers as nh

    total = 0
    for cmd in (["tc", "-s", "qdisc", "show", "dev", link.root_if],
                ["tc", "-n", link.ns.name, "-s", "qdisc", "show", "dev", link.ns_if]):
        out = nh.run(*cmd, check=False).stdout
        counts = [int(x) for x in re.findall(r"dropped (\d+)", out)]
        total += max(counts, default=0)
    return total


# --- the cluster -----------------------------------------------------------------------------

@dataclass
class Manager:
    name: str
    port: int
    child: Child
    restarts: int = 0


@dataclass
class Cluster:
    """Redis, the two managers, the balancer, the namespaces; the nodes are the managers'."""

    token: str = field(default_factory=lambda: f"chaos-{secrets.token_hex(8)}")
    address: str = "127.0.0.1"
    netns_reason: str | None = None
    loss_reason: str | None = None
    namespaces: dict = field(default_factory=dict)  # "pub"/"view" -> (Netns, Link)
    managers: list[Manager] = field(default_factory=list)
    redis: Child | None = None
    redis_port: int = 0
    balancer: Child | None = None
    fingerprint: str = ""
    http: aiohttp.ClientSession | None = None
    origin_min: int = 2
    edge_min: int = 2
    no_netns: bool = False

    @property
    def manager_urls(self) -> list[str]:
        return [f"https://{self.address}:{m.port}" for m in self.managers]

    def make_namespaces(self) -> None:
        import netns_helpers as nh

        self.netns_reason = "--no-netns" if self.no_netns else nh.unavailable()
        if self.netns_reason:
            self.loss_reason = f"network namespaces unavailable: {self.netns_reason}"
            return
        self.loss_reason = nh.loss_unavailable()
        for role in ("pub", "view"):
            ns = nh.Netns(f"c{role[0]}")
            self.namespaces[role] = (ns, None)
            ns.create()
            link = ns.add_link()
            ns.set_default_route(link)
            self.namespaces[role] = (ns, link)
        # the cluster's address: on lo, reached from each namespace over its own link
        self.address = self.namespaces["pub"][0].add_root_address()

    def write_config(self, viewers: int) -> Path:
        base = 21000 + (os.getpid() % 300) * 60
        config = WORK / "manager.toml"
        config.write_text(f"""[manager]
provider = "local"
local_host = "{self.address}"
local_ports = "{base}-{base + 59}"
local_log_dir = "{WORK / 'nodes'}"
local_manager_url = "https://{self.address}:{self.balancer_port}"
local_node_args = "--log-level info"
node_drain_timeout = {DRAIN_TIMEOUT_S}
fault_stall = 2.0
client_requests_per_s = 0.0
client_sessions_per_s = 0.0

[manager.groups.default.origin]
min = {self.origin_min}
max = {self.origin_min + 1}
scale_out_cpu = 0.0
scale_in_cpu = 0.0

[manager.groups.default.edge]
min = {self.edge_min}
max = {self.edge_min + 1}
scale_out_cpu = 0.0
scale_in_cpu = 0.0
scale_out_viewers = {viewers + 0.5}
scale_in_viewers = {viewers / 2 - 0.5}
cooldown_out = 2.0
cooldown_in = 5.0
""")
        return config

    async def start(self, viewers: int) -> None:
        from unbroken.httpkit.tls import client_context
        from unbroken.manager.tls import create_self_signed

        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.make_namespaces()
        cert = create_self_signed(self.address)
        cert_file, key_file = cert.write(WORK / "tls")
        self.fingerprint = cert.fingerprint
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(fingerprint=self.fingerprint), limit=0),
            timeout=aiohttp.ClientTimeout(total=2.0, sock_connect=0.5))
        self.redis_port = free_port()
        self.redis = Child("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--dir", str(WORK)])
        await self.start_redis()
        ports = [free_port(), free_port()]
        self.balancer_port = free_port()
        self.balancer = Child("balancer", [sys.executable, str(REPO / "bench" / "_balancer.py"),
                                           f"{self.address}:{self.balancer_port}",
                                           *(f"{self.address}:{p}" for p in ports)])
        await self.balancer.start()
        config = self.write_config(viewers)
        for name, port in zip("AB", ports):
            argv = [sys.executable, "-m", "unbroken", "manager", "--host", self.address, "--port", str(port),
                    "--node-token", self.token, "--redis", f"redis://127.0.0.1:{self.redis_port}/0",
                    "--tls-cert", str(cert_file), "--tls-key", str(key_file), "--config", str(config),
                    "--log-level", "info"]
            self.managers.append(Manager(name, port, Child(f"manager-{name}", argv)))
        for manager in self.managers:
            await self.start_manager(manager)

    async def start_redis(self) -> None:
        await self.redis.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
                writer.write(b"PING\r\n")
                ok = (await asyncio.wait_for(reader.readline(), 1)).startswith(b"+PONG")
                writer.close()
                if ok:
                    return
            except (OSError, TimeoutError):
                pass
            if time.monotonic() > deadline or not self.redis.alive:
                raise RuntimeError(f"redis-server did not start (see {self.redis.log_path})")
            await asyncio.sleep(0.02)

    async def start_manager(self, manager: Manager, timeout: float = 20.0) -> None:
        await manager.child.start()
        deadline = time.monotonic() + timeout
        url = f"https://{self.address}:{manager.port}"
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with self.http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            if not manager.child.alive:
                raise RuntimeError(f"manager {manager.name} exited (see {manager.child.log_path})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"manager {manager.name} not up in {timeout} s")
            await asyncio.sleep(0.05)

    async def get(self, manager: Manager, path: str) -> dict | None:
        """A manager's JSON answer, or None when it does not answer."""
        try:
            async with self.http.get(f"https://{self.address}:{manager.port}{path}") as resp:
                if resp.status != 200:
                    return None
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None

    async def teardown(self) -> None:
        for manager in self.managers:
            await manager.child.kill()
        self.kill_nodes()
        for child in (self.balancer, self.redis):
            if child is not None:
                await child.kill()
        if self.http is not None:
            await self.http.close()
        for ns, _ in self.namespaces.values():
            ns.close()

    def kill_nodes(self) -> None:
        for _, (pid, _) in node_processes(self.token).items():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)


# --- the benchmark ---------------------------------------------------------------------------

@dataclass
class Check:
    """One look at the cluster: problems by category (empty: steady), and what was seen."""

    problems: dict[str, list[str]]
    nodes: dict[str, dict] = field(default_factory=dict)  # node id -> record (any manager)
    status: dict[str, dict] = field(default_factory=dict)  # client -> status
    at: float = 0.0  # steady since (monotonic): the first check of the last steady streak
    end: float = 0.0  # the last check

    @property
    def steady(self) -> bool:
        return not any(self.problems.values())


class Chaos:
    def __init__(self, args) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.streams = [f"chaos{i}" for i in range(2 if args.quick else 3)]
        self.cluster = Cluster(no_netns=args.no_netns)
        self.events: list[dict] = []
        self.agents: dict[str, Agent] = {}
        self.epoch = time.monotonic()
        self.wall_offset = time.time() - time.monotonic()
        self.expected_viewers = {s: VIEWERS_PER_STREAM for s in self.streams}
        self.faults: list[dict] = []
        self.scale_outs: list[dict] = []
        self.notes: list[str] = []
        self.publisher_agent: dict[str, str] = {}

    # set-up ---------------------------------------------------------------------------
    def agent_argv(self, role: str, name: str, *extra: str, ns=None) -> list[str]:
        prefix = ns.argv() if ns is not None else []
        argv = [*prefix, sys.executable, str(REPO / "bench" / "_chaos_agents.py"), role,
                "--name", name, "--managers", ",".join(self.cluster.manager_urls),
                "--fingerprint", self.cluster.fingerprint, "--epoch", repr(self.epoch), *extra]
        return argv + (["--network-watch"] if ns is not None else [])

    async def start_agent(self, role: str, name: str, streams: list[str], *extra: str,
                          where: str | None = None) -> Agent:
        ns = self.cluster.namespaces.get(where, (None, None))[0] if where else None
        agent = Agent(name, self.agent_argv(role, name, "--streams", ",".join(streams), *extra, ns=ns),
                      self.events)
        self.agents[name] = agent
        await agent.start()
        return agent

    async def setup(self) -> None:
        global EVENTS
        if WORK.exists():
            shutil.rmtree(WORK)
        (WORK / "nodes").mkdir(parents=True)
        EVENTS = open(WORK / "events.jsonl", "w", buffering=1)  # noqa: SIM115 - closed at exit
        viewers = VIEWERS_PER_STREAM * len(self.streams)
        await self.cluster.start(viewers)
        log(f"cluster: redis, managers {', '.join(self.cluster.manager_urls)} (balancer "
            f":{self.cluster.balancer_port}), waiting for 2 origins and 2 edges")
        await self.wait_nodes()
        in_ns = bool(self.cluster.namespaces)
        first, rest = self.streams[:1], self.streams[1:]
        await self.start_agent("pub", "pub-ns" if in_ns else "pub-a", first, where="pub" if in_ns else None)
        await self.start_agent("pub", "pub", rest)
        self.publisher_agent = {first[0]: "pub-ns" if in_ns else "pub-a", **{s: "pub" for s in rest}}
        await self.start_agent("view", "view", self.streams)
        await self.start_agent("view", "view-ns" if in_ns else "view-b", self.streams,
                               where="view" if in_ns else None)
        check = await self.wait_steady(60)
        if not check.steady:
            raise RuntimeError(f"the cluster did not reach steady state: {check.problems}")
        log(f"steady: {len(self.streams)} streams, {sum(self.expected_viewers.values())} viewers "
            f"({'publisher and viewers in namespaces' if in_ns else 'no namespaces: ' + str(self.cluster.netns_reason)})")

    async def wait_nodes(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = await self.cluster.get(self.cluster.managers[0], "/api/v1/nodes")
            nodes = answer["nodes"] if answer else []
            serving = [n for n in nodes if n["state"] == "serving"]
            if (sum(n["role"] == "origin" for n in serving) >= self.cluster.origin_min
                    and sum(n["role"] == "edge" for n in serving) >= self.cluster.edge_min):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the managers' nodes did not come up (see {WORK})")

    async def teardown(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents.values()), return_exceptions=True)
        await self.cluster.teardown()

    # steady state ---------------------------------------------------------------------
    async def status(self) -> dict[str, dict]:
        replies = await asyncio.gather(*(a.command("status") for a in self.agents.values()),
                                       return_exceptions=True)
        out = {}
        for agent, reply in zip(self.agents.values(), replies):
            if isinstance(reply, BaseException):
                out[agent.name] = {"error": repr(reply)}
            else:
                out.update(reply["clients"])
        return out

    async def check(self) -> Check:
        c = self.cluster
        problems: dict[str, list[str]] = {"clients": [], "nodes": [], "state": [], "managers": [],
                                          "stray": []}
        answers = await asyncio.gather(*(asyncio.gather(c.get(m, "/api/v1/nodes"), c.get(m, "/api/v1/streams"),
                                                        c.get(m, "/api/v1/scaling"))
                                         for m in c.managers))
        status = await self.status()
        for who, s in status.items():
            if "error" in s:
                problems["clients"].append(f"{who}: {s['error']}")
                continue
            limit = PUBLISHER_AGE_S if who.startswith("pub") else VIEWER_AGE_S
            if s["state"] not in LIVE or s["age"] is None or s["age"] > limit:
                problems["clients"].append(f"{who}: {s['state']}, media {s['age']} s ago")
        publishers = {s["stream"]: s["node"] for who, s in status.items()
                      if who.startswith("pub") and "stream" in s}
        viewers_on: dict[str, list[str]] = {}
        for who, s in status.items():
            if who.startswith("view") and "stream" in s:
                viewers_on.setdefault(s["stream"], []).append(s["node"])
        all_nodes: dict[str, dict] = {}
        node_sets, leaders = [], 0
        for manager, (nodes, streams, scaling) in zip(c.managers, answers):
            if nodes is None or streams is None or scaling is None:
                problems["managers"].append(f"manager {manager.name} does not answer")
                continue
            leaders += bool(scaling.get("leading"))
            records = {n["node_id"]: n for n in nodes["nodes"]}
            all_nodes.update(records)
            node_sets.append(set(records))
            for role, minimum in (("origin", c.origin_min), ("edge", c.edge_min)):
                mine = [n for n in records.values() if n["role"] == role]
                serving = [n for n in mine if n["state"] == "serving"]
                if len(serving) != minimum or len(mine) != minimum:
                    problems["nodes"].append(
                        f"{manager.name}: {role}s " + ", ".join(f"{n['node_id']} {n['state']}" for n in mine))
            by_name = {s["name"]: s for s in streams["streams"]}
            for stream in self.streams:
                entry = by_name.get(stream)
                if entry is None:
                    problems["state"].append(f"{manager.name}: stream {stream} unknown")
                    continue
                if entry["origin"] is None or entry["origin"] != publishers.get(stream):
                    problems["state"].append(f"{manager.name}: {stream} origin {entry['origin']}, "
                                             f"its publisher is on {publishers.get(stream)}")
                for node in viewers_on.get(stream, []):
                    if node not in entry["edges"]:
                        problems["state"].append(f"{manager.name}: {stream} edges {entry['edges']} "
                                                 f"lack {node} (a viewer is there)")
                counted = sum(n.get("stream_viewers", {}).get(stream, 0) for n in records.values()
                              if n["role"] == "edge")
                if counted != self.expected_viewers[stream]:
                    problems["state"].append(f"{manager.name}: {stream} has {counted} viewers at its "
                                             f"edges, {self.expected_viewers[stream]} play it")
        if node_sets and any(s != node_sets[0] for s in node_sets):
            problems["managers"].append(f"the managers list different nodes: {[sorted(s) for s in node_sets]}")
        if node_sets and leaders != 1:
            problems["managers"].append(f"{leaders} scaling leaders")
        for node_id, (pid, state) in node_processes(c.token).items():
            if node_id not in all_nodes:
                problems["stray"].append(f"node process {node_id} (pid {pid}, state {state}) is in no manager's list")
        return Check(problems, all_nodes, status)

    async def wait_steady(self, bound: float, not_before: float = 0.0, tasks=(),
                          seen: dict[str, float] | None = None) -> Check:
        """Checks every CHECK_EVERY_S until the cluster has been steady for STEADY_PASSES
        checks in a row, no earlier than `not_before` (monotonic: the fault has had time to
        show) and once `tasks` are done (a restart, the end of a loss), or until `bound` s
        passed. The answer's `at` is the first check of the last steady streak; `seen`
        gets, per category, the last time it had a problem."""
        deadline = time.monotonic() + bound
        streak_from: float | None = None
        passes = 0
        while True:
            check = await self.check()
            now = time.monotonic()
            for category, items in check.problems.items():
                if items and seen is not None:
                    seen[category] = now
                    seen.setdefault(f"{category}:first", items[0])  # type: ignore[arg-type]
            if check.steady:
                passes += 1
                streak_from = streak_from if streak_from is not None else now
            else:
                passes, streak_from = 0, None
            done = now >= not_before and all(t.done() for t in tasks)
            if (done and passes >= STEADY_PASSES) or now > deadline:
                check.at = streak_from if check.steady else now
                check.end = now
                return check
            await asyncio.sleep(CHECK_EVERY_S)

    # faults ---------------------------------------------------------------------------
    def plan(self) -> list[str]:
        if self.args.plan:  # an exact sequence (reproducing a finding)
            return self.args.plan.split(",")
        kinds = [k for k in (self.args.kinds.split(",") if self.args.kinds else KINDS)]
        if self.cluster.loss_reason and "path_loss" in kinds:
            kinds.remove("path_loss")
            self.notes.append(f"path_loss skipped: {self.cluster.loss_reason}")
        count = self.args.faults if self.args.faults is not None else (10 if self.args.quick else 100)
        plan: list[str] = []
        while len(plan) < count:
            block = list(kinds)
            self.rng.shuffle(block)
            plan += block
        return plan[:count]

    async def pick_node(self, target: str | None) -> tuple[str, str, int]:
        """A random serving node with sessions; `target` narrows it: `origin`, `edge`, or
        `origin:STREAM` (where the stream's publisher is), `edge:STREAM` (a viewer's edge)."""
        check = await self.check()
        serving = sorted((n["node_id"], n["role"], n.get("load", {}).get("sessions", 0) > 0)
                         for n in check.nodes.values() if n["state"] == "serving")
        if target:
            role_wanted, _, stream = target.partition(":")
            serving = [n for n in serving if n[1] == role_wanted]
            if stream:
                side = "pub" if role_wanted == "origin" else "view"
                at = {s["node"] for who, s in check.status.items()
                      if who.startswith(side) and s.get("stream") == stream}
                serving = [n for n in serving if n[0] in at]
            if not serving:
                raise RuntimeError(f"no serving node is {target}")
        busy = [n for n in serving if n[2]]  # a node with sessions: where a fault hurts
        node_id, role, _ = self.rng.choice(busy or serving)
        pid = node_processes(self.cluster.token).get(node_id, (None,))[0]
        if pid is None:
            raise RuntimeError(f"no process for node {node_id}")
        return node_id, role, pid

    async def out_of_routing(self, node_id: str, since: float) -> dict:
        """When the node stopped being `serving` on each manager (s after `since`)."""
        c = self.cluster
        out: dict[str, float] = {}
        deadline = since + OUT_BOUND_S
        while len(out) < len(c.managers) and time.monotonic() < deadline:
            answers = await asyncio.gather(*(c.get(m, "/api/v1/nodes") for m in c.managers))
            now = time.monotonic()
            for manager, answer in zip(c.managers, answers):
                if manager.name in out or answer is None:
                    continue
                state = next((n["state"] for n in answer["nodes"] if n["node_id"] == node_id), None)
                if state != "serving":
                    out[manager.name] = now - since
            await asyncio.sleep(OUT_POLL_S)
        result = {name: ms(t) for name, t in out.items()}
        result["first"] = ms(min(out.values())) if out else None
        result["all"] = ms(max(out.values())) if len(out) == len(c.managers) else None
        return result

    async def inject(self, kind: str, record: dict, target: str | None = None
                     ) -> tuple[list[asyncio.Task], list[asyncio.Task]]:
        """Start the fault; returns the tasks that finish it (restarts, the end of a loss)
        and those that watch it (out of routing)."""
        c = self.cluster
        tasks: list[asyncio.Task] = []
        watchers: list[asyncio.Task] = []
        if kind in ("node_kill", "node_stop", "node_drain"):
            node_id, role, pid = await self.pick_node(target)
            record.update(target=node_id, role=role)
            sig = {"node_kill": signal.SIGKILL, "node_stop": signal.SIGSTOP,
                   "node_drain": signal.SIGTERM}[kind]
            record["t"] = time.monotonic()
            os.kill(pid, sig)
            if kind != "node_drain":
                watchers.append(asyncio.create_task(self.out_of_routing(node_id, record["t"])))
        elif kind == "manager_kill":
            leading = [m for m in c.managers if ((await c.get(m, "/api/v1/scaling")) or {}).get("leading")]
            choices = (leading if target == "leader" else [m for m in c.managers if m.name == target]
                       if target else c.managers)
            manager = self.rng.choice(choices)
            scaling = await c.get(manager, "/api/v1/scaling")
            record.update(target=f"manager {manager.name}", leader=bool(scaling and scaling.get("leading")))
            record["t"] = time.monotonic()
            await manager.child.kill()

            async def restart() -> None:
                await asyncio.sleep(MANAGER_RESTART_S)
                await c.start_manager(manager)
                manager.restarts += 1
                record["manager_back_ms"] = ms(time.monotonic() - record["t"])
            tasks.append(asyncio.create_task(restart()))
        elif kind == "redis_restart":
            record.update(target="redis")
            record["t"] = time.monotonic()
            await c.redis.kill()

            async def restart() -> None:
                await asyncio.sleep(REDIS_DOWN_S)
                await c.start_redis()
                record["redis_back_ms"] = ms(time.monotonic() - record["t"])
            tasks.append(asyncio.create_task(restart()))
        elif kind == "path_loss":
            role = target or self.rng.choice(["pub", "view"])
            ns, link = c.namespaces[role]
            record.update(target=f"{'publisher' if role == 'pub' else 'viewers'} path "
                                 f"({link.root_if}, {LOSS_PERCENT:g} % for {LOSS_S:g} s)")
            record["t"] = time.monotonic()
            await asyncio.to_thread(link.lose, LOSS_PERCENT)

            async def heal() -> None:
                await asyncio.sleep(LOSS_S)
                record["dropped_packets"] = await asyncio.to_thread(dropped, link)
                await asyncio.to_thread(link.unblock)
            tasks.append(asyncio.create_task(heal()))
        elif kind == "publisher_stall":
            publishers = []
            for agent in self.agents.values():
                if agent.name.startswith("pub"):
                    publishers += (await agent.command("status"))["clients"]
            publishers.sort()
            if target:
                publishers = [p for p in publishers if p.endswith(f":{target}")]
            who = self.rng.choice(publishers)
            agent = self.agents[who.split(":")[0]]
            record.update(target=who)
            record["t"] = time.monotonic()
            reply = await agent.command("stall", who=who)
            record["node"] = reply.get("node")
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        return tasks, watchers

    async def diagnose(self, index: int, after: float) -> None:
        """After `after` s without steady state: every node's streams and sessions (its own
        view), the managers' view and the clients' status, in WORK/diag-<index>.json."""
        await asyncio.sleep(after)
        check = await self.check()
        dump: dict = {"at": time.monotonic(), "problems": check.problems, "clients": check.status,
                      "managers": {}, "nodes": {}}
        for manager in self.cluster.managers:
            dump["managers"][manager.name] = {
                path: await self.cluster.get(manager, f"/api/v1/{path}") for path in ("nodes", "streams", "scaling")}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for node_id, record in check.nodes.items():
                entry = dump["nodes"][node_id] = {}
                for path in ("streams", "sessions", "streams#1s later"):
                    if path.endswith("later"):
                        await asyncio.sleep(1.0)  # do the counters move?
                    try:
                        async with http.get(f"{record['url']}/api/v1/{path.split('#')[0]}") as resp:
                            entry[path] = await resp.json()
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        entry[path] = repr(exc)
        (WORK / f"diag-{index}.json").write_text(json.dumps(dump, indent=1, default=str))
        log(f"    (not steady after {after:g} s: diagnosis in {WORK / f'diag-{index}.json'})")

    async def repair(self, check: Check, record: dict) -> None:
        """What the cluster did not put right by itself, the harness does (noted), so the
        next fault starts from a steady cluster."""
        done = []
        for node_id, (pid, state) in node_processes(self.cluster.token).items():
            if node_id not in check.nodes:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                done.append(f"killed stray node process {node_id} (state {state})")
        c = self.cluster
        for role, minimum in (("origin", c.origin_min), ("edge", c.edge_min)):
            mine = sorted((n for n in check.nodes.values() if n["role"] == role and n["state"] == "serving"),
                          key=lambda n: n.get("load", {}).get("sessions", 0))
            for extra in [n for n in mine if not n.get("load", {}).get("sessions")][:max(0, len(mine) - minimum)]:
                pid = node_processes(c.token).get(extra["node_id"], (None,))[0]
                if pid is not None:
                    os.kill(pid, signal.SIGTERM)
                    done.append(f"drained {extra['node_id']}, one {role} more than the minimum")
        for who, s in check.status.items():
            if "error" in s or s["state"] not in LIVE or s["age"] is None:
                agent = self.agents[who.split(":")[0]]
                with contextlib.suppress(Exception):
                    await agent.command("restart", who=who, timeout=30)
                    done.append(f"restarted client {who}")
        record["repairs"] = done
        if done:
            log(f"    repairs: {'; '.join(done)}")

    async def run_fault(self, index: int, kind: str) -> dict:
        kind, _, target = kind.partition("@")
        record: dict = {"i": index, "kind": kind}
        mark = len(self.events)
        busy = machine_busy()
        tasks, watchers = await self.inject(kind, record, target or None)
        t_fault = record["t"]
        seen: dict[str, float] = {}
        diagnosis = asyncio.create_task(self.diagnose(index, DIAGNOSE_AFTER_S))
        try:
            check = await self.wait_steady(FAULT_BOUND_S, t_fault + MIN_OBSERVE_S.get(kind, 3.0), tasks, seen)
        finally:
            diagnosis.cancel()
        results = await asyncio.gather(*tasks, *watchers, return_exceptions=True)
        for task_result in results:
            if isinstance(task_result, dict):
                record["out_of_routing_ms"] = task_result
            elif isinstance(task_result, BaseException):
                record.setdefault("errors", []).append(repr(task_result))
        record["steady_ms"] = ms(check.at - t_fault) if check.steady else None
        record["recovered_ms"] = {k: ms(t - t_fault + CHECK_EVERY_S) for k, t in seen.items()
                                  if not k.endswith(":first")}
        record["problems_seen"] = {k.split(":")[0]: v for k, v in seen.items() if k.endswith(":first")}
        record["at_bound"] = {k: v for k, v in check.problems.items() if v}
        await self.measure(record, mark, check.end)
        if record["steady_ms"] is not None and record["restore_ms"] is not None:
            # steady once every client's media is back too (a check may fall between frames)
            record["steady_ms"] = max(record["steady_ms"], record["restore_ms"])
        record["busy_pct"] = busy_pct(busy, machine_busy())
        self.report_line(record)
        if not check.steady:
            await self.repair(check, record)
            again = await self.wait_steady(REPAIR_BOUND_S)
            if not again.steady:
                record["after_repair"] = {k: v for k, v in again.problems.items() if v}
                log(f"    still not steady after repairs: {record['after_repair']}")
        return record

    async def measure(self, record: dict, mark: int, until: float) -> None:
        """Per client: restores, picture pauses, missing and lost frames; the fault's restore
        time over the clients it touched."""
        t_fault = record["t"]
        events = self.events[mark:]
        restored: dict[str, list[dict]] = {}
        for event in events:
            if event.get("kind") == "restored":
                restored.setdefault(event["who"], []).append(event)
        clients: dict[str, dict] = {}
        for who, items in restored.items():
            last = items[-1]
            entry = clients.setdefault(who, {})
            entry.update(restores=len(items), faults_seen=sorted({e.get("reason") for e in items}),
                         gap_ms=last.get("gap_ms"), detect_ms=items[0].get("detect_ms"), node=last.get("node"))
            if who.startswith("pub"):
                seamless = all((e.get("gap_ms") or 0) == 0 for e in items)
                entry["media_back_ms"] = 0.0 if seamless else ms(last["mono"] - t_fault)
        frames = {}
        for name, agent in self.agents.items():
            if name.startswith("view"):
                with contextlib.suppress(Exception):
                    frames.update((await agent.command("frames", t0=t_fault, t1=until, timeout=20))["viewers"])
        missing_by_stream: dict[str, set[tuple[int, int]]] = {}
        for who, f in frames.items():
            missed = sum(hi - lo + 1 for lo, hi in f["missing"])
            if not (missed or f["pauses"] or who in clients):
                continue  # (one that only missed slots the publisher never produced drops out below)
            entry = clients.setdefault(who, {})
            entry.update(missed=missed, pauses=f["pauses"], late_pauses=f["late_pauses"],
                         longest_pause_ms=ms(f["longest_pause"]), missing=f["missing"][:6])
            if f["n_misread"] or f["n_late"]:
                entry.update(misread=f["misread"], stale=f["late"], n_misread=f["n_misread"], n_stale=f["n_late"])
            entry["media_back_ms"] = ms(f["back_at"] - t_fault) if f["back_at"] else 0.0
            missing_by_stream.setdefault(f["stream"], set()).update(map(tuple, f["missing"]))
            entry["_missing"], entry["_stream"] = f["missing"], f["stream"]
        produced: dict[str, set[int]] = {}
        for stream, spans in missing_by_stream.items():
            owner = self.agents.get(self.publisher_agent[stream])
            if owner is None:
                continue
            with contextlib.suppress(Exception):
                reply = await owner.command("produced", stream=stream, slots=[list(s) for s in sorted(spans)])
                produced[stream] = {v for lo, hi in reply["produced"] for v in range(lo, hi + 1)}
        for entry in clients.values():
            spans = entry.pop("_missing", None)
            stream = entry.pop("_stream", None)
            if spans is not None and stream in produced:
                entry["lost"] = sum(1 for lo, hi in spans for v in range(lo, hi + 1) if v in produced[stream])
        # touched: it restored, or lost frames the publisher sent, or its picture paused
        # with frames missing (a pause alone, every frame there, is a late delivery)
        for who in [w for w, e in clients.items()
                    if not (e.get("restores") or e.get("lost") or (e.get("pauses") and e.get("missed")))]:
            e = clients.pop(who)
            record.setdefault("unaffected", {})[who] = {k: e.get(k) for k in ("missed", "pauses", "late_pauses",
                                                                                "longest_pause_ms", "missing")}
        record["clients"] = clients
        backs = [e["media_back_ms"] for e in clients.values() if e.get("media_back_ms") is not None]
        record["affected"] = len(clients)
        record["restore_ms"] = max(backs) if backs else None
        record["frames_missed"] = sum(e.get("missed", 0) for e in clients.values())
        record["frames_lost"] = sum(e.get("lost", 0) for e in clients.values())
        problems = record["at_bound"]
        record["never_back"] = problems.get("clients", [])
        record["state_lost"] = problems.get("state", [])
        record["gave_up"] = [e["who"] for e in events if e.get("kind") == "gave_up"]

    def report_line(self, r: dict) -> None:
        out = r.get("out_of_routing_ms", {}).get("all") if r.get("out_of_routing_ms") else None
        bad = "; ".join(f"{k}: {v[:2]}" for k, v in r["at_bound"].items())
        log(f"  #{r['i']:>3} {r['kind']:<15} {r.get('target', ''):<36} affected {r['affected']:>2}  "
            f"restore {r['restore_ms']} ms  steady {r['steady_ms']} ms  missed {r['frames_missed']} "
            f"(lost {r['frames_lost']})" + (f"  out of routing {out} ms" if out is not None else "")
            + (f"  NOT STEADY: {bad}" if bad else ""))

    # scale-out --------------------------------------------------------------------------
    async def leader_entries(self) -> list[dict]:
        for manager in self.cluster.managers:
            scaling = await self.cluster.get(manager, "/api/v1/scaling")
            if scaling and scaling.get("leading"):
                return scaling["entries"]
        return []

    async def scale_out(self, index: int) -> dict:
        from unbroken.client.whep import WhepViewer

        record: dict = {"i": index}
        load_count = sum(self.expected_viewers.values()) + 2
        started = time.time()
        per_stream = -(-load_count // len(self.streams))
        load = await self.start_agent("view", f"load{index}", self.streams, "--per-stream", str(per_stream),
                                      "--no-decode")
        for stream in self.streams:
            self.expected_viewers[stream] += per_stream
        record["load_viewers"] = per_stream * len(self.streams)
        decision = None
        deadline = time.monotonic() + 30
        while decision is None and time.monotonic() < deadline:
            for entry in await self.leader_entries():
                if (entry.get("kind") == "scale_out" and entry.get("role") == "edge" and entry["t"] >= started
                        and "viewers" in entry.get("reason", "")):
                    decision = entry
            await asyncio.sleep(0.1)
        viewer = None
        try:
            if decision is None:
                record["error"] = "no scale-out decision within 30 s"
                return record
            t_decision = decision["t"] - self.wall_offset
            new_id = decision["nodes"][0]
            record.update(reason=decision["reason"], node=new_id)
            url = None
            while time.monotonic() < t_decision + 30:
                answers = await asyncio.gather(*(self.cluster.get(m, "/api/v1/nodes") for m in self.cluster.managers))
                found = [n for a in answers if a for n in a["nodes"] if n["node_id"] == new_id]
                if any(n["state"] == "serving" for n in found):
                    record["serving_s"] = round(time.monotonic() - t_decision, 3)
                    url = found[0]["url"]
                    break
                await asyncio.sleep(0.02)
            if url is None:
                record["error"] = "the new edge did not serve within 30 s"
                return record
            viewer = WhepViewer(url, self.streams[0], audio=False)
            await viewer.start()
            await viewer.wait_first_frame(10)
            record["media_s"] = round(time.monotonic() - t_decision, 3)
        finally:
            if viewer is not None:
                await viewer.stop()
            await load.stop()
            del self.agents[load.name]
            for stream in self.streams:
                self.expected_viewers[stream] -= per_stream
        back_started = time.monotonic()
        check = await self.wait_steady(60)
        record["scaled_in_s"] = round(time.monotonic() - back_started, 1) if check.steady else None
        if not check.steady:
            record["at_bound"] = {k: v for k, v in check.problems.items() if v}
        log(f"  scale-out {index}: {record.get('reason')}: decision → serving {record.get('serving_s')} s, "
            f"→ first frame from it {record.get('media_s')} s; back to the minimum in "
            f"{record.get('scaled_in_s')} s")
        return record

    # the run ----------------------------------------------------------------------------
    async def run(self) -> dict:
        started = time.monotonic()
        busy = machine_busy()
        await self.setup()
        scale_outs = self.args.scale_outs if self.args.scale_outs is not None else (1 if self.args.quick else 3)
        for i in range(scale_outs):
            self.scale_outs.append(await self.scale_out(i + 1))
        plan = self.plan()
        log(f"{len(plan)} faults, seed {self.args.seed}")
        for i, kind in enumerate(plan, 1):
            self.faults.append(await self.run_fault(i, kind))
            await asyncio.sleep(SETTLE_S)
        return self.results(time.monotonic() - started, busy_pct(busy, machine_busy()))

    def results(self, duration: float, busy: float | None) -> dict:
        rows = []
        groups: dict[str, list[dict]] = {}
        for r in self.faults:
            key = f"{r['kind']} ({r['role']})" if r.get("role") else r["kind"]
            groups.setdefault(key, []).append(r)
            groups.setdefault("all faults", []).append(r)
        for key in sorted(groups, key=lambda k: (k == "all faults", k)):
            items = groups[key]
            restores = [r["restore_ms"] for r in items if r["restore_ms"] is not None]
            steadies = [r["steady_ms"] for r in items if r["steady_ms"] is not None]
            outs = [r["out_of_routing_ms"]["all"] for r in items
                    if r.get("out_of_routing_ms") and r["out_of_routing_ms"].get("all") is not None]
            firsts = [r["out_of_routing_ms"]["first"] for r in items
                      if r.get("out_of_routing_ms") and r["out_of_routing_ms"].get("first") is not None]
            row = {"fault": key, "n": len(items),
                   "affected": sum(r["affected"] for r in items),
                   "restore_p50": percentile(restores, 50), "restore_p95": percentile(restores, 95),
                   "restore_max": max(restores) if restores else None,
                   "steady_p50": percentile(steadies, 50), "steady_max": max(steadies) if steadies else None,
                   "not_steady": sum(r["steady_ms"] is None for r in items),
                   "missed": sum(r["frames_missed"] for r in items),
                   "missed_max": max(r["frames_missed"] for r in items),
                   "lost": sum(r["frames_lost"] for r in items),
                   "never_back": sum(len(r["never_back"]) for r in items),
                   "state_lost": sum(bool(r["state_lost"]) for r in items),
                   "out_first_p50": percentile(firsts, 50),
                   "out_p50": percentile(outs, 50), "out_max": max(outs) if outs else None}
            rows.append({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
        drains = [r for r in self.faults if r["kind"] == "node_drain"]
        outs = [r["out_of_routing_ms"]["all"] for r in self.faults
                if r.get("out_of_routing_ms") and r["out_of_routing_ms"].get("all") is not None]
        serving = [s["serving_s"] for s in self.scale_outs if s.get("serving_s") is not None]
        media = [s["media_s"] for s in self.scale_outs if s.get("media_s") is not None]
        summary = {
            "faults": len(self.faults),
            "steady_after_every_fault": all(r["steady_ms"] is not None for r in self.faults),
            "clients_never_back": sum(len(r["never_back"]) for r in self.faults),
            "faults_with_state_lost": sum(bool(r["state_lost"]) for r in self.faults),
            "frames_missed_per_drain": [r["frames_missed"] for r in drains],
            "frames_lost_per_drain": [r["frames_lost"] for r in drains],
            "out_of_routing_ms": {"n": len(outs), "p50": percentile(outs, 50), "p95": percentile(outs, 95),
                                  "max": max(outs) if outs else None, "target": 3000,
                                  "what": "fault → not serving on both managers"},
            "scale_out_serving_s": {"n": len(serving), "max": max(serving) if serving else None,
                                    "p50": percentile(serving, 50), "target": 3.0},
            "scale_out_media_s": {"n": len(media), "max": max(media) if media else None,
                                  "p50": percentile(media, 50)},
        }
        return {
            "benchmark": "chaos", "quick": self.args.quick, "seed": self.args.seed,
            "duration_s": round(duration, 1), "machine": machine(), "machine_busy_pct": busy,
            "setup": {"streams": len(self.streams), "viewers_per_stream": VIEWERS_PER_STREAM,
                      "origins_min": self.cluster.origin_min, "edges_min": self.cluster.edge_min,
                      "managers": 2, "namespaces": bool(self.cluster.namespaces),
                      "loss": None if self.cluster.loss_reason else f"{LOSS_PERCENT:g} % for {LOSS_S:g} s",
                      "bound_s": FAULT_BOUND_S},
            "summary": summary, "table": rows, "scale_outs": self.scale_outs,
            "manager_restarts": {m.name: m.restarts for m in self.cluster.managers},
            "notes": self.notes, "faults": self.faults,
        }


def print_table(results: dict) -> None:
    columns = [("fault", "fault"), ("n", "n"), ("affected", "clients hit"),
               ("restore_p50", "restore p50 ms"), ("restore_p95", "p95"), ("restore_max", "max"),
               ("steady_p50", "steady p50 ms"), ("steady_max", "max"), ("not_steady", "not steady"),
               ("missed", "frames missed"), ("missed_max", "max/fault"), ("lost", "lost"),
               ("never_back", "never back"), ("state_lost", "state lost"),
               ("out_first_p50", "out of routing, 1st mgr p50 ms"), ("out_p50", "both p50"),
               ("out_max", "max")]
    log("\n" + table(columns, results["table"]))
    s = results["summary"]
    log(f"faults {s['faults']}; steady after every one: {s['steady_after_every_fault']}; clients never "
        f"back: {s['clients_never_back']} (target 0); faults with state lost: {s['faults_with_state_lost']} "
        f"(target 0)")
    log(f"frames missed per drain: {s['frames_missed_per_drain']} (target 0; of them produced by "
        f"the publisher: {s['frames_lost_per_drain']})")
    o, so, sm = s["out_of_routing_ms"], s["scale_out_serving_s"], s["scale_out_media_s"]
    o, so, sm = ({k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()} for d in (o, so, sm))
    log(f"faulty node out of routing (both managers): p50 {o['p50']} ms, p95 {o['p95']} ms, max {o['max']} ms "
        f"(n={o['n']}; target ≤ 3000 ms)")
    log(f"scale-out, decision → new edge serving: p50 {so['p50']} s, max {so['max']} s (n={so['n']}; "
        f"target ≤ 3 s); → first frame from it: p50 {sm['p50']} s, max {sm['max']} s")
    for note in results["notes"]:
        log(f"note: {note}")


CLUSTER: Cluster | None = None  # for the last-resort cleanup


def last_resort_cleanup() -> None:
    """Whatever the teardown left (it was cut short): every process with this run's
    token on its command line, redis and the balancer, the namespaces."""
    c = CLUSTER
    if c is None:
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if c.token.encode() in argv:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), sig)
    for child in (c.redis, c.balancer):
        if child is not None and child.proc is not None and child.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.proc.pid, signal.SIGKILL)
    for ns, _ in c.namespaces.values():
        with contextlib.suppress(Exception):
            ns.close()


async def harness(args) -> int:
    global CLUSTER
    chaos = Chaos(args)
    CLUSTER = chaos.cluster
    results = None
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    stopping: list[str] = []

    def stop(name: str) -> None:  # the first Ctrl-C (or SIGTERM) stops the run; the
        if not stopping:          # teardown then runs to its end, whatever comes next
            stopping.append(name)
            log(f"{name}: stopping")
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        results = await chaos.run()
    except asyncio.CancelledError:
        if not stopping:
            raise
    finally:
        log("teardown")
        await chaos.teardown()
    if stopping:
        log("interrupted (every process of the run was stopped)")
        return 130
    path = write_results("chaos", results, args.quick)
    print(json.dumps({k: v for k, v in results.items() if k != "faults"}, indent=2))
    print_table(results)
    log(f"results: {path}; logs: {WORK}")
    broken = results["summary"]["clients_never_back"] or results["summary"]["faults_with_state_lost"]
    return 1 if broken else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 faults, 2 streams, 1 scale-out")
    parser.add_argument("--faults", type=int, help="faults to inject (default 100; --quick 10)")
    parser.add_argument("--seed", type=int, default=1, help="the random draw of faults and targets")
    parser.add_argument("--kinds", help=f"comma-separated fault kinds (default all: {','.join(KINDS)})")
    parser.add_argument("--plan", help="an exact sequence of faults instead of a random one: "
                        "KIND[@TARGET],... (node faults: @origin, @edge, @origin:STREAM = where the "
                        "stream's publisher is, @edge:STREAM; publisher_stall@STREAM; manager_kill@A|B|leader; "
                        "path_loss@pub|view)")
    parser.add_argument("--no-netns", action="store_true",
                        help="no network namespaces (as without root): path_loss is skipped")
    parser.add_argument("--scale-outs", type=int, help="scale-out rounds before the faults (default 3; --quick 1)")
    args = parser.parse_args()
    if args.kinds:
        unknown = set(args.kinds.split(",")) - set(KINDS)
        if unknown:
            parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    try:
        sys.exit(asyncio.run(harness(args)))
    finally:
        last_resort_cleanup()


if __name__ == "__main__":
    main()
