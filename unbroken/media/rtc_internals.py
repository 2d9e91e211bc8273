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

The SDK's WHEP viewer and recorder need two hooks of their own (counting received
RTP packets, copying encoded frames on their way to the decoder): they are here too,
under "client side", so that this module is the only one that touches a private name.

What a new peer connection costs, cut where aiortc does per connection what one process
can do once (a burst of sessions, e.g. every viewer of a killed node re-joining another):
`new_peer_connection` gives every connection of the process one DTLS certificate whose
fingerprints and OpenSSL context are made once; video receivers build aiortc's
remote-bitrate estimator (1000 buckets) only when their first packet needs it (a node's
subscriber sessions and the SDK's counting viewers never do); `cache_host_addresses` lets
a node enumerate its interfaces once per `ttl` for ICE gathering, not once per session.

`HOOKS` lists every private name used here; `check_hooks()` (run at node start and by
the tests) fails with the missing hooks named if an aiortc upgrade moved any of them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import struct
import time
from asyncio import selector_events
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import aiortc
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import pylibsrtp
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import (RTCCertificate, RTCConfiguration, RTCDtlsTransport, RTCIceTransport,
                    RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver)
from aiortc.codecs import is_rtx
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.rtp import (RtcpByePacket, RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo,
                        RtcpSrPacket, RtpPacket)
from pylibsrtp import SRTP_MAX_TRAILER_LEN
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from .consent import ConsentFreshness
from .udp_mux import UdpMux

__all__ = [
    "HOOKS", "MissingHook", "NativePacketWriter", "PacketWriter", "SharedCertificate",
    "SilentTrack", "cache_host_addresses", "check_hooks", "consent_freshness",
    "negotiated_codecs", "negotiated_header_extensions", "new_peer_connection",
    "quiet_sender_rtcp", "restrict_answer_codecs", "send_pli", "sender_cname",
    "sender_report", "sender_rtx_ssrc", "sender_ssrc", "shared_certificate",
    "srtp_context_address", "srtp_protect_address", "take_over_sender_rtcp",
    "tap_receiver", "tap_received_rtp", "tee_decoder_queue", "udp_mux",
    "use_consent_freshness", "use_udp_mux", "wrap_receiver_rtcp",
]

log = logging.getLogger("unbroken.media.rtc_internals")

srtp_protect = srtp_lib.srtp_protect
_pack_seq_ts_ssrc = struct.Struct("!HII").pack_into

# the one libsrtp function the native fast path (unbroken.media._fastpath) calls, through
# the pointer pylibsrtp's binding exports: this exact signature (libsrtp 2.x) is assumed
SRTP_PROTECT_SIGNATURE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"

RtpTap = Callable[[RtpPacket], None]
RtcpHandler = Callable[[Any], Awaitable[None]]
FrameTap = Callable[[RTCRtpCodecParameters, Any], None]

# Every private name used in this module: (owner, name as the owner's source spells it,
# what we use it for). A name is there if the class has it (methods) or its source assigns
# it (instance attributes).
HOOKS: tuple[tuple[type, str, str], ...] = (
    (RTCRtpReceiver, "__jitter_buffer", "tap_receiver: ingest packets after RTX/NACK"),
    (RTCRtpReceiver, "__stop_decoder", "tap_receiver: no decoding at ingest"),
    (RTCRtpReceiver, "_handle_rtcp_packet", "wrap_receiver_rtcp: publishers' sender reports"),
    (RTCRtpReceiver, "_send_rtcp_pli", "send_pli: keyframe requests to publishers"),
    (RTCRtpReceiver, "_handle_rtp_packet", "tap_received_rtp: the SDK viewer's counter"),
    (RTCRtpReceiver, "__decoder_queue", "tee_decoder_queue: the SDK recorder"),
    (RTCRtpSender, "_ssrc", "sender_ssrc: a subscriber track's SSRC"),
    (RTCRtpSender, "_rtx_ssrc", "sender_rtx_ssrc: a subscriber track's RTX SSRC"),
    (RTCRtpSender, "_handle_rtcp_packet", "take_over_sender_rtcp: subscribers' NACK/PLI"),
    (RTCRtpSender, "_run_rtcp", "quiet_sender_rtcp: no RTCP timer per sender"),
    (RTCRtpSender, "_send_rtcp", "quiet_sender_rtcp: the BYE at stop"),
    (RTCRtpSender, "__rtcp_started", "quiet_sender_rtcp: what stop() waits for"),
    (RTCRtpSender, "__rtcp_exited", "quiet_sender_rtcp: what stop() waits for"),
    (RTCRtpSender, "__cname", "sender_cname: the CNAME of sender reports"),
    (RTCRtpTransceiver, "_codecs", "negotiated_codecs, restrict_answer_codecs"),
    (RTCRtpTransceiver, "_headerExtensions", "negotiated_header_extensions"),
    (RTCDtlsTransport, "_tx_srtp", "PacketWriter: the outgoing SRTP session"),
    (RTCIceTransport, "_connection", "PacketWriter: the ICE connection"),
    (Connection, "_nominated", "PacketWriter: the nominated candidate pair"),
    (Connection, "_protocols", "use_udp_mux: the connection's host candidates' protocols"),
    (Connection, "query_consent", "use_consent_freshness: the per-connection consent task"),
    (Connection, "_query_consent_task", "use_consent_freshness: what close() cancels"),
    (CandidatePair, "protocol", "PacketWriter: the pair's UDP protocol"),
    (CandidatePair, "remote_addr", "PacketWriter: the pair's remote address"),
    (selector_events._SelectorTransport, "_sock", "PacketWriter: the UDP socket"),
    (pylibsrtp.Session, "_srtp", "PacketWriter, srtp_context_address: libsrtp's srtp_t"),
    (RTCPeerConnection, "__certificates", "new_peer_connection: the shared certificate"),
    (RTCCertificate, "_create_ssl_context", "SharedCertificate: one OpenSSL context"),
)

# How those names are used, where our stand-ins must fit: (owner, source line, hook).
CALL_SHAPES: tuple[tuple[type, str, str], ...] = (
    (RTCRtpReceiver, "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)",
     "the jitter buffer's add(packet) -> (pli_flag, encoded_frame)"),
    (RTCRtpReceiver, "self.__decoder_queue.put((codec, encoded_frame))",
     "decoder queue items (codec, encoded_frame)"),
    (RTCRtpReceiver, "self.__remote_bitrate_estimator = RemoteBitrateEstimator()",
     "the receiver builds its estimator from the module's RemoteBitrateEstimator"),
    (RTCRtpReceiver, "remb = self.__remote_bitrate_estimator.add(",
     "the estimator is only ever used through add() (_LazyBitrateEstimator)"),
    (RTCPeerConnection, "find_common_codecs(CODECS[media.kind], media.rtp.codecs)",
     "codecs are matched by the module's find_common_codecs (_CodecCopy)"),
    (Connection, "addresses = get_host_addresses(",
     "ICE gathering asks the module's get_host_addresses (cache_host_addresses)"),
    (aioice.ice.StunProtocol, "self.receiver.data_received(data, self.local_candidate.component)",
     "what is not STUN goes to the connection (_demuxed_datagram_received)"),
    (Connection, "self._query_consent_task = asyncio.create_task(self.query_consent())",
     "consent checks run as the task of query_consent() (use_consent_freshness)"),
    (RTCPeerConnection, "iceTransport._connection.ice_controlling = True",
     "an offer's connections are ICE-controlling before they gather (use_udp_mux)"),
    (Connection, "async def get_component_candidates(\n        self, component: int, addresses: list[str], timeout: int = 5",
     "host candidates are gathered per component and address (use_udp_mux)"),
)


class MissingHook(RuntimeError):
    """aiortc (or what it runs on) no longer has a private name this module relies on."""


@functools.cache
def _file_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


@functools.cache
def _class_source(owner: type) -> str:
    """The text of `owner`'s class statement: from `class Name` to the next top-level
    class (inspect.getsource tokenizes the whole module each time: 1.5 s at every start)."""
    text = _file_text(inspect.getsourcefile(owner))
    found = re.search(rf"^class {re.escape(owner.__name__)}\b", text, re.M)
    if found is None:
        return inspect.getsource(owner)
    end = re.compile(r"^class ", re.M).search(text, found.end())
    return text[found.start():end.start() if end else len(text)]


def _has(owner: type, name: str) -> bool:
    mangled = f"_{owner.__name__.lstrip('_')}{name}" if name.startswith("__") else name
    if hasattr(owner, mangled):
        return True
    return re.search(rf"self\.{re.escape(name)}\s*[:=]", _class_source(owner)) is not None


@functools.cache
def check_hooks() -> None:
    """Raise MissingHook naming every private hook of `HOOKS` and `CALL_SHAPES` that is
    gone (aiortc is pinned exactly; an upgrade must pass this first)."""
    missing = [f"{owner.__qualname__}.{name} ({use})" for owner, name, use in HOOKS
               if not _has(owner, name)]
    missing += [f"{owner.__qualname__}: {use}" for owner, line, use in CALL_SHAPES
                if line not in _class_source(owner)]
    if not isinstance(_real_bitrate_estimator, type):
        missing.append("aiortc.rtcrtpreceiver.RemoteBitrateEstimator (_LazyBitrateEstimator)")
    source = _file_text(inspect.getsourcefile(aiortc.rtcpeerconnection))
    if source.count("copy.") != 2 or source.count("copy.deepcopy(c") != 2:
        missing.append("aiortc.rtcpeerconnection: copy.deepcopy only of codecs (_CodecCopy)")
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        missing.append("aioice.ice.get_host_addresses (cache_host_addresses)")
    if not str(srtp_ffi.typeof(srtp_protect).cname).startswith("srtp_err_status_t(*)"):
        missing.append("pylibsrtp._binding.lib.srtp_protect (PacketWriter)")
    elif str(srtp_ffi.typeof(srtp_protect).cname) != SRTP_PROTECT_SIGNATURE:
        missing.append("pylibsrtp._binding.lib.srtp_protect with the libsrtp 2 signature "
                       f"{SRTP_PROTECT_SIGNATURE} (the native fast path calls it)")
    if missing:
        raise MissingHook(f"aiortc {aiortc.__version__} lacks private hooks unbroken relies "
                          "on (it is pinned to 1.16.0): " + "; ".join(missing))


# --- what a new peer connection costs ------------------------------------------------------

# seconds one shared certificate serves new connections (aiortc's are valid 30 days; a
# connection keeps the one it started with)
CERTIFICATE_LIFETIME = 24 * 3600.0


class SharedCertificate(RTCCertificate):
    """A DTLS certificate for every new peer connection of the process: its fingerprints
    (three digests, asked for by every offer, answer and handshake) and its OpenSSL
    context (per list of SRTP profiles) are made once."""

    def __init__(self, key, cert) -> None:
        super().__init__(key, cert)
        self.created_at = time.monotonic()
        self._fingerprints: list | None = None
        self._contexts: dict[tuple, Any] = {}

    def getFingerprints(self) -> list:
        if self._fingerprints is None:
            self._fingerprints = super().getFingerprints()
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles):
        key = tuple(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = super()._create_ssl_context(srtp_profiles)
        return context


_certificate: SharedCertificate | None = None


def shared_certificate() -> SharedCertificate:
    """The process's certificate for new connections (a new one every
    CERTIFICATE_LIFETIME)."""
    global _certificate
    if (_certificate is None
            or time.monotonic() - _certificate.created_at > CERTIFICATE_LIFETIME):
        _certificate = SharedCertificate.generateCertificate()
    return _certificate


def new_peer_connection(configuration: RTCConfiguration | None = None) -> RTCPeerConnection:
    """An RTCPeerConnection that uses the process's shared certificate (aiortc makes one
    per connection: key, certificate, digests and OpenSSL context each time)."""
    pc = RTCPeerConnection(configuration)
    pc._RTCPeerConnection__certificates = [shared_certificate()]
    return pc


class _CodecCopy:
    """Stands in for the `copy` module inside aiortc.rtcpeerconnection, whose only use is
    find_common_codecs deep-copying every codec it keeps: for a browser's offer (dozens
    of codecs) that was the largest part of answering it. A codec holds strings, ints, a
    list of feedback records and a dict of scalars: those are copied, the rest shared."""

    @staticmethod
    def deepcopy(codec: RTCRtpCodecParameters) -> RTCRtpCodecParameters:
        return RTCRtpCodecParameters(
            mimeType=codec.mimeType, clockRate=codec.clockRate, channels=codec.channels,
            payloadType=codec.payloadType,
            rtcpFeedback=[RTCRtcpFeedback(type=f.type, parameter=f.parameter)
                          for f in codec.rtcpFeedback],
            parameters=dict(codec.parameters))


aiortc.rtcpeerconnection.copy = _CodecCopy

_real_bitrate_estimator = getattr(aiortc.rtcrtpreceiver, "RemoteBitrateEstimator", None)


class _LazyBitrateEstimator:
    """Stands in for aiortc's RemoteBitrateEstimator, which every video receiver builds at
    once (a rate counter of 1000 buckets): the real one is built at the first add(), so
    receivers that never get a packet through aiortc's own path (a node's subscriber
    sessions, the SDK's counting viewers) never pay for it."""

    __slots__ = ("_real",)

    def __init__(self) -> None:
        self._real = None

    def add(self, *args, **kwargs):
        real = self._real
        if real is None:
            real = self._real = _real_bitrate_estimator()
        return real.add(*args, **kwargs)


if _real_bitrate_estimator is not None:
    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = _LazyBitrateEstimator

_stun_datagram_received = aioice.ice.StunProtocol.datagram_received


def _demuxed_datagram_received(self, data: bytes, addr) -> None:
    """aioice tries to parse every datagram as STUN and hands it to the connection when
    that raises: an exception per media packet. RFC 7983 demultiplexes by the first
    byte: only 0-3 can be STUN, so RTP/RTCP (128-191) and DTLS (20-63) go straight on."""
    if data and data[0] > 3:
        self.receiver.data_received(data, self.local_candidate.component)
        return
    _stun_datagram_received(self, data, addr)


aioice.ice.StunProtocol.datagram_received = _demuxed_datagram_received

_component_candidates = Connection.get_component_candidates
_udp_mux: UdpMux | None = None


async def _muxed_component_candidates(self: Connection, component: int, addresses: list[str],
                                      timeout: int = 5) -> list[Candidate]:
    """aioice's host candidates, each on the process's shared socket for its address
    (udp_mux); without a mux, with STUN/TURN servers, for an address the mux could not
    bind, or for a session this process offered (ICE-controlling: an edge's pull),
    aioice's own gathering. A pull's peer is another node, on shared sockets too: two
    pulls from one node would have the same address pair, which no mux can tell apart."""
    mux = _udp_mux
    if mux is None or self.stun_server or self.turn_server or self.ice_controlling:
        return await _component_candidates(self, component, addresses, timeout)
    candidates, unmuxed = [], []
    for address in addresses:
        shared = await mux.socket_for(address)
        if shared is None:
            unmuxed.append(address)
            continue
        protocol = StunProtocol(self)
        shared.attach(protocol, self.local_username)
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component,
            transport="udp", priority=candidate_priority(component, "host"), host=host,
            port=port, type="host")
        self._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    if unmuxed:
        candidates += await _component_candidates(self, component, unmuxed, timeout)
    return candidates


