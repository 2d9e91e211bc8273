"""Real network faults on real paths (network namespaces, no mocks).

The client under test runs inside a namespace as `python -m unbroken play|publish --json`;
the node runs in the root namespace; the other side of the stream is an in-process SDK
client in the root namespace (its path to the node is local, so a fault on the veth
touches only the client under test).

- silent path loss: every packet on the namespace's only path is dropped (a zero-length
  FIFO on both veth ends: no RST, no ICMP, no link or route change) → the client reports
  FAILED (missing_pings / media_silence) within about a second; once the path is back it
  restores by itself.
- network change: the namespace has two links; the node's address (a /32 on the root
  namespace's lo) is reached over whichever holds the default route. Moving the default
  route to link 2 and taking link 1's address away → `restored` with fault
  `network_change`, and media flows over link 2.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import netns_helpers as nh  # noqa: E402

from unbroken.client.options import RestoreOptions  # noqa: E402
from unbroken.client.publisher import Publisher  # noqa: E402
from unbroken.client.subscriber import Subscriber  # noqa: E402

# aggressive but realistic knobs (media silence stays at its default, 700 ms)
KNOBS = ["--ping-period-ms", "250", "--missing-pings", "3"]
SILENT_FAULTS = {"missing_pings", "media_silence"}
DETECT_LIMIT = 1.3  # s from the path going silent to FAILED ("about a second")


@pytest.fixture
async def clients():
    """CLI clients started by a test; stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[nh.CliClient] = []

    async def start(*args, **kwargs) -> nh.CliClient:
        client = nh.CliClient(*args, **kwargs)
        started.append(client)
        return await client.start()

    yield start
    for client in started:
        await client.stop()


def stream_name(kind: str) -> str:
    return f"net-{kind}-{uuid.uuid4().hex[:8]}"


def options() -> RestoreOptions:
    # the in-process peer lives in the root namespace, which the test itself changes
    # (veth and addresses at setup): it must not take that for its own network change
    return RestoreOptions(ping_period_ms=250, missing_pings=3, network_watch=False)


async def play_sessions(url: str, stream: str) -> list[dict]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        async with http.get(f"{url}/api/v1/sessions") as resp:
            sessions = (await resp.json())["sessions"]
    return [s for s in sessions if s["kind"] == "play" and s["stream"] == stream]


async def frames_grow(subscriber: Subscriber, more: int, timeout: float) -> None:
    """The subscriber (whatever its current session) decodes `more` frames within `timeout`."""
    deadline = time.monotonic() + timeout
    start = subscriber.viewer.frames if subscriber.viewer else 0
    session = subscriber.viewer
    while True:
        viewer = subscriber.viewer
        if viewer is not session:  # it restored meanwhile: count on the new session
            session, start = viewer, 0
        if viewer is not None and viewer.frames - start >= more:
            return
        if time.monotonic() > deadline:
            got = (viewer.frames - start) if viewer else 0
            raise TimeoutError(f"subscriber decoded {got} of {more} frames in {timeout} s")
        await asyncio.sleep(0.05)


def report(title: str, restored: dict, fault_at: float, back_at: float | None = None) -> None:
    fields = {k: restored.get(k) for k in ("fault", "detect_ms", "restore_ms", "gap_ms",
                                            "tries")}
    fields["restored_after_fault_ms"] = round((restored["t"] - fault_at) * 1000, 1)
    if back_at is not None:
        fields["restored_after_path_back_ms"] = round((restored["t"] - back_at) * 1000, 1)
    print(f"\n{title}: {json.dumps(fields)}")


async def no_failure_for(client: nh.CliClient, seconds: float, since: int) -> None:
    try:
        _, failed = await client.wait_for(nh.is_event("stream", "FAILED"), seconds, since)
    except TimeoutError:
        return
    pytest.fail(f"{client.name} failed again after restoring: {failed}")


# silent path loss ------------------------------------------------------------------------

