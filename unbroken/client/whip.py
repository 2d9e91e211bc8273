"""WHIP publisher (RFC 9725) on aiortc, and the HTTP offer/answer exchange WHEP reuses.

WHIP and WHEP negotiate the same way: POST the complete SDP offer
(``application/sdp``, aiortc gathers all candidates first, no trickle), get
``201 Created`` with the answer and a ``Location`` for the session, DELETE the
``Location`` to end it. ``OfferAnswerSession`` does that part; ``WhipPublisher``
adds send-only tracks. Network failures surface as ``aiohttp.ClientError`` or
``TimeoutError``; an HTTP answer other than 201 as ``WhipError``.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import logging
import time
from typing import Callable
from urllib.parse import quote, urljoin

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription

from unbroken.media import rtc_internals
from unbroken.protocol.whip_whep import REPLACES, Resource, parse_events_link

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0  # seconds, a whole POST exchange
DELETE_TIMEOUT = 2.0  # seconds; ending a session never waits long on a dead server
CONNECT_TIMEOUT = 0.5  # seconds for a TCP connect to the node
VIDEO_CODECS = {"h264": "video/H264", "vp8": "video/VP8"}


class WhipError(Exception):
    """The server refused the session.

    ``status``: HTTP status; ``reason``: its explanation; ``code``: the
    machine-readable ``error`` of a JSON error body ({"error": code,
    "reason": text}), if any; ``retry_after``: seconds, from a Retry-After header.
    """

    def __init__(self, status: int, reason: str, retry_after: float | None = None,
                 code: str | None = None) -> None:
        super().__init__(f"HTTP {status}{' ' + code if code else ''}: {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.code = code


class OfferAnswerSession:
    """One RTCPeerConnection negotiated by POSTing its offer to ``{url_base}/{path}/{stream}``.

    Subclasses set ``path`` and ``error_class`` and add transceivers in
    ``_add_transceivers``; ``_post_offer`` and ``_delete_location`` are the HTTP
    exchange, which the session-channel twins replace. ``on_state(state)`` is called on every change of
    the peer connection's ``connectionState``.
    """

    path = ""
    error_class: type[WhipError] = WhipError

    def __init__(self, url_base: str, stream: str, token: str | None = None, *,
                 ice_servers: list[RTCIceServer] | None = None,
                 http_timeout: float = HTTP_TIMEOUT,
                 http: aiohttp.ClientSession | None = None,
                 on_state: Callable[[str], None] | None = None) -> None:
        self.url = f"{url_base.rstrip('/')}/{self.path}/{quote(stream, safe='')}"
        self.stream = stream
        self.token = token
        self.on_state = on_state
        self.http_timeout = http_timeout  # seconds for a whole offer/answer exchange
        self.pc: RTCPeerConnection | None = None
        self.location: str | None = None
        self.answer_sdp: str | None = None
        self.posted_at: float | None = None  # time.monotonic() when the offer was POSTed
        self.video_codecs: dict[int, str] = {}  # answered video payload types -> mime type
        self.codec: str | None = None  # video mime type, e.g. "video/H264"
        self.events_url: str | None = None  # the session's server-sent events, if offered
        self.proxied = False  # the answer came through a proxy (a ``Via`` header)
        self.post_query = ""  # e.g. "?wait_live_ms=1000" (WHEP)
        self._ice_servers = ice_servers or []  # aiortc's default is a public STUN server
        # a silent path must not hold a connect for long: the SDK tries elsewhere instead
        self._timeout = aiohttp.ClientTimeout(total=http_timeout,
                                              sock_connect=min(http_timeout, CONNECT_TIMEOUT))
        self._http = http
        self._own_http = http is None
        self._state_changed = asyncio.Event()
        self._stopped = False

    @property
    def connection_state(self) -> str:
        return self.pc.connectionState if self.pc else "new"

    async def start(self):
        """Negotiate the session; returns self. On failure everything is closed again."""
        if self._http is None:
            # a fresh connection per request: after a network change a pooled socket is
            # dead, and the DELETE that ends the old session must still get through
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True))
        # max-bundle (as browsers offer): audio and video share one ICE/DTLS transport from
        # the start, so candidates are gathered once, not once per kind
        self.pc = rtc_internals.new_peer_connection(RTCConfiguration(
            iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc.on("connectionstatechange", self._on_connection_state)
        try:
            self._add_transceivers(self.pc)
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self.answer_sdp, self.location = await self._post_offer(self.pc.localDescription.sdp)
            await self.pc.setRemoteDescription(RTCSessionDescription(self.answer_sdp, "answer"))
            self.video_codecs = _video_codecs(self.answer_sdp)
            self.codec = next(iter(self.video_codecs.values()), None)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """End the session: stop sending media at once, DELETE its Location (errors
        ignored: the node may be gone), then close the connection."""
        if self._stopped:
            return
        self._stopped = True
        if self.pc:
            for sender in self.pc.getSenders():
                sender.replaceTrack(None)
        if self.location and self._http:
            await self._delete_location()
        if self.pc:
            await self.pc.close()
        if self._own_http and self._http:
            await self._http.close()

    async def wait_connected(self, timeout: float) -> None:
        """Wait until the connection is ``connected``; raises if it fails or times out."""
        async with asyncio.timeout(timeout):
            while self.connection_state != "connected":
                if self.connection_state in ("failed", "closed"):
                    raise ConnectionError(f"{self.url}: connection {self.connection_state}")
                self._state_changed.clear()
                await self._state_changed.wait()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    def _add_transceivers(self, pc: RTCPeerConnection) -> None:
        raise NotImplementedError

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.debug("%s: connection %s", self.url, state)
        self._state_changed.set()
        if self.on_state:
            self.on_state(state)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _post_offer(self, offer_sdp: str) -> tuple[str, str]:
        """POST the offer; returns (answer SDP, absolute Location URL)."""
        self.posted_at = time.monotonic()
        async with self._http.post(self.url + self.post_query, data=offer_sdp,
                                   timeout=self._timeout,
                                   headers=self._headers("application/sdp")) as resp:
            body = await resp.text()
            if resp.status != 201:
                code, reason = _error_body(body)
                raise self.error_class(resp.status, reason or resp.reason or "",
                                       _retry_after(resp.headers.get("Retry-After")), code)
            location = resp.headers.get("Location")
            if not location:
                raise self.error_class(resp.status, "answer without a Location header")
            events = parse_events_link(resp.headers.getall("Link", []))
            self.proxied = "Via" in resp.headers
            self.events_url = urljoin(self.url, events) if events else None
            return body, urljoin(self.url, location)

    async def _delete_location(self) -> None:
        try:
            async with self._http.delete(self.location, headers=self._headers(),
                                         timeout=aiohttp.ClientTimeout(total=DELETE_TIMEOUT)):
                pass
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.debug("DELETE %s failed: %r", self.location, exc)


class WhipPublisher(OfferAnswerSession):
    """Publishes ``tracks`` to ``POST {url_base}/whip/{stream}``.

    ``video_codec`` ("h264", "vp8" or None for aiortc's default order) is
    forced with codec preferences, RTX kept. The tracks outlive the session:
    each is sent through a ``SessionTrack`` (aiortc stops a sender's track when
    the connection closes), so the same sources can be published again.
    """

    path = "whip"
    error_class = WhipError

    def __init__(self, url_base: str, stream: str, tracks: list[MediaStreamTrack],
                 video_codec: str | None = "h264", token: str | None = None,
                 replaces: str | None = None, **kwargs) -> None:
        if video_codec is not None and video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec must be one of {sorted(VIDEO_CODECS)} or None")
        super().__init__(url_base, stream, token, **kwargs)
        # our previous session's Location: the node lets us take over from it at once
        previous = Resource.parse(replaces) if replaces else None
        self.replaces = previous.session if previous else None
        if self.replaces:
            self.post_query = f"?{REPLACES}={quote(self.replaces)}"
        self.tracks = list(tracks)
        self.video_codec = video_codec

    def _add_transceivers(self, pc: RTCPeerConnection) -> None:
        for track in self.tracks:
            transceiver = pc.addTransceiver(SessionTrack(track), direction="sendonly")
            if track.kind == "video" and self.video_codec:
                transceiver.setCodecPreferences(video_codec_preferences(self.video_codec))

    async def report_age(self) -> float | None:
        """Seconds since the node's last receiver report on any of our streams (RTCP,
        every 0.5-1.5 s while the node receives us), None before the first."""
        if self.pc is None:
            return None
        stats = await self.pc.getStats()
        stamps = [s.timestamp for s in stats.values() if s.type == "remote-inbound-rtp"]
        if not stamps:
            return None
        return (datetime.datetime.now(datetime.timezone.utc) - max(stamps)).total_seconds()


class SessionTrack(MediaStreamTrack):
    """Passes a source track's frames to one session; stopping it leaves the source live."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()


def video_codec_preferences(name: str) -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs with mime type VIDEO_CODECS[name], then RTX.

    For H264, packetization-mode=1 entries come first.
    """
    codecs = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in codecs if c.mimeType.lower() == VIDEO_CODECS[name].lower()]
    chosen.sort(key=lambda c: c.parameters.get("packetization-mode") != "1")
    return chosen + [c for c in codecs if c.mimeType.lower() == "video/rtx"]


def _video_codecs(answer_sdp: str) -> dict[int, str]:
    """Payload type -> mime type of the video codecs (RTX left out) in an answer, in order."""
    for media in SessionDescription.parse(answer_sdp).media:
        if media.kind == "video":
            return {c.payloadType: c.mimeType for c in media.rtp.codecs
                    if c.mimeType.lower() != "video/rtx"}
    return {}


def _error_body(body: str) -> tuple[str | None, str]:
    """(code, reason) from a JSON error body, else (None, the body text)."""
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return None, text[:500]
    if not isinstance(data, dict):
        return None, text[:500]
    code = data.get("error")
    reason = data.get("reason") or data.get("message") or ""
    return (code if isinstance(code, str) else None), str(reason)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