def udp_mux() -> UdpMux | None:
    """The mux new connections gather on (use_udp_mux), if any."""
    return _udp_mux


def use_udp_mux(mux: UdpMux | None) -> None:
    """Gather every new connection's host candidates on `mux`'s shared sockets (a node);
    None: one socket per connection and address, as aioice does (the SDK)."""
    global _udp_mux
    _udp_mux = mux
    Connection.get_component_candidates = (_muxed_component_candidates if mux is not None
                                           else _component_candidates)


_query_consent = Connection.query_consent
_consent: ConsentFreshness | None = None


async def _node_query_consent(self: Connection) -> None:
    """The connection's consent task: its checks are done by the process's
    ConsentFreshness; this waits until consent expires, then closes as aioice does."""
    checker = _consent
    if checker is None:
        return await _query_consent(self)
    await checker.hold(self, lambda: list(self._nominated.values()))
    log.info("consent to send expired", extra={"ice_ufrag": self.local_username})
    self._query_consent_task = None  # close() must not cancel the task it runs in
    await self.close()


def consent_freshness() -> ConsentFreshness | None:
    """The checker new connections use (use_consent_freshness), if any."""
    return _consent


def use_consent_freshness(checker: ConsentFreshness | None) -> None:
    """Check the consent of every new connection with `checker` (a node: one timer for
    all sessions); None: one task per connection, as aioice does (the SDK)."""
    global _consent
    _consent = checker
    Connection.query_consent = _node_query_consent if checker is not None else _query_consent


