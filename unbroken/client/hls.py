"""HLS player: plays ``{url_base}/hls/{stream}/index.m3u8`` and checks what arrives.

It reads the playlist, downloads segments (or, with Low-Latency HLS, parts as soon as
they exist, by blocking playlist reloads), demuxes the MPEG-TS and decodes the video
with PyAV (in a worker thread). Same counters as the WHEP viewer: ``frames``,
``counters`` (frame counters read from the picture), ``arrivals``, ``first_frame_at``,
``audio_frames`` (AAC frames, not decoded), ``bytes``; plus ``discontinuities`` and
``ended`` (the playlist got EXT-X-ENDLIST). Frames are handed out as soon as decoded
(no presentation pacing). The Subscriber plays HLS through it (``play_attempts``); the
player itself knows nothing of restores.
"""

from __future__ import annotations

import asyncio
import io
import logging
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
import av

from .framecode import read_counter

__all__ = ["HlsError", "HlsPlayer", "MediaPlaylist", "PartEntry", "SegmentEntry",
           "parse_playlist"]

log = logging.getLogger("unbroken.client.hls")

HISTORY = 2000
MAX_ERRORS = 3  # HTTP failures in a row before the player gives up


class HlsError(Exception):
    """The server refused the playlist (e.g. 404: the stream is not live)."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


# --- playlist ----------------------------------------------------------------------------

@dataclass
class PartEntry:
    """One LL-HLS part of a segment (``EXT-X-PART``)."""

    uri: str
    duration: float
    independent: bool


@dataclass
class SegmentEntry:
    """One media segment: its sequence number, URI, duration, tags and parts."""

    msn: int
    uri: str | None = None  # None while the segment is still being made (parts only)
    duration: float = 0.0
    discontinuity: bool = False
    program_date_time: str | None = None
    parts: list[PartEntry] = field(default_factory=list)


@dataclass
class MediaPlaylist:
    """A parsed media playlist: its segments and the LL-HLS server controls."""

    target_duration: float = 0.0
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    part_target: float | None = None
    can_block_reload: bool = False
    ended: bool = False
    preload_hint: str | None = None
    segments: list[SegmentEntry] = field(default_factory=list)

    def segment(self, msn: int) -> SegmentEntry | None:
        first = self.media_sequence
        if first <= msn < first + len(self.segments):
            return self.segments[msn - first]
        return None

    @property
    def last_msn(self) -> int:
        return self.media_sequence + len(self.segments) - 1


def _attributes(text: str) -> dict[str, str]:
    out, key, value, quoted, reading_key = {}, "", "", False, True
    for ch in text + ",":
        if reading_key:
            if ch == "=":
                reading_key = False
            elif ch != ",":
                key += ch
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out[key.strip()] = value
            key, value, reading_key = "", "", True
        else:
            value += ch
    return out


def parse_playlist(text: str) -> MediaPlaylist:
    """A media playlist (RFC 8216 with the LL-HLS tags this player uses)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an M3U8 playlist")
    pl = MediaPlaylist()
    pending = SegmentEntry(0)
    segments: list[SegmentEntry] = []
    for line in lines[1:]:
        if line.startswith("#EXT-X-TARGETDURATION:"):
            pl.target_duration = float(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            pl.media_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            pl.discontinuity_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PART-INF:"):
            pl.part_target = float(_attributes(line.split(":", 1)[1])["PART-TARGET"])
        elif line.startswith("#EXT-X-SERVER-CONTROL:"):
            attrs = _attributes(line.split(":", 1)[1])
            pl.can_block_reload = attrs.get("CAN-BLOCK-RELOAD") == "YES"
        elif line == "#EXT-X-ENDLIST":
            pl.ended = True
        elif line == "#EXT-X-DISCONTINUITY":
            pending.discontinuity = True
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pending.program_date_time = line.split(":", 1)[1]
        elif line.startswith("#EXT-X-PART:"):
            attrs = _attributes(line.split(":", 1)[1])
            pending.parts.append(PartEntry(attrs["URI"], float(attrs["DURATION"]),
                                           attrs.get("INDEPENDENT") == "YES"))
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            attrs = _attributes(line.split(":", 1)[1])
            if attrs.get("TYPE") == "PART":
                pl.preload_hint = attrs.get("URI")
        elif line.startswith("#EXTINF:"):
            pending.duration = float(line.split(":", 1)[1].split(",")[0])
        elif not line.startswith("#"):
            pending.uri = line
            segments.append(pending)
            pending = SegmentEntry(0)
    if pending.parts:  # the segment in progress: parts only so far
        segments.append(pending)
    for i, seg in enumerate(segments):
        seg.msn = pl.media_sequence + i
    pl.segments = segments
    return pl


# --- the player --------------------------------------------------------------------------

class HlsPlayer:
    """Plays one stream's HLS playlist: follows the live edge (segments, or LL-HLS parts
    by blocking reloads), decodes, and keeps the same counters as ``WhepViewer``;
    ``on_end()`` when the playlist ends, ``on_error(exc)`` when requests keep failing.
    ``ssl``: an SSL context for an HTTPS base (e.g. ``unbroken.httpkit.tls.client_context``
    pinning a stream manager's self-signed certificate); the system's CAs without it."""

    def __init__(self, url_base: str, stream: str, token: str | None = None, *,
                 decode: bool = True, low_latency: bool = True,
                 on_frame: Callable[[av.VideoFrame, int | None], None] | None = None,
                 on_end: Callable[[], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None,
                 http_timeout: float = 5.0, ssl: ssl_module.SSLContext | None = None) -> None:
        self.url_base = url_base.rstrip("/")
        self.stream = stream
        self.url = f"{self.url_base}/hls/{stream}/index.m3u8"
        self.token = token
        self.decode = decode
        self.low_latency = low_latency
        self.on_frame = on_frame
        self.on_end = on_end
        self.on_error = on_error
        self.http_timeout = http_timeout
        self.ssl = ssl
        self.codec = "video/H264"
        self.frames = 0
        self.audio_frames = 0
        self.bytes = 0
        self.chunks = 0  # segments or parts downloaded
        self.discontinuities = 0
        self.ended = False
        self.counters: deque[int | None] = deque(maxlen=HISTORY)
        self.arrivals: deque[float] = deque(maxlen=HISTORY)
        self.started_at: float | None = None
        self.first_frame_at: float | None = None
        self.mode = ""  # "ll-hls" | "hls"
        self.playlist: MediaPlaylist | None = None
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self._progress = asyncio.Event()
        self._decoder = None
        self._errors = 0

    @property
    def time_to_first_frame(self) -> float | None:
        if self.first_frame_at is None or self.started_at is None:
            return None
        return self.first_frame_at - self.started_at

    async def start(self) -> "HlsPlayer":
        self.started_at = time.monotonic()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(ssl=self.ssl or True))
        try:
            self.playlist = await self._fetch_playlist()
        except BaseException:
            await self._http.close()
            raise
        ll = bool(self.low_latency and self.playlist.part_target and
                  self.playlist.can_block_reload)
        self.mode = "ll-hls" if ll else "hls"
        self._task = asyncio.create_task(self._play_ll() if ll else self._play_segments())
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._http:
            await self._http.close()
            self._http = None

    async def wait_frames(self, n: int, timeout: float) -> None:
        """Wait until ``frames >= n``; TimeoutError says how far it got."""
        try:
            async with asyncio.timeout(timeout):
                while self.frames < n:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.url}: {self.frames} of {n} frames after {timeout} s"
                               ) from None

    async def wait_first_frame(self, timeout: float) -> float:
        await self.wait_frames(1, timeout)
        return self.first_frame_at

    def fps(self, window: float = 1.0) -> float:
        since = time.monotonic() - window
        return sum(1 for t in self.arrivals if t > since) / window

    def stats(self) -> dict:
        return dict(frames=self.frames, audio_frames=self.audio_frames, bytes=self.bytes,
                    chunks=self.chunks, fps=self.fps(), codec=self.codec, mode=self.mode,
                    discontinuities=self.discontinuities, ended=self.ended)

    # HTTP ----------------------------------------------------------------------------
    async def _get(self, url: str, params: dict | None = None,
                   timeout: float | None = None) -> bytes:
        t = aiohttp.ClientTimeout(total=timeout or self.http_timeout)
        async with self._http.get(url, params=params, timeout=t) as r:
            if r.status != 200:
                raise HlsError(r.status, (await r.text())[:200])
            return await r.read()

    async def _fetch_playlist(self, msn: int | None = None, part: int | None = None
                              ) -> MediaPlaylist:
        params = {}
        timeout = None
        if msn is not None:
            params["_HLS_msn"] = str(msn)
            if part is not None:
                params["_HLS_part"] = str(part)
            target = self.playlist.target_duration if self.playlist else 1.0
            timeout = self.http_timeout + 3 * target
        data = await self._get(self.url, params or None, timeout)
        return parse_playlist(data.decode())

    # playing -------------------------------------------------------------------------
    async def _play_ll(self) -> None:
        pl = self.playlist
        msn, part = self._ll_start(pl)
        while True:
            try:
                seg = pl.segment(msn)
                if seg is None and msn < pl.media_sequence:
                    msn, part = self._ll_start(pl)  # fell behind the window: jump ahead
                    continue
                if seg is not None and part < len(seg.parts):
                    if part == 0 and seg.discontinuity:
                        self._discontinuity()
                    await self._play_chunk(urljoin(self.url, seg.parts[part].uri))
                    part += 1
                    self._errors = 0
                    continue
                if seg is not None and seg.uri is not None:
                    if not seg.parts:  # listed without parts: take the whole segment
                        if seg.discontinuity:
                            self._discontinuity()
                        await self._play_chunk(urljoin(self.url, seg.uri))
                    msn, part = msn + 1, 0
                    continue
                if pl.ended:
                    self._end()
                    return
                try:
                    pl = await self._fetch_playlist(msn, part)
                except HlsError as exc:
                    if exc.status not in (400, 503):
                        raise
                    # 503: the part did not come in time, ask again; 400: our position
                    # is not in this playlist (e.g. the server started a new run): resync
                    pl = await self._fetch_playlist()
                    if exc.status == 400:
                        msn, part = self._ll_start(pl)
                        self._discontinuity()
                self.playlist = pl
                self._errors = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if not await self._failed(exc):
                    return
                pl = self.playlist

    def _ll_start(self, pl: MediaPlaylist) -> tuple[int, int]:
        """The newest segment's first part: the live edge, at a keyframe."""
        for seg in reversed(pl.segments):
            if seg.parts and seg.parts[0].independent:
                return seg.msn, 0
        last = pl.segments[-1].msn if pl.segments else pl.media_sequence
        return last, 0

    async def _play_segments(self) -> None:
        pl = self.playlist
        complete = [s for s in pl.segments if s.uri]
        msn = complete[-1].msn if complete else pl.media_sequence
        while True:
            try:
                seg = pl.segment(msn)
                if seg is None and msn < pl.media_sequence:
                    msn = pl.media_sequence
                    continue
                if seg is not None and seg.uri is not None:
                    if seg.discontinuity:
                        self._discontinuity()
                    await self._play_chunk(urljoin(self.url, seg.uri))
                    msn += 1
                    self._errors = 0
                    continue
                if pl.ended:
                    self._end()
                    return
                await asyncio.sleep(max(0.1, pl.target_duration / 2))
                pl = self.playlist = await self._fetch_playlist()
                self._errors = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if not await self._failed(exc):
                    return
                pl = self.playlist

    async def _failed(self, exc: Exception) -> bool:
        self._errors += 1
        log.info("hls request failed", extra={"url": self.url, "error": repr(exc)[:200]})
        if self._errors >= MAX_ERRORS:
            if self.on_error:
                self.on_error(exc)
            return False
        await asyncio.sleep(0.2 * self._errors)
        try:
            self.playlist = await self._fetch_playlist()
        except Exception:  # noqa: BLE001
            pass
        return True

    def _discontinuity(self) -> None:
        self.discontinuities += 1
        self._decoder = None  # new source: new stream parameters

    def _end(self) -> None:
        self.ended = True
        self._progress.set()
        if self.on_end:
            self.on_end()

    async def _play_chunk(self, url: str) -> None:
        data = await self._get(url)
        self.chunks += 1
        self.bytes += len(data)
        frames, audio = await asyncio.to_thread(self._demux_decode, data)
        self.audio_frames += audio
        now = time.monotonic()
        for frame, counter in frames:
            if self.first_frame_at is None:
                self.first_frame_at = now
            self.frames += 1
            self.arrivals.append(now)
            self.counters.append(counter)
            if self.on_frame and frame is not None:
                self.on_frame(frame, counter)
        self._progress.set()

    def _demux_decode(self, data: bytes) -> tuple[list, int]:
        """(decoded video frames with their counters, audio frame count) of one chunk."""
        frames, audio = [], 0
        with av.open(io.BytesIO(data), format="mpegts") as container:
            for packet in container.demux():
                kind = packet.stream.type
                if kind == "audio":
                    if packet.size:
                        audio += 1
                    continue
                if kind != "video" or not packet.size:
                    continue
                if not self.decode:
                    frames.append((None, None))
                    continue
                if self._decoder is None:
                    self._decoder = av.CodecContext.create(packet.stream.codec_context.name,
                                                           "r")
                    self.codec = "video/" + self._decoder.name.upper()
                try:
                    decoded = self._decoder.decode(packet)
                except av.error.FFmpegError:
                    continue
                for frame in decoded:
                    frames.append((frame, read_counter(frame)))
        return frames, audio

