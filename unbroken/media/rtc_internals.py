"""Every use of aiortc's private internals lives here (aiortc is pinned exactly).

aiortc always decodes what it receives and encodes what it sends. To forward RTP
packets instead, we:

- tap each ingest receiver after RTX unwrapping and NACK generation (its jitter
  buffer is replaced by a tap), and stop its decoder thread: the stock receiver
  keeps sending NACK, receiver reports and REMB to the publisher;
- give each subscriber sender a track that never yields a frame (so it never
  encodes), take over its RTCP handling (NACK, PLI/FIR, receiver reports), and
  write rewritten packets straight to the nominated ICE pair's socket through
  the DTLS transport's SRTP session (libsrtp called through pylibsrtp's binding,
  and asyncio's UDP socket, both private too).

`check_hooks()` fails loudly if an aiortc upgrade moved any of these.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import is_rtx
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket
from pylibsrtp import SRTP_MAX_TRAILER_LEN
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

srtp_protect = srtp_lib.srtp_protect
_pack_seq_ts_ssrc = struct.Struct("!HII").pack_into

RtpTap = Callable[[RtpPacket], None]
RtcpHandler = Callable[[Any], Awaitable[None]]


class _JitterBufferTap:
    """Stands in for the receiver's jitter buffer: hands each packet to the tap."""

    __slots__ = ("_tap",)

    def __init__(self, tap: RtpTap) -> None:
        self._tap = tap

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self._tap(packet)
        return False, None

    def remove(self, count: int) -> None:  # pragma: no cover - part of the interface
        pass


def tap_receiver(receiver: RTCRtpReceiver, tap: RtpTap) -> None:
    """Route the receiver's unwrapped RTP packets to `tap`; it never decodes.

    aiortc starts the receiver (and its decoder thread) once DTLS is up; we stop
    that thread as soon as it exists.
    """
    receiver._RTCRtpReceiver__jitter_buffer = _JitterBufferTap(tap)
    start = receiver.receive

    async def receive(parameters) -> None:
        await start(parameters)
        receiver._RTCRtpReceiver__stop_decoder()

    receiver.receive = receive


def wrap_receiver_rtcp(receiver: RTCRtpReceiver, on_rtcp: RtcpHandler) -> None:
    """Call `on_rtcp(packet)` for every RTCP packet routed to the receiver (SR, BYE)."""
    original = receiver._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        await original(packet)
        await on_rtcp(packet)

    receiver._handle_rtcp_packet = handle


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send a picture loss indication to the publisher of `media_ssrc`."""
    await receiver._send_rtcp_pli(media_ssrc)


class SilentTrack(MediaStreamTrack):
    """A track that never yields a frame: its sender never encodes anything."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future | None = None

    async def recv(self):  # type: ignore[override]
        self._never = asyncio.get_running_loop().create_future()
        await self._never
        raise asyncio.CancelledError  # pragma: no cover


def take_over_sender_rtcp(sender: RTCRtpSender, on_rtcp: RtcpHandler) -> None:
    """Route RTCP for the sender's SSRC to `on_rtcp` instead of aiortc's handler."""
    sender._handle_rtcp_packet = on_rtcp


def set_sender_report_source(
    sender: RTCRtpSender, ntp_timestamp: int, rtp_timestamp: int, packets: int, octets: int
) -> None:
    """Feed the values aiortc's sender writes into its periodic sender reports."""
    sender._RTCRtpSender__ntp_timestamp = ntp_timestamp
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp
    sender._RTCRtpSender__packet_count = packets
    sender._RTCRtpSender__octet_count = octets


def sender_rtx_ssrc(sender: RTCRtpSender) -> int:
    return sender._rtx_ssrc


def restrict_answer_codecs(transceiver, mime_types: tuple[str, ...]) -> None:
    """Answer only `mime_types` (and their RTX) on this transceiver.

    aiortc intersects codecs when the offer is applied, before codec preferences
    could be set, so the negotiated list is narrowed directly.
    """
    wanted = {m.lower() for m in mime_types}
    kept = [c for c in transceiver._codecs if c.mimeType.lower() in wanted]
    payload_types = {c.payloadType for c in kept}
    transceiver._codecs = [c for c in transceiver._codecs
                           if c.payloadType in payload_types
                           or (is_rtx(c) and c.parameters.get("apt") in payload_types)]


def negotiated_codecs(transceiver) -> list:
    return transceiver._codecs


def negotiated_header_extensions(transceiver) -> list:
    return transceiver._headerExtensions