_host_addresses = aioice.ice.get_host_addresses
_host_address_cache: dict[tuple[bool, bool], tuple[float, list[str]]] = {}
_host_address_ttl = 0.0


def _cached_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    key = (use_ipv4, use_ipv6)
    now = time.monotonic()
    hit = _host_address_cache.get(key)
    if hit is None or now - hit[0] > _host_address_ttl:
        hit = _host_address_cache[key] = (now, _host_addresses(use_ipv4, use_ipv6))
    return list(hit[1])


def cache_host_addresses(ttl: float) -> None:
    """ICE gathering enumerates the host's interfaces for every connection; with `ttl` > 0
    the list is reused for that many seconds (a node: a burst of sessions enumerates once;
    an address gone meanwhile just fails to bind, one added is used after `ttl`). 0: as
    aiortc does (the SDK, which must see a network change at once)."""
    global _host_address_ttl
    _host_address_ttl = ttl
    _host_address_cache.clear()
    aioice.ice.get_host_addresses = _cached_host_addresses if ttl > 0 else _host_addresses


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


def quiet_sender_rtcp(sender: RTCRtpSender) -> None:
    """Keep aiortc's sender from sending sender reports on a timer of its own (one task
    waking every 0.5–1.5 s per track): the node sends every track's at once, from one
    timer (DownTrack.send_sender_report). The sender's RTCP task only waits for stop()
    and then sends its BYE, as aiortc's does."""

    async def run_rtcp() -> None:
        sender._RTCRtpSender__rtcp_started.set()
        try:
            await asyncio.get_running_loop().create_future()  # until stop() cancels it
        except asyncio.CancelledError:
            pass
        try:
            await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])
        finally:
            sender._RTCRtpSender__rtcp_exited.set()

    sender._run_rtcp = run_rtcp


