"""Real network faults for tests and benchmarks: network namespaces joined to the root
namespace by veth pairs, silent path loss, and moving a namespace's default route.

Needs root (CAP_NET_ADMIN) and the `ip` and `tc` binaries; `unavailable()` says why
not when they are missing. Everything lives on 10.201.N.0/24 subnets of this machine:
the root end of a link is 10.201.N.1, the namespace end 10.201.N.2.

Silent loss: `tc qdisc ... root pfifo limit 0` on both ends of a link. A FIFO that
holds zero packets (and so may not be bypassed) drops every packet it is given,
silently: no RST, no ICMP, no link or route change. (This kernel has no sch_netem
and no tc actions, so `netem loss 100%` and `matchall action drop` are not an option.)

Random loss (`Link.lose(percent)`): an htb root whose second class ends in that same
zero-length FIFO, and a classic-BPF classifier (`cls_bpf`) that sends a packet there when
a random 32-bit number (`ld rand`) is below `percent` of the range: every packet is
dropped with that probability, independently, both directions. `loss_unavailable()`
says why not when the kernel lacks htb or cls_bpf.

A client runs in a namespace as a subprocess (`CliClient`, `python -m unbroken play|publish
--json`); its JSON event lines are collected in `events`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREFIX = "10.201"
LOG_DIR = Path(os.environ.get("UNBROKEN_NETNS_LOGS", "/tmp/unbroken-netns"))

_unavailable: str | None = None
_checked = False


class NetnsError(RuntimeError):
    pass


def run(*cmd: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run a command; on failure raise NetnsError with its stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
    return done


def unavailable() -> str | None:
    """None when namespaces, veth pairs and the dropping qdisc all work here; else why not."""
    global _unavailable, _checked
    if _checked:
        return _unavailable
    _checked = True
    if os.geteuid() != 0:
        _unavailable = "network namespaces need root (CAP_NET_ADMIN)"
    elif not (shutil.which("ip") and shutil.which("tc")):
        _unavailable = "the ip and tc binaries (iproute2) are not installed"
    else:
        name = f"ubprobe{os.getpid() % 100000}"
        try:
            run("ip", "netns", "add", name)
        except NetnsError as exc:
            _unavailable = f"`ip netns add` is not permitted here: {exc}"
            return _unavailable
        try:
            run("ip", "-n", name, "link", "add", "pa", "type", "veth", "peer", "name", "pb")
            run("ip", "-n", name, "link", "set", "pa", "up")
            run("tc", "-n", name, "qdisc", "add", "dev", "pa", "root", "pfifo", "limit", "0")
        except NetnsError as exc:
            _unavailable = f"veth pairs or tc qdiscs do not work here: {exc}"
        finally:
            run("ip", "netns", "del", name, check=False)
    return _unavailable


_loss_checked: dict[str, str | None] = {}


def loss_unavailable() -> str | None:
    """None when `Link.lose()` works here (namespaces, htb, cls_bpf); else why not."""
    if "reason" in _loss_checked:
        return _loss_checked["reason"]
    reason = unavailable()
    if reason is None:
        name = f"ublprobe{os.getpid() % 100000}"
        try:
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "add", "pa", "type", "veth", "peer", "name", "pb")
            for cmd in _loss_commands(["tc", "-n", name], "pa", 10.0):
                run(*cmd)
        except NetnsError as exc:
            reason = f"random loss (htb + cls_bpf) does not work here: {exc}"
        finally:
            run("ip", "netns", "del", name, check=False)
    _loss_checked["reason"] = reason
    return reason


def _loss_commands(tc: list[str], dev: str, percent: float) -> list[list[str]]:
    """tc commands that drop each packet leaving `dev` with probability `percent` %."""
    threshold = min(2**32 - 1, round(percent / 100 * 2**32))
    # classic BPF: A = random u32; A > threshold -> 0 (no match: class 1:1, sent);
    # else -1 (match: the filter's class 1:2, whose FIFO holds nothing: dropped)
    program = f"4,32 0 0 {2**32 - 0x1000 + 56},37 1 0 {threshold},6 0 0 {2**32 - 1},6 0 0 0"
    return [
        [*tc, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
         "r2q", "100000"],
        [*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit"],
        [*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:2", "htb", "rate", "10gbit"],
        [*tc, "qdisc", "add", "dev", dev, "parent", "1:2", "handle", "12:", "pfifo", "limit", "0"],
        [*tc, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "bpf",
         "bytecode", program, "flowid", "1:2"],
    ]


def _udp_block_commands(tc: list[str], dev: str) -> list[list[str]]:
    """tc commands that drop every UDP packet leaving `dev` (an Ethernet device) and
    let everything else (TCP: HTTP, server-sent events) through."""
    # classic BPF: A = byte 23 (14-byte Ethernet header + the IPv4 protocol field);
    # A == 17 (UDP) -> -1 (match: class 1:2, whose FIFO holds nothing: dropped); else 0
    program = "4,48 0 0 23,21 0 1 17,6 0 0 4294967295,6 0 0 0"
    return _loss_commands(tc, dev, 0)[:-1] + [
        [*tc, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "bpf",
         "bytecode", program, "flowid", "1:2"]]


def _used_subnets() -> set[int]:
    out = run("ip", "-4", "-o", "addr", "show").stdout
    return {int(m) for m in re.findall(rf"inet {re.escape(PREFIX)}\.(\d+)\.", out)}


_taken: set[int] = set()


def allocate_subnet() -> int:
    """A third octet N whose 10.201.N.0/24 is not in use in the root namespace."""
    used = _used_subnets() | _taken
    free = [n for n in range(2, 250) if n not in used]
    if not free:
        raise NetnsError(f"no free {PREFIX}.N.0/24 subnet left")
    n = random.choice(free)
    _taken.add(n)
    return n


@dataclass
class Link:
    """A veth pair: `root_if` (root namespace, `root_ip`) ↔ `ns_if` (namespace, `ns_ip`)."""

    ns: "Netns"
    root_if: str
    ns_if: str
    subnet: int

    @property
    def root_ip(self) -> str:
        return f"{PREFIX}.{self.subnet}.1"

    @property
    def ns_ip(self) -> str:
        return f"{PREFIX}.{self.subnet}.2"

    def block(self) -> None:
        """Silent loss on this path: every packet dropped, both directions, nothing else
        changes (no link, address or route event, no RST or ICMP)."""
        procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE) for cmd in (
            ["tc", "qdisc", "replace", "dev", self.root_if, "root", "pfifo", "limit", "0"],
            ["tc", "-n", self.ns.name, "qdisc", "replace", "dev", self.ns_if, "root",
             "pfifo", "limit", "0"])]
        for proc in procs:
            if proc.wait(10) != 0:
                raise NetnsError(f"tc block failed: {proc.stderr.read().decode().strip()}")

    def lose(self, percent: float) -> None:
        """Random loss on this path: every packet, both directions, is dropped with
        probability `percent` % (see the module's doc); `unblock()` ends it."""
        for tc, dev in ((["tc"], self.root_if), (["tc", "-n", self.ns.name], self.ns_if)):
            run(*tc, "qdisc", "del", "dev", dev, "root", check=False)
            for cmd in _loss_commands(tc, dev, percent):
                run(*cmd)

    def block_udp(self) -> None:
        """Every UDP packet on this path dropped, both directions (WebRTC media, ICE);
        TCP still passes (HTTP, a session's server-sent events): a path where signaling
        lives and media is silently gone. `unblock()` ends it."""
        for tc, dev in ((["tc"], self.root_if), (["tc", "-n", self.ns.name], self.ns_if)):
            run(*tc, "qdisc", "del", "dev", dev, "root", check=False)
            for cmd in _udp_block_commands(tc, dev):
                run(*cmd)

    def unblock(self) -> None:
        """The path works again (the dropping qdiscs, or the loss, are removed)."""
        procs = [subprocess.Popen(cmd, stderr=subprocess.DEVNULL) for cmd in (
            ["tc", "qdisc", "del", "dev", self.root_if, "root"],
            ["tc", "-n", self.ns.name, "qdisc", "del", "dev", self.ns_if, "root"])]
        for proc in procs:
            proc.wait(10)

    def dropped(self) -> int:
        """Packets the blocking qdiscs dropped so far (both ends)."""
        total = 0
        for cmd in (["tc", "-s", "qdisc", "show", "dev", self.root_if],
                    ["tc", "-n", self.ns.name, "-s", "qdisc", "show", "dev", self.ns_if]):
            out = run(*cmd, check=False).stdout
            total += sum(int(x) for x in re.findall(r"dropped (\d+)", out))
        return total

    def ns_counters(self) -> dict[str, int]:
        """rx/tx bytes and packets of the namespace end."""
        out = run("ip", "-n", self.ns.name, "-s", "-j", "link", "show", "dev", self.ns_if).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"rx_bytes": stats["rx"]["bytes"], "tx_bytes": stats["tx"]["bytes"],
                "rx_packets": stats["rx"]["packets"], "tx_packets": stats["tx"]["packets"]}