@pytest.mark.timeout(40)
async def test_subscriber_restores_after_silent_path_loss(netns, start_node, clients):
    ns = netns("sl")
    link = ns.add_link()
    ns.set_default_route(link)
    node = start_node(host=link.root_ip)
    stream = stream_name("sub")
    async with Publisher(node.url, stream, codec="vp8", options=options()):
        viewer = await clients("play", node.url, stream, *KNOBS, prefix=ns.argv(),
                               name="ns-subscriber")
        await viewer.wait_for(nh.is_event("stream", "PLAYING"), 15)
        await asyncio.sleep(1.0)  # playing steadily

        fault_at = time.time()
        link.block()
        index, failed = await viewer.wait_for(nh.is_event("stream", "FAILED"), 4)
        detected_in = failed["t"] - fault_at
        assert failed["reason"] in SILENT_FAULTS, failed
        assert detected_in <= DETECT_LIMIT, f"silent loss found after {detected_in:.2f} s"

        await asyncio.sleep(0.5)  # the path stays down a little: no restore meanwhile
        assert not any(e["kind"] == "restored" for e in viewer.events[index:]), viewer.events
        back_at = time.time()
        link.unblock()
        index, restored = await viewer.wait_for(nh.is_event("restored"), 10, index)
        report("subscriber, silent path loss", restored, fault_at, back_at)
        assert restored["fault"] in SILENT_FAULTS and restored["state"] == "PLAYING"
        assert restored["detect_ms"] <= DETECT_LIMIT * 1000
        # the new session really plays: no new silence fault, and the node sends to it
        await no_failure_for(viewer, 1.5, index)
        sessions = [s for s in await play_sessions(node.url, stream)
                    if s["connection"] == "connected"]
        assert sessions and max(s["tracks"]["video"]["packets"] for s in sessions) > 30
        assert not any(e.get("reason") == "network_change" for e in viewer.events)


@pytest.mark.timeout(40)
async def test_publisher_restores_after_silent_path_loss(netns, start_node, clients):
    ns = netns("pl")
    link = ns.add_link()
    ns.set_default_route(link)
    node = start_node(host=link.root_ip)
    stream = stream_name("pub")
    publisher = await clients("publish", node.url, stream, "--codec", "vp8", *KNOBS,
                              prefix=ns.argv(), name="ns-publisher")
    await publisher.wait_for(nh.is_event("stream", "PUBLISHING"), 15)
    async with Subscriber(node.url, stream, options=options()) as subscriber:
        await frames_grow(subscriber, 15, 5)

        fault_at = time.time()
        link.block()
        index, failed = await publisher.wait_for(nh.is_event("stream", "FAILED"), 4)
        detected_in = failed["t"] - fault_at
        assert failed["reason"] in SILENT_FAULTS, failed
        assert detected_in <= DETECT_LIMIT, f"silent loss found after {detected_in:.2f} s"

        await asyncio.sleep(0.5)
        back_at = time.time()
        link.unblock()
        index, restored = await publisher.wait_for(nh.is_event("restored"), 10, index)
        report("publisher, silent path loss", restored, fault_at, back_at)
        assert restored["fault"] in SILENT_FAULTS and restored["state"] == "PUBLISHING"
        # what it publishes now reaches the viewer in the root namespace
        await frames_grow(subscriber, 30, 6)
        await no_failure_for(publisher, 0.5, index)
        print(f"viewer restores meanwhile: {[r.fault for r in subscriber.restores]}")


# network change --------------------------------------------------------------------------

async def two_link_setup(netns, start_node, tag: str):
    ns = netns(tag)
    first, second = ns.add_link(), ns.add_link()
    ns.set_default_route(first)
    # the node's address sits on the root namespace's lo: the namespace reaches it over
    # whichever link holds its default route
    address = ns.add_root_address()
    node = start_node(host="0.0.0.0")
    return ns, first, second, f"http://{address}:{node.port}", node


def switch_links(ns: nh.Netns, first: nh.Link, second: nh.Link) -> float:
    """Wi-Fi → LTE: default route to the second link, the first link loses its address."""
    changed_at = time.time()
    ns.set_default_route(second)
    ns.remove_address(first)
    return changed_at


async def bytes_on(link: nh.Link, key: str, seconds: float) -> int:
    before = link.ns_counters()[key]
    await asyncio.sleep(seconds)
    return link.ns_counters()[key] - before