def sender_report(ssrc: int, ntp_timestamp: int, rtp_timestamp: int, packets: int,
                  octets: int, cname: str | None) -> bytes:
    """A compound RTCP packet: a sender report (RFC 3550 6.4.1) and the CNAME."""
    parts: list[Any] = [RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(
        ntp_timestamp=ntp_timestamp, rtp_timestamp=rtp_timestamp,
        packet_count=packets & 0xFFFFFFFF, octet_count=octets & 0xFFFFFFFF))]
    if cname is not None:
        parts.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(
            ssrc=ssrc, items=[(1, cname.encode("utf8"))])]))
    return b"".join(bytes(part) for part in parts)


def sender_cname(sender: RTCRtpSender) -> str | None:
    return sender._RTCRtpSender__cname


def sender_ssrc(sender: RTCRtpSender) -> int:
    return sender._ssrc


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
                 "dropped", "unsent")

    BUFFER_SIZE = 2048
    MAX_PLAINTEXT = BUFFER_SIZE - SRTP_MAX_TRAILER_LEN
    native = False  # whether make_slot can give a native Slot

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
        self.unsent = 0  # accepted by write(), then not sent (batched writers only)

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

    def make_slot(self, ssrc: int):
        """A native Slot sending with this writer's session and socket (None here)."""
        return None

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

    def write_rtcp(self, payload: bytes) -> bool:
        """SRTCP-protect a (compound) RTCP packet with this writer's session and send it."""
        if (self._sock is None and not self._bind()) or self._transport.is_closing():
            return False
        try:
            self._sock.sendto(self._session.protect_rtcp(payload), self._addr)
        except (OSError, pylibsrtp.Error):
            return False
        return True

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


