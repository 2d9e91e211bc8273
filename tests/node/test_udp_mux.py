"""The node's ICE UDP mux: every session on one socket per local address (--ice-udp-port),
routed by the STUN USERNAME and the peer's address; a socket per session with -1."""

import asyncio
import re
import socket

import aiohttp
import pytest
from aioice import stun
from aioice.ice import StunProtocol

from unbroken.client.framecode import counters_advance
from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher
from unbroken.media.udp_mux import UdpMuxSocket
from tests.conftest import free_port


def candidate_ports(sdp: str) -> set[int]:
    """The ports of the host candidates in an SDP."""
    return {int(m.group(1)) for m in re.finditer(
        r"a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ host", sdp)}


async def watch(url: str, count: int) -> list[WhepViewer]:
    return [await WhepViewer(url, "mux").start() for _ in range(count)]


async def publish(url: str) -> WhipPublisher:
    return await WhipPublisher(url, "mux", tracks=[TestPatternVideoTrack(), ToneAudioTrack()],
                               video_codec="vp8").start()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


async def test_every_session_shares_one_port_and_plays(start_node):
    """Publisher and viewers get the same port in the node's answers; every viewer
    plays advancing frames; one leaving does not disturb the others, and a new one
    joins on the same port."""
    node = start_node()
    pub = await publish(node.url)
    viewers = await watch(node.url, 3)
    try:
        ports = [candidate_ports(v.pc.remoteDescription.sdp) for v in viewers]
        ports.append(candidate_ports(pub.pc.remoteDescription.sdp))
        assert len(ports[0]) == 1 and all(p == ports[0] for p in ports), ports
        async with aiohttp.ClientSession() as http:
            async with http.get(node.url + "/healthz") as r:
                assert set((await r.json())["ice_udp"].values()) == ports[0]
        await asyncio.gather(*(v.wait_frames(30, 15) for v in viewers))
        await viewers.pop(0).stop()
        late = (await watch(node.url, 1))[0]
        viewers.append(late)
        assert candidate_ports(late.pc.remoteDescription.sdp) == ports[0]
        await asyncio.gather(*(v.wait_frames(v.frames + 30, 15) for v in viewers))
        for v in viewers:
            assert counters_advance(list(v.counters)[-20:]), list(v.counters)[-20:]
    finally:
        for v in viewers:
            await v.stop()
        await pub.stop()


async def test_a_fixed_port_and_no_mux(start_node):
    """--ice-udp-port N: candidates on N; -1: a socket (port) per session."""
    port = free_udp_port()
    fixed = start_node("--ice-udp-port", str(port))
    own = start_node("--ice-udp-port", "-1")
    pubs = [await publish(fixed.url), await publish(own.url)]
    viewers = []
    try:
        viewers = await watch(fixed.url, 2) + await watch(own.url, 2)
        on_fixed = [candidate_ports(v.pc.remoteDescription.sdp) for v in viewers[:2]]
        on_own = [candidate_ports(v.pc.remoteDescription.sdp) for v in viewers[2:]]
        assert on_fixed == [{port}, {port}]
        assert not on_own[0] & on_own[1]
        await asyncio.gather(*(v.wait_frames(20, 15) for v in viewers))
    finally:
        for v in viewers:
            await v.stop()
        for p in pubs:
            await p.stop()


class Recorder(StunProtocol):
    def __init__(self) -> None:
        super().__init__(receiver=None)
        self.got: list[tuple[bytes, tuple]] = []

    def datagram_received(self, data, addr) -> None:
        self.got.append((data, addr))


def binding_request(username: str) -> bytes:
    request = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    return bytes(request)


async def test_routing_by_username_and_address():
    """Unknown senders are dropped; a binding request routes by its local ufrag and
    teaches the sender's address; a later request from that address for another
    connection moves it; a detached connection gets nothing more; sends teach addresses
    without taking one from another connection."""
    loop = asyncio.get_running_loop()
    transport, mux = await loop.create_datagram_endpoint(UdpMuxSocket,
                                                         local_addr=("127.0.0.1", 0))
    try:
        a, b = Recorder(), Recorder()
        ta = mux.attach(a, "ufragA")
        mux.attach(b, "ufragB")
        peer = ("127.0.0.1", free_port())
        mux.datagram_received(b"\x80media", peer)
        assert mux.dropped == 1 and not a.got
        mux.datagram_received(binding_request("ufragA:remote"), peer)
        mux.datagram_received(b"\x80media", peer)
        assert [d for d, _ in a.got][1:] == [b"\x80media"] and not b.got
        ta.sendto(b"\x80out", peer)  # a has it already; b's send does not take it
        mux.learn(peer, b, overwrite=False)
        mux.datagram_received(b"\x80again", peer)
        assert a.got[-1][0] == b"\x80again"
        mux.datagram_received(binding_request("ufragB:remote"), peer)
        mux.datagram_received(b"\x80moved", peer)
        assert b.got[-1][0] == b"\x80moved"
        ta.close()
        await asyncio.sleep(0)
        assert ta.is_closing() and mux.connections == 1
        mux.datagram_received(binding_request("ufragA:remote"), ("127.0.0.1", 9))
        assert a.got[-1][0] == b"\x80again"  # nothing more for the closed one
        assert transport._sock.fileno() == ta._sock.fileno()
    finally:
        transport.close()


def test_bad_ice_udp_port_is_refused():
    from unbroken.node.config import NodeConfig

    with pytest.raises(ValueError, match="ice_udp_port"):
        NodeConfig(ice_udp_port=70000).validate()