@pytest.mark.timeout(40)
async def test_subscriber_restores_after_network_change(netns, start_node, clients):
    ns, first, second, url, node = await two_link_setup(netns, start_node, "ns")
    stream = stream_name("subnc")
    async with Publisher(url, stream, codec="vp8", options=options()):
        viewer = await clients("play", url, stream, *KNOBS, prefix=ns.argv(),
                               name="ns-subscriber")
        await viewer.wait_for(nh.is_event("stream", "PLAYING"), 15)
        assert await bytes_on(first, "rx_bytes", 0.7) > 20_000  # media comes over link 1

        changed_at = switch_links(ns, first, second)
        index, restored = await viewer.wait_for(nh.is_event("restored"), 8)
        report("subscriber, network change", restored, changed_at)
        assert restored["fault"] == "network_change" and restored["state"] == "PLAYING"
        assert restored["t"] - changed_at <= 3.0
        # the new session plays over link 2 and keeps playing
        assert await bytes_on(second, "rx_bytes", 1.0) > 30_000
        await no_failure_for(viewer, 0.5, index)


@pytest.mark.timeout(40)
async def test_publisher_restores_after_network_change(netns, start_node, clients):
    ns, first, second, url, node = await two_link_setup(netns, start_node, "np")
    stream = stream_name("pubnc")
    publisher = await clients("publish", url, stream, "--codec", "vp8", *KNOBS,
                              prefix=ns.argv(), name="ns-publisher")
    await publisher.wait_for(nh.is_event("stream", "PUBLISHING"), 15)
    async with Subscriber(url, stream, options=options()) as subscriber:
        await frames_grow(subscriber, 15, 5)
        assert await bytes_on(first, "tx_bytes", 0.5) > 10_000  # media leaves over link 1

        changed_at = switch_links(ns, first, second)
        index, restored = await publisher.wait_for(nh.is_event("restored"), 8)
        report("publisher, network change", restored, changed_at)
        assert restored["fault"] == "network_change" and restored["state"] == "PUBLISHING"
        assert restored["t"] - changed_at <= 3.0
        # the new session publishes over link 2 and the viewer sees its frames
        assert await bytes_on(second, "tx_bytes", 1.0) > 20_000
        await frames_grow(subscriber, 30, 6)
        await no_failure_for(publisher, 0.5, index)
        print(f"viewer restores meanwhile: {[r.fault for r in subscriber.restores]}")


SIGNATURE_SCRIPT = """
import asyncio, json
from pyroute2 import AsyncIPRoute
from unbroken.client.network import path_signature

async def main():
    async with AsyncIPRoute() as ipr:
        print(json.dumps(await path_signature(ipr)))

asyncio.run(main())
"""


def signature_in(ns: nh.Netns) -> list:
    """The namespace's path signature, as a client inside it computes it."""
    out = nh.run(*ns.argv(sys.executable, "-c", SIGNATURE_SCRIPT), timeout=20)
    return json.loads(out.stdout)


@pytest.mark.timeout(60)
def test_only_the_uplink_is_the_network_path(netns):
    """A link that carries no default route (a container's veth, a bridge) coming,
    changing or going is not a network change; the default route moving is, and so is
    an address of the interface it goes out of."""
    ns = netns("sig")
    first = ns.add_link()
    ns.set_default_route(first)
    before = signature_in(ns)
    assert [first.ns_ip] == [a[0] for a in before[1]]  # the uplink's address only

    second = ns.add_link()  # a side link, with an address: no change
    assert signature_in(ns) == before
    ns.remove_address(second)
    assert signature_in(ns) == before

    nh.run("ip", "-n", ns.name, "addr", "add", f"{second.ns_ip}/24", "dev", second.ns_if)
    ns.set_default_route(second)  # Wi-Fi → LTE
    moved = signature_in(ns)
    assert moved != before and [second.ns_ip] == [a[0] for a in moved[1]]
    nh.run("ip", "-n", ns.name, "addr", "add", "10.250.250.2/24", "dev", second.ns_if)
    assert signature_in(ns) != moved  # the uplink got another address (DHCP)
