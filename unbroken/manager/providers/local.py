"""The local provider: `unbroken node` processes on this machine, ports from a range.

The embedded default and what `unbroken up --cluster` uses. Each node registers with
the manager by itself (`--manager`, the node token, the manager's certificate pinned by
fingerprint or CA file).

**Records.** Every node it starts is recorded in the cluster store (table
`provider-local`: node id -> group, role, URL, port, pid, machine, start time, and the
deadline of a stop under way), and, with `state_file`, in a JSON file too. Whoever leads
next — another manager on the same Redis after this one died, or this manager restarted
with the same state file — reads them and *adopts* those nodes: lists them, drains them,
kills them, replaces them. A record goes when its process is gone; one the store lost
(a Redis restart) is written again by the leader that knew it, started or adopted.

**Stopping.** With a drain: `POST /api/v1/drain` with the node token and the leader's
deadline (any manager can, wherever the node runs; `unbroken.protocol.node_admin`), or
SIGTERM (+ SIGCONT) when the node does not answer; SIGKILL when it is still there
`KILL_MARGIN_S` after the deadline — whichever leader lists it then. At once (a faulty
node): SIGKILL. Signals go only to processes on this machine whose command line names
the node id (a reused pid is never signalled); a node on another machine can only be
asked to drain (timeout 0 for "at once").

**Orphans.** Nodes run in a session of their own: a manager that dies, even by SIGKILL,
leaves them serving (its viewers are not cut); the next leader adopts them. They only
die with it if `terminate_all` ends them (what `unbroken up --cluster` does on exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from ..model import NodeRole
from ..store import ClusterStore, StoreError
from .base import NodeProvider, ProvidedNode, ProviderError, ProviderState
from .node_api import NodeDrainer

__all__ = ["LocalProvider", "LocalRecord", "LocalSettings", "TABLE", "machine_id", "parse_port_range",
           "process_is_node"]

log = logging.getLogger("unbroken.manager.providers.local")

TABLE = "provider-local"  # the cluster store's table of the nodes local providers started
KILL_MARGIN_S = 2.0  # after the drain deadline, before SIGKILL
REAP_POLL_S = 0.05
WATCH_S = 1.0  # own children are reaped this often, leading or not


def parse_port_range(text: str) -> range:
    """`9100-9199` as a range (both ends included)."""
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError(f"port range {text!r} is not LOW-HIGH") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"port range {text!r} is out of bounds")
    return range(first, last + 1)


def machine_id() -> str:
    """This machine (and boot): the host name and the kernel's boot id where there is one.
    A recorded pid means something only on the machine that recorded it."""
    boot = ""
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    return f"{socket.gethostname()}/{boot}"


def process_is_node(pid: int, node_id: str) -> bool:
    """The process `pid` runs and is the node `node_id` (its command line says
    `--node-id NODE_ID`; a zombie is not running). Without /proc (not Linux): whether
    the pid exists at all."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        if os.path.isdir("/proc/self"):
            return False  # /proc is there and this pid's is not readable: not ours
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    if state in ([b"Z"], [b"X"]):
        return False
    wanted = node_id.encode()
    return any(a == b"--node-id" and b == wanted for a, b in zip(argv, argv[1:]))


@dataclass
class LocalSettings:
    """How local nodes are started: the manager URL they register with, its node token and
    certificate pin, where they listen, their ports, drain timeout, extra arguments, where
    their logs go ("" = discarded) and the file their records are also kept in ("" = the
    cluster store only)."""

    manager_url: str
    node_token: str
    manager_fingerprint: str = ""
    manager_ca: str = ""
    host: str = "127.0.0.1"
    ports: range = field(default_factory=lambda: range(9100, 9200))
    drain_timeout: float = 5.0
    extra_args: tuple[str, ...] = ()
    log_dir: str = ""
    state_file: str = ""