class PacketWriter:
    """SRTP-protects RTP packets and sends them straight to the nominated ICE pair's
    socket, bypassing aiortc's coroutine chain.

    It uses the transport's own SRTP session, but calls libsrtp through pylibsrtp's
    cffi binding with one reusable buffer: the packet is copied in once, its header
    patched in place, protected in place and sent from there (no per-packet allocations).
    """

    __slots__ = ("_dtls", "_ice_connection", "_session", "_srtp", "_transport", "_sock",
                 "_addr", "_cdata", "_buffer", "_view", "_length", "packets", "bytes",
                 "dropped")

    BUFFER_SIZE = 2048
    MAX_PLAINTEXT = BUFFER_SIZE - SRTP_MAX_TRAILER_LEN

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self._setup(dtls, dtls.transport._connection)

    def _setup(self, dtls: RTCDtlsTransport | None, ice_connection) -> None:
        self._dtls = dtls
        self._ice_connection = ice_connection
        self._session = None
        self._srtp = None
        self._transport = None
        self._sock = None
        self._addr = None
        self._cdata = srtp_ffi.new("char[]", self.BUFFER_SIZE)
        self._buffer = srtp_ffi.buffer(self._cdata)
        self._view = memoryview(self._buffer)
        self._length = srtp_ffi.new("int *")
        self.packets = 0
        self.bytes = 0
        self.dropped = 0

    @classmethod
    def on_socket(cls, session, transport: asyncio.DatagramTransport, addr) -> "PacketWriter":
        """A writer on a given SRTP session and UDP transport (benchmarks, tests)."""
        writer = cls.__new__(cls)
        writer._setup(None, None)
        writer._use(session, transport, addr)
        return writer

    def _bind(self) -> bool:
        session = self._dtls._tx_srtp
        pair = self._ice_connection._nominated.get(1)
        if session is None or pair is None or self._dtls.state != "connected":
            return False
        self._use(session, pair.protocol.transport, pair.remote_addr)
        return True

    def _use(self, session, transport: asyncio.DatagramTransport, addr) -> None:
        self._session = session  # keeps the srtp_t alive
        self._srtp = session._srtp[0]
        self._transport = transport
        self._sock = transport._sock  # asyncio's UDP socket
        self._addr = addr

    @property
    def ready(self) -> bool:
        return self._sock is not None or self._bind()

    def write(self, template: bytes, seq: int, ts: int, ssrc: int) -> bool:
        """Send `template` (a serialized RTP packet) with this sequence number, timestamp
        and SSRC patched in."""
        size = len(template)
        if (self._sock is None and not self._bind()) or size > self.MAX_PLAINTEXT:
            return False
        self._buffer[0:size] = template
        _pack_seq_ts_ssrc(self._buffer, 2, seq, ts, ssrc)
        return self._protect_and_send(size)

    def write_plain(self, plaintext: bytes) -> bool:
        size = len(plaintext)
        if (self._sock is None and not self._bind()) or size > self.MAX_PLAINTEXT:
            return False
        self._buffer[0:size] = plaintext
        return self._protect_and_send(size)

    def _protect_and_send(self, size: int) -> bool:
        if self._transport.is_closing():
            self.dropped += 1
            return False
        length = self._length
        length[0] = size
        if srtp_protect(self._srtp, self._cdata, length) != 0:
            self.dropped += 1
            return False
        try:
            self._sock.sendto(self._view[:length[0]], self._addr)
        except OSError:  # a full socket buffer or a vanished peer: this viewer loses it
            self.dropped += 1
            return False
        self.packets += 1
        self.bytes += length[0]
        return True


def check_hooks() -> None:
    """Raise AssertionError if aiortc's private hooks we rely on have moved."""
    import inspect

    from aiortc import rtcrtpreceiver, rtcrtpsender

    receiver_src = inspect.getsource(rtcrtpreceiver.RTCRtpReceiver)
    for name in ("self.__jitter_buffer.add(packet)", "def __stop_decoder", "async def receive",
                 "self.__rtcp_ssrc", "async def _send_rtcp_pli", "_handle_rtcp_packet"):
        assert name in receiver_src, f"aiortc RTCRtpReceiver lost {name}"
    sender_src = inspect.getsource(rtcrtpsender.RTCRtpSender)
    for name in ("self.__ntp_timestamp", "self.__rtp_timestamp", "self.__packet_count",
                 "self.__octet_count", "self._rtx_ssrc", "_handle_rtcp_packet"):
        assert name in sender_src, f"aiortc RTCRtpSender lost {name}"
    assert hasattr(RTCDtlsTransport, "_send_rtp")
    jb_add = inspect.signature(JitterBuffer.add)
    assert list(jb_add.parameters) == ["self", "packet"], "JitterBuffer.add changed"
    from aioice.ice import CandidatePair, Connection

    assert "_nominated" in inspect.getsource(Connection.__init__)
    assert "protocol" in inspect.signature(CandidatePair.__init__).parameters
    import pylibsrtp

    assert "self._srtp = " in inspect.getsource(pylibsrtp.Session.__init__)
    assert srtp_ffi.typeof(srtp_protect).cname.startswith("srtp_err_status_t(*)")