class PathSwitch:
    """`Link.block()`/`unblock()` over netlink sockets opened beforehand (asyncio): about a
    millisecond instead of two `tc` processes, for a harness that must put a path back the
    moment a client notices the loss. `await PathSwitch(link).open()`, `await close()`."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._ends: list = []

    async def open(self) -> "PathSwitch":
        from pyroute2 import AsyncIPRoute

        for netns, ifname in ((None, self.link.root_if), (self.link.ns.name, self.link.ns_if)):
            ipr = AsyncIPRoute(netns=netns) if netns else AsyncIPRoute()
            await ipr.setup_endpoint()  # what `async with AsyncIPRoute()` does on entry
            index = (await ipr.link_lookup(ifname=ifname))[0]
            self._ends.append((ipr, index))
        return self

    async def block(self) -> None:
        for ipr, index in self._ends:
            await ipr.tc("add", "pfifo", index=index, handle=0x10000, limit=0)

    async def unblock(self) -> None:
        for ipr, index in self._ends:
            try:
                await ipr.tc("del", index=index, parent=0xFFFFFFFF)
            except Exception:  # noqa: BLE001 - nothing to remove
                pass

    async def close(self) -> None:
        for ipr, _ in self._ends:
            ipr.close()
        self._ends.clear()


class Netns:
    """A network namespace with veth links to the root namespace; `close()` removes it all
    (also usable as a context manager)."""

    def __init__(self, tag: str = "t") -> None:
        # interface names are at most 15 characters: "ub" + tag + 4 hex + link index + r|n
        self.name = f"ub{tag[:3]}{random.getrandbits(16):04x}"
        self.links: list[Link] = []
        self.root_addresses: list[tuple[str, str, int]] = []  # (cidr, dev, subnet), root ns
        self.created = False

    def __enter__(self) -> "Netns":
        return self.create()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def create(self) -> "Netns":
        run("ip", "netns", "add", self.name)
        self.created = True
        run("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def add_link(self) -> Link:
        index = len(self.links)
        link = Link(self, f"{self.name}{index}r", f"{self.name}{index}n", allocate_subnet())
        run("ip", "link", "add", link.root_if, "type", "veth", "peer", "name", link.ns_if)
        self.links.append(link)
        run("ip", "link", "set", link.ns_if, "netns", self.name)
        run("ip", "addr", "add", f"{link.root_ip}/24", "dev", link.root_if)
        run("ip", "link", "set", link.root_if, "up")
        run("ip", "-n", self.name, "addr", "add", f"{link.ns_ip}/24", "dev", link.ns_if)
        run("ip", "-n", self.name, "link", "set", link.ns_if, "up")
        return link

    def set_default_route(self, link: Link) -> None:
        run("ip", "-n", self.name, "route", "replace", "default", "via", link.root_ip,
            "dev", link.ns_if)

    def remove_address(self, link: Link) -> None:
        run("ip", "-n", self.name, "addr", "del", f"{link.ns_ip}/24", "dev", link.ns_if)

    def add_root_address(self, dev: str = "lo") -> str:
        """A /32 of its own subnet in the root namespace (on lo by default): a node address
        the namespace reaches over whichever link holds its default route."""
        subnet = allocate_subnet()
        address = f"{PREFIX}.{subnet}.1"
        run("ip", "addr", "add", f"{address}/32", "dev", dev)
        self.root_addresses.append((f"{address}/32", dev, subnet))
        return address

    def argv(self, *cmd: str) -> list[str]:
        """`cmd` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def close(self) -> None:
        for cidr, dev, subnet in self.root_addresses:
            run("ip", "addr", "del", cidr, "dev", dev, check=False)
            _taken.discard(subnet)
        self.root_addresses.clear()
        # deleting the root ends removes the pairs now (netns teardown is lazy in the kernel)
        for link in self.links:
            run("ip", "link", "del", link.root_if, check=False)
            _taken.discard(link.subnet)
        self.links.clear()
        if self.created:
            pids = run("ip", "netns", "pids", self.name, check=False).stdout.split()
            for pid in pids:  # nothing of ours may outlive the test in there
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", self.name, check=False)
            self.created = False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def client_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class CliClient:
    """`python -m unbroken play|publish ... --json` in a subprocess (e.g. inside a namespace:
    pass `prefix=ns.argv()`), with its JSON event lines collected in `events`."""

    def __init__(self, command: str, url: str, stream: str, *extra: str,
                 prefix: list[str] | None = None, name: str = "client") -> None:
        self.argv = [*(prefix or []), sys.executable, "-m", "unbroken", command, url, stream,
                     "--json", *extra]
        self.name = name
        self.events: list[dict] = []
        self.proc: asyncio.subprocess.Process | None = None
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{stream}.log"
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None

    async def start(self) -> "CliClient":
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=REPO, env=client_env(), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["seen_at"] = time.time()
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate, timeout: float, since: int = 0) -> tuple[int, dict]:
        """The first event at index >= `since` that satisfies `predicate`: (index, event).
        TimeoutError (with the events seen) after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                for index in range(since, len(self.events)):
                    if predicate(self.events[index]):
                        return index, self.events[index]
                since = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or (self._reader and self._reader.done()):
                    raise TimeoutError(f"{self.name}: no such event after {timeout} s; "
                                       f"events: {self.events[-12:]}; log: {self.log_tail()}")
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    pass

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (a manual stop), SIGKILL if it lingers; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            except ProcessLookupError:
                pass
        if self._reader:
            try:
                await asyncio.wait_for(self._reader, 2)
            except TimeoutError:
                self._reader.cancel()
        return self.proc.returncode


def is_event(kind: str, state: str | None = None, reason=None):
    """A predicate for CliClient.wait_for: kind, optional state and reason (str or set)."""
    def match(event: dict) -> bool:
        if event.get("kind") != kind:
            return False
        if state is not None and event.get("state") != state:
            return False
        if reason is not None:
            reasons = {reason} if isinstance(reason, str) else set(reason)
            return event.get("reason") in reasons
        return True
    return match


class NodeInNetns:
    """An `unbroken node` process inside namespace `ns`, listening on `host` (an address of
    the namespace, e.g. `link.ns_ip`), reachable from the root namespace over the link:
    every packet to and from it crosses the veth, so `link.block()` cuts it silently.
    `ip netns exec` execs the node, so `proc.pid` is the node's own pid (SIGKILL/SIGTERM
    reach it directly). `Netns.close()` kills it too."""

    def __init__(self, ns: Netns, host: str, *args: str, port: int | None = None) -> None:
        self.ns = ns
        self.host = host
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"node-{ns.name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "NodeInNetns":
        argv = self.ns.argv(sys.executable, "-m", "unbroken", "node", "--host", self.host,
                            "--port", str(self.port), *self.args)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=client_env(), stdout=log,
                                         stderr=subprocess.STDOUT)
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NetnsError(f"node in {self.ns.name} exited: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise NetnsError(f"node in {self.ns.name} did not start in {timeout} s: {self.log()}")

    def log(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.kill()
            self.proc.wait(5)