def srtp_protect_address() -> int:
    """The address of srtp_protect in the libsrtp that pylibsrtp's binding bundles (the
    native fast path calls that one: no second libsrtp, the same key state)."""
    return int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, "srtp_protect")))


def srtp_context_address(session: pylibsrtp.Session) -> int:
    """The address of a pylibsrtp session's srtp_t (alive as long as `session` is)."""
    return int(srtp_ffi.cast("uintptr_t", session._srtp[0]))


class NativePacketWriter(PacketWriter):
    """A PacketWriter whose packets are patched, protected and sent by the native fast
    path (unbroken.media._fastpath through `batch`, a unbroken.media.fastpath.SendBatch).

    Same SRTP session and socket as PacketWriter: it hands the C code the session's
    srtp_t and the socket's file descriptor. `bytes` is not counted on this path. While the batch is collecting (during one
    forwarded packet's fan-out) `write` queues the packet and the batch sends every
    queued one at its flush; otherwise (retransmissions, RTX) it sends at once. The
    socket is checked open when a packet is queued; the flush follows in the same
    event-loop callback, so the descriptor cannot have been closed and reused between.
    """

    __slots__ = ("_batch", "_target")
    native = True

    def __init__(self, dtls: RTCDtlsTransport, batch) -> None:
        self._batch = batch
        self._target = None
        super().__init__(dtls)

    @classmethod
    def on_socket(cls, session, transport: asyncio.DatagramTransport, addr,
                  batch=None) -> "NativePacketWriter":
        """A native writer on a given SRTP session and UDP transport (benchmarks, tests)."""
        writer = cls.__new__(cls)
        writer._batch = batch
        writer._target = None
        writer._setup(None, None)
        writer._use(session, transport, addr)
        return writer

    def _use(self, session, transport: asyncio.DatagramTransport, addr) -> None:
        super()._use(session, transport, addr)
        self._target = self._batch.target(srtp_context_address(session),
                                          self._sock.fileno(), addr[0], addr[1], session)

    def make_slot(self, ssrc: int):
        """A Slot on this writer's SRTP session and (a duplicate of) its socket, sending
        with `ssrc`; None until the writer is bound or once its transport closes."""
        if (self._sock is None and not self._bind()) or self._transport.is_closing():
            return None
        return self._batch.slot(srtp_context_address(self._session), self._sock.fileno(),
                                self._addr[0], self._addr[1], self._session, ssrc,
                                shared=getattr(self._transport, "shared", False))

    def write(self, template: bytes, seq: int, ts: int, ssrc: int) -> bool:
        if (self._sock is None and not self._bind()) or len(template) > self.MAX_PLAINTEXT:
            return False
        if self._transport.is_closing():
            self.dropped += 1
            return False
        batch = self._batch
        if batch.collecting:
            batch.add(template, (self._target, seq, ts, ssrc), self)
            self.packets += 1
            return True
        return batch.send_now(template, (self._target, seq, ts, ssrc), self, True)

    def write_plain(self, plaintext: bytes) -> bool:
        if (self._sock is None and not self._bind()) or len(plaintext) > self.MAX_PLAINTEXT:
            return False
        if self._transport.is_closing():
            self.dropped += 1
            return False
        return self._batch.send_now(plaintext, (self._target, 0, 0, 0), self, False)

    def not_sent(self, queued: bool) -> None:
        """The batch could not protect or send one of this writer's packets."""
        self.dropped += 1
        if queued:
            self.unsent += 1
            self.packets -= 1