@dataclass(frozen=True, slots=True)
class LocalRecord:
    """What a local provider records of a node it started: enough for any later leader
    to list it, drain it (its URL) and signal it (its pid, on its machine). `stop_by`:
    the wall-clock deadline of a stop under way (0 = none)."""

    node_id: str
    group: str
    role: str
    url: str
    port: int
    pid: int
    machine: str
    started: float
    stop_by: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LocalRecord:
        data = json.loads(text)
        record = cls(str(data["node_id"]), str(data["group"]), str(data["role"]), str(data["url"]),
                     int(data["port"]), int(data["pid"]), str(data["machine"]), float(data["started"]),
                     float(data.get("stop_by", 0.0)))
        NodeRole(record.role)  # ValueError when unknown
        return record


@dataclass
class _Child:
    record: LocalRecord
    process: subprocess.Popen
    stopping: bool = False


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class LocalProvider(NodeProvider):
    """Owns the node processes this manager process started (`_children`, by node id) and
    what it knows of every local provider's nodes (`_records`, the store's table)."""

    name = "local"

    def __init__(self, settings: LocalSettings, store: ClusterStore | None = None,
                 drainer: NodeDrainer | None = None) -> None:
        self.settings = settings
        self.store = store
        self.drainer = drainer or NodeDrainer(settings.node_token)
        self.machine = machine_id()
        self._children: dict[str, _Child] = {}
        self._records: dict[str, LocalRecord] = {}
        self._stops: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._started = 0
        self._written = ""  # the state file's last content

    # -- records -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the state file's records into the store (a restarted single manager
        adopts its nodes), and keep reaping this process's own children."""
        if self.settings.state_file:
            for record in self._read_state_file():
                if process_is_node(record.pid, record.node_id) or record.machine != self.machine:
                    await self._save(record)
                    log.info("adopting node %s (pid %d) from %s", record.node_id, record.pid,
                             self.settings.state_file)
            self._write_state_file()
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_children(), name="unbroken-local-provider-reaper")

    def _read_state_file(self) -> list[LocalRecord]:
        try:
            with open(self.settings.state_file) as f:
                data = json.load(f)
            return [LocalRecord.from_json(json.dumps(entry)) for entry in data.get("nodes", [])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("state file %s unreadable: %s", self.settings.state_file, e)
            return []

    def _write_state_file(self) -> None:
        path = self.settings.state_file
        if not path:
            return
        text = json.dumps({"nodes": [asdict(r) for r in sorted(self._records.values(), key=lambda r: r.node_id)]},
                          indent=1)
        if text == self._written:
            return
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            temporary = f"{path}.{os.getpid()}.tmp"
            with open(temporary, "w") as f:
                f.write(text)
            os.replace(temporary, path)
            self._written = text
        except OSError as e:
            log.warning("state file %s not written: %s", path, e)

    async def _save(self, record: LocalRecord) -> None:
        self._records[record.node_id] = record
        child = self._children.get(record.node_id)
        if child is not None:
            child.record = record
        if self.store is not None:
            try:
                await self.store.put_entry(TABLE, record.node_id, record.to_json())
            except StoreError as e:
                log.warning("node %s not recorded in the store (%s): another leader could not adopt it",
                            record.node_id, e)
        self._write_state_file()

    async def _forget(self, node_id: str) -> None:
        self._records.pop(node_id, None)
        self._children.pop(node_id, None)
        if self.store is not None:
            with contextlib.suppress(StoreError):
                await self.store.delete_entry(TABLE, node_id)
        self._write_state_file()

    async def _load(self) -> dict[str, LocalRecord]:
        """Every record: the store's (another manager's nodes too), else the last known."""
        if self.store is None:
            return dict(self._records)
        try:
            entries = await self.store.entries(TABLE)
        except StoreError as e:
            log.warning("the store's node records unavailable (%s): using the last known", e)
            return dict(self._records)
        records: dict[str, LocalRecord] = {}
        for node_id, text in entries.items():
            try:
                records[node_id] = LocalRecord.from_json(text)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("malformed record of node %s: %s", node_id, e)
        await self._record_again(records)
        self._records = records
        self._write_state_file()
        return dict(records)

    async def _record_again(self, records: dict[str, LocalRecord | None]) -> None:
        """Write again what the store lost (a Redis restart) of the nodes this provider
        knows alive: its children, and the nodes it adopted (a record only goes with its
        process, or no later leader could stop the node). `records`: what the store has
        (node id → record); the ones written again are added."""
        for node_id, child in self._children.items():
            if node_id not in records and child.process.poll() is None:
                records[node_id] = child.record
                await self._save(child.record)
        for node_id, known in list(self._records.items()):
            if (node_id not in records and node_id not in self._children
                    and self._local(known) and process_is_node(known.pid, node_id)):
                records[node_id] = known
                await self._save(known)

    # -- processes ---------------------------------------------------------------------

    def _local(self, record: LocalRecord) -> bool:
        return record.machine == self.machine

    def _alive(self, record: LocalRecord) -> bool:
        child = self._children.get(record.node_id)
        if child is not None:
            return child.process.poll() is None
        return self._local(record) and process_is_node(record.pid, record.node_id)

    def _signal(self, record: LocalRecord, sig: signal.Signals) -> bool:
        """Signal the node's process if it is ours to signal; True if sent."""
        child = self._children.get(record.node_id)
        try:
            if child is not None:
                if child.process.poll() is not None:
                    return False
                child.process.send_signal(sig)
            elif self._local(record) and process_is_node(record.pid, record.node_id):
                os.kill(record.pid, sig)
            else:
                return False
            if sig is signal.SIGTERM:
                os.kill(record.pid, signal.SIGCONT)  # a stopped process must see it
        except ProcessLookupError:
            return False
        return True

    def _free_port(self) -> int:
        used = {r.port for r in self._records.values() if self._local(r)}
        used |= {c.record.port for c in self._children.values()}
        for port in self.settings.ports:
            if port not in used and _port_free(self.settings.host, port):
                return port
        raise ProviderError(f"no free port in {self.settings.ports.start}-{self.settings.ports.stop - 1}")

    def _command(self, node_id: str, group: str, role: NodeRole, port: int) -> list[str]:
        s = self.settings
        command = [sys.executable, "-m", "unbroken", "node", "--host", s.host, "--port", str(port),
                   "--role", role.value, "--group", group, "--node-id", node_id,
                   "--manager", s.manager_url, "--node-token", s.node_token,
                   "--drain-timeout", str(s.drain_timeout)]
        if s.manager_fingerprint:
            command += ["--manager-fingerprint", s.manager_fingerprint]
        if s.manager_ca:
            command += ["--manager-ca", s.manager_ca]
        return command + list(s.extra_args)

    # -- NodeProvider ------------------------------------------------------------------

    async def start_node(self, group: str, role: NodeRole) -> ProvidedNode:
        await self._load()
        port = self._free_port()
        self._started += 1
        node_id = f"{group}-{role.value}-{port}-{self._started}"
        while node_id in self._records:
            self._started += 1
            node_id = f"{group}-{role.value}-{port}-{self._started}"
        output = subprocess.DEVNULL
        if self.settings.log_dir:
            os.makedirs(self.settings.log_dir, exist_ok=True)
            output = open(os.path.join(self.settings.log_dir, f"{node_id}.log"), "ab")  # noqa: SIM115
        try:
            # a session of its own: the node outlives this manager (see the module's doc)
            process = subprocess.Popen(self._command(node_id, group, role, port), stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            raise ProviderError(f"could not start a node: {e}") from e
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        url = f"http://{self.settings.host}:{port}"
        record = LocalRecord(node_id, group, role.value, url, port, process.pid, self.machine, time.time())
        self._children[node_id] = _Child(record, process)
        await self._save(record)
        log.info("started node %s (%s) pid %d", node_id, url, process.pid)
        return self._provided(record, ProviderState.STARTING)

    def _provided(self, record: LocalRecord, state: ProviderState) -> ProvidedNode:
        detail = f"pid {record.pid}"
        if record.node_id not in self._children:
            detail += " (adopted)" if self._local(record) else f" on {record.machine.split('/')[0]} (adopted)"
        return ProvidedNode(record.node_id, record.group, NodeRole(record.role), record.url, state, detail)

    async def stop_node(self, node_id: str, drain_s: float) -> None:
        record = self._records.get(node_id) or (await self._load()).get(node_id)
        if record is None:
            raise ProviderError(f"no local node {node_id}")
        now = time.time()
        deadline = now + max(drain_s, 0.0)
        record = replace(record, stop_by=min(record.stop_by or deadline, deadline))
        child = self._children.get(node_id)
        if child is not None:
            child.stopping = True
        await self._save(record)  # a later leader enforces this deadline if this one goes
        local = self._local(record)
        if drain_s <= 0:
            if not self._signal(record, signal.SIGKILL) and not local:
                await self.drainer.drain(record.url, 0)
            how = "SIGKILL" if local else "drain request (0 s)"
        elif await self.drainer.drain(record.url, drain_s):
            how = f"drain request ({drain_s:g} s)"
        elif self._signal(record, signal.SIGTERM):
            how = "SIGTERM"
        else:
            how = "nothing (unreachable, not on this machine)"
        log.info("stopping node %s: %s", node_id, how)
        if local:
            task = asyncio.create_task(self._reap(record, max(drain_s, 0.0) + KILL_MARGIN_S if drain_s > 0 else 1.0))
            self._stops.add(task)
            task.add_done_callback(self._stops.discard)

    async def _reap(self, record: LocalRecord, deadline_s: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        while self._alive(record) and loop.time() < until:
            await asyncio.sleep(REAP_POLL_S)
        if self._alive(record):
            log.warning("node %s did not exit within %.1f s: SIGKILL", record.node_id, deadline_s)
            self._signal(record, signal.SIGKILL)
            for _ in range(100):
                if not self._alive(record):
                    break
                await asyncio.sleep(REAP_POLL_S)
        if not self._alive(record):
            await self._forget(record.node_id)

    def pid(self, node_id: str) -> int | None:
        """The node's process id (tests and the chaos benchmark signal it)."""
        record = self._records.get(node_id)
        return None if record is None else record.pid

    async def list_nodes(self) -> list[ProvidedNode]:
        records = await self._load()
        out = []
        now = time.time()
        for node_id, record in sorted(records.items()):
            child = self._children.get(node_id)
            overdue = bool(record.stop_by) and now > record.stop_by + KILL_MARGIN_S
            if self._local(record):
                if not self._alive(record):
                    await self._forget(node_id)
                    continue
                if overdue:  # the leader that stopped it went before its deadline
                    log.warning("node %s still there after its stop deadline: SIGKILL", node_id)
                    self._signal(record, signal.SIGKILL)
            elif overdue:
                await self._forget(node_id)  # not ours to see: its stop is long over
                continue
            stopping = bool(record.stop_by) or (child is not None and child.stopping)
            out.append(self._provided(record, ProviderState.STOPPING if stopping else ProviderState.RUNNING))
        return out

    async def _watch_children(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            for node_id, child in list(self._children.items()):
                if child.process.poll() is not None:  # reaped: no zombie while not leading
                    await self._forget(node_id)
            if self.store is not None and self._children:
                # leading or not: a Redis restart must not lose our nodes' records before
                # the next leader reads them (this manager may die right after)
                try:
                    entries = await self.store.entries(TABLE)
                except StoreError:
                    continue
                if any(node_id not in entries for node_id in self._children):
                    await self._record_again(dict.fromkeys(entries))

    async def close(self) -> None:
        """Stop reaping (the nodes keep running: `terminate_all` ends them)."""
        tasks = list(self._stops) + ([self._watch] if self._watch else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watch = None
        await self.drainer.close()

    async def terminate_all(self, drain_s: float = 1.0) -> None:
        """End every node this process started (SIGTERM, then SIGKILL after `drain_s`)."""
        children = list(self._children.values())
        for child in children:
            self._signal(child.record, signal.SIGTERM)
        await asyncio.gather(*(self._reap(c.record, drain_s + KILL_MARGIN_S) for c in children))
        for child in children:
            await self._forget(child.record.node_id)
