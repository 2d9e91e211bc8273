"""One UDP socket per local address for every ICE connection of the process (a node).

aioice binds a new UDP socket for every connection and address. With the mux, every
connection's host candidate on an address is the same socket (one port to open in a
firewall, like MediaMTX's webrtcLocalUDPAddress or LiveKit's udp_port), and the native
forwarding path sends all viewers' copies of a packet with one sendmmsg on it.

Each connection still gets its own aioice StunProtocol; its transport is a
MuxedTransport, a view of the shared socket. Incoming datagrams go to the connection
by the sender's address: an address is learned from the USERNAME of a STUN binding
request (its first part is the local ufrag of the connection it is for; a request
always wins, so a reused address moves to the connection it now talks to) and from
the connection's own sends (responses to its checks come from where it sent them).
What comes from an unknown address and is not such a request is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from aioice import stun
from aioice.ice import StunProtocol

__all__ = ["MuxedTransport", "UdpMux", "UdpMuxSocket"]

log = logging.getLogger("unbroken.media.udp_mux")

# every session's packets share one socket: room for bursts of all of them
RECEIVE_BUFFER = 4 * 1024 * 1024
SEND_BUFFER = 4 * 1024 * 1024


class MuxedTransport(asyncio.DatagramTransport):
    """One connection's view of a shared socket: sends go out on it (and teach the mux
    where the answers will come from); closing it only detaches the connection."""

    # the socket outlives every connection: its descriptor is never reused under a writer
    shared = True

    def __init__(self, mux: "UdpMuxSocket", protocol: StunProtocol) -> None:
        super().__init__()
        self._mux = mux
        self._protocol = protocol
        self._closing = False

    @property
    def _sock(self) -> socket.socket:
        """The shared socket (what PacketWriter sends on)."""
        return self._mux.transport._sock

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return
        self._mux.learn(addr, self._protocol, overwrite=False)
        self._mux.transport.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._mux.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._mux.transport.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._mux.detach(self._protocol)
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return self._mux.transport.get_write_buffer_size()


class UdpMuxSocket(asyncio.DatagramProtocol):
    """The shared socket of one local address, and the routes to its connections."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._by_addr: dict[tuple[str, int], StunProtocol] = {}
        self._by_ufrag: dict[str, StunProtocol] = {}
        self._addrs: dict[StunProtocol, set[tuple[str, int]]] = {}
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def attach(self, protocol: StunProtocol, local_ufrag: str) -> MuxedTransport:
        """Route what comes for `local_ufrag` to `protocol` (the connection's own)."""
        transport = MuxedTransport(self, protocol)
        self._by_ufrag[local_ufrag] = protocol
        self._addrs[protocol] = set()
        protocol.connection_made(transport)
        return transport

    def detach(self, protocol: StunProtocol) -> None:
        for ufrag in [u for u, p in self._by_ufrag.items() if p is protocol]:
            del self._by_ufrag[ufrag]
        for addr in self._addrs.pop(protocol, ()):
            if self._by_addr.get(addr) is protocol:
                del self._by_addr[addr]

    def learn(self, addr: Any, protocol: StunProtocol, overwrite: bool) -> None:
        """Datagrams from `addr` go to `protocol` (unless another connection has it and
        `overwrite` is false)."""
        addr = (addr[0], addr[1])
        known = self._by_addr.get(addr)
        if known is protocol or protocol not in self._addrs:
            return
        if known is not None:
            if not overwrite:
                return
            self._addrs[known].discard(addr)
        self._by_addr[addr] = protocol
        self._addrs[protocol].add(addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        addr = (addr[0], addr[1])
        protocol = None
        if data and data[0] <= 3:  # STUN (RFC 7983): a request names its connection
            protocol = self._route_request(data, addr)
        if protocol is None:
            protocol = self._by_addr.get(addr)
        if protocol is None:
            self.dropped += 1
            return
        protocol.datagram_received(data, addr)

    def _route_request(self, data: bytes, addr: tuple[str, int]) -> StunProtocol | None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return None
        if message.message_class != stun.Class.REQUEST:
            return None
        username = message.attributes.get("USERNAME")
        if not isinstance(username, str):
            return None
        protocol = self._by_ufrag.get(username.split(":", 1)[0])
        if protocol is not None:
            self.learn(addr, protocol, overwrite=True)
        return protocol

    def error_received(self, exc: Exception) -> None:
        log.debug("udp mux socket error: %s", exc)

    @property
    def connections(self) -> int:
        return len(self._addrs)


class UdpMux:
    """The process's shared ICE sockets, one per local address, bound on first use to
    `port`; with 0, the first address gets a free port and the others that same port
    where it is free (else a free one). Kept for the process's life."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._chosen = port  # the port the next address tries first
        self._sockets: dict[str, UdpMuxSocket | None] = {}
        self._binding: dict[str, asyncio.Future] = {}

    async def socket_for(self, address: str) -> UdpMuxSocket | None:
        """The shared socket on `address`, or None if it cannot be bound (the
        connection then binds its own, as aioice does)."""
        if address in self._sockets:
            return self._sockets[address]
        pending = self._binding.get(address)
        if pending is None:
            pending = self._binding[address] = asyncio.ensure_future(self._bind(address))
        try:
            return await asyncio.shield(pending)
        finally:
            self._binding.pop(address, None)

    async def _bind(self, address: str) -> UdpMuxSocket | None:
        loop = asyncio.get_running_loop()
        ports = [self._chosen] if self.port or not self._chosen else [self._chosen, 0]
        for port in ports:
            try:
                transport, mux = await loop.create_datagram_endpoint(
                    UdpMuxSocket, local_addr=(address, port))
                break
            except OSError as exc:
                error = exc
        else:
            log.warning(f"ICE UDP mux: cannot bind {address}:{ports[0]} ({error}); "
                        "sessions on that address use sockets of their own")
            self._sockets[address] = None
            return None
        if not self._chosen:
            self._chosen = transport.get_extra_info("sockname")[1]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option, size in ((socket.SO_RCVBUF, RECEIVE_BUFFER),
                                 (socket.SO_SNDBUF, SEND_BUFFER)):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, size)
                except OSError:
                    pass
        self._sockets[address] = mux
        log.info(f"ICE UDP mux on {transport.get_extra_info('sockname')[:2]}")
        return mux

    def sockets(self) -> dict[str, UdpMuxSocket]:
        return {a: s for a, s in self._sockets.items() if s is not None}

    def ports(self) -> dict[str, int]:
        """The port of each local address's shared socket (bound so far)."""
        return {address: mux.transport.get_extra_info("sockname")[1]
                for address, mux in self.sockets().items() if mux.transport is not None}

    def close(self) -> None:
        for mux in self.sockets().values():
            if mux.transport is not None:
                mux.transport.close()
        self._sockets.clear()