# --- client side (the SDK's WHEP viewer and recorder) ------------------------------------

def tap_received_rtp(receiver: RTCRtpReceiver, on_packet: RtpTap, decode: bool) -> None:
    """Call `on_packet(packet)` for every decrypted RTP packet routed to `receiver`; with
    `decode` False the receiver itself never sees them (no decoding, no RTCP feedback)."""
    original = receiver._handle_rtp_packet

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        on_packet(packet)
        if decode:
            await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp_packet


class _DecoderQueueTee:
    """Stands in for a receiver's decoder queue: hands each encoded frame to a tap, then
    passes it on to the decoder thread."""

    def __init__(self, inner, on_frame: FrameTap) -> None:
        self._inner = inner
        self._on_frame = on_frame

    def put(self, item) -> None:
        if item is not None:
            try:
                self._on_frame(*item)
            except Exception:
                log.exception("a decoder queue tap failed")
        self._inner.put(item)

    def get(self, *args, **kwargs):
        return self._inner.get(*args, **kwargs)


def tee_decoder_queue(receiver: RTCRtpReceiver, on_frame: FrameTap) -> None:
    """Call `on_frame(codec, encoded_frame)` for every frame `receiver` hands to its
    decoder (call before the receiver starts)."""
    receiver._RTCRtpReceiver__decoder_queue = _DecoderQueueTee(
        receiver._RTCRtpReceiver__decoder_queue, on_frame)


# The SDK viewer's loss recovery (unbroken.client.jitter): its own video jitter buffer and
# NACK generator on a decoding receiver. Listed here, apart from the tables above, so that
# the hooks of media/ and of the client do not meet in one edit.
HOOKS += (
    (RTCRtpReceiver, "__nack_generator", "use_nack_generator: the SDK viewer's NACK retries"),
)
CALL_SHAPES += (
    (RTCRtpReceiver, "if self.__nack_generator is not None and self.__nack_generator.add(packet):",
     "the NACK generator's add(packet) -> bool says when to NACK"),
    (RTCRtpReceiver, "packet.ssrc, sorted(self.__nack_generator.missing)",
     "a NACK lists the generator's `missing`"),
    (RTCRtpReceiver, "if pli_flag:\n            await self._send_rtcp_pli(packet.ssrc)",
     "the jitter buffer's pli_flag makes the receiver send a PLI"),
)
__all__ += ["use_nack_generator", "use_video_jitter_buffer"]


def use_video_jitter_buffer(receiver: RTCRtpReceiver, buffer: Any) -> None:
    """Let `buffer` (``add(packet) -> (pli_flag, JitterFrame | None)``) assemble the
    frames of a video receiver, in place of aiortc's jitter buffer."""
    receiver._RTCRtpReceiver__jitter_buffer = buffer


def use_nack_generator(receiver: RTCRtpReceiver, generator: Any) -> None:
    """Let `generator` (an aiortc ``NackGenerator``) say when a video receiver NACKs."""
    receiver._RTCRtpReceiver__nack_generator = generator
