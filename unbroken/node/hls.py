"""HLS fallback playback: ``GET /hls/{stream}/index.m3u8`` and its segments.

Packaging (unbroken.media.hls) is attached to a stream as one more subscriber (a tap per
kind, fed the same forwarded packets as WHEP viewers). When it runs (config ``hls``):

- ``on_demand`` (default): from the first HLS request for a live stream until no HLS
  request came for ``hls_idle_timeout`` seconds;
- ``always``: every live stream whose video is H264 (no transcoding) is packaged from
  its start; VP8/Opus streams still only while someone watches (transcoding costs);
- ``off``: no HLS (404).

VP8 video and Opus audio are transcoded (H264/AAC) only if ``hls_transcode`` is
``on_demand``. The playlist lives as long as the stream name: a publisher that comes
back within ``hls_end_grace`` seconds continues it after an EXT-X-DISCONTINUITY; after
that the playlist gets EXT-X-ENDLIST, is served a little longer (so players see the end),
then everything is freed (segments are only ever in memory).

Caching: the playlist is ``no-cache`` (it changes every part); a blocking-reload playlist
(``_HLS_msn``) may be cached briefly; segments and parts never change under their name
(each packaging run has its own random name prefix) and are cacheable for long.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from aiohttp import web

from unbroken.media.hls import HlsPackager, HlsSettings
from unbroken.media.packet import ForwardPacket
from unbroken.media.sink import TrackSink
from unbroken.media.stream import KINDS, Stream, StreamChange

from .http_common import CORS_HEADERS, HttpError, stream_name

log = logging.getLogger("unbroken.node.hls")

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
PLAYLIST_CACHE = "no-cache"
SEGMENT_CACHE = "public, max-age=3600, immutable"


class HlsTap(TrackSink):
    """The packager as a stream sink of one kind: hands every packet to the packager."""

    def __init__(self, kind: str, mime: str, clock_rate: int, packager: HlsPackager) -> None:
        self.kind = kind
        self.mime = mime
        self.clock_rate = clock_rate
        self.packager = packager

    def write(self, packet: ForwardPacket, now: float) -> None:
        self.packager.push(self.kind, self.mime, self.clock_rate, packet)


class StreamHls:
    """HLS of one stream name, across the Stream objects and publishers it sees: owns its
    packager, its taps on the current Stream, and the timers that end or stop it."""

    def __init__(self, service: "HlsService", name: str) -> None:
        self.service = service
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.packager = HlsPackager(name, service.settings, on_update=self._updated_threadsafe,
                                    request_keyframe=self._keyframe_threadsafe,
                                    transcode=service.config.hls_transcode != "off")
        self.stream: Stream | None = None
        self.taps: dict[str, HlsTap] = {}
        self.last_request = time.monotonic()
        self.gone_since: float | None = time.monotonic()
        self.ended_at: float | None = None
        self.closed = False
        self.waiters = 0  # requests held until the playlist or a part is there
        self._changed = asyncio.Event()
        self._end_timer: asyncio.TimerHandle | None = None
        self._idle_timer = self.loop.call_later(service.config.hls_idle_timeout,
                                                self._check_idle)
        self._linger_timer: asyncio.TimerHandle | None = None

    # feeding -----------------------------------------------------------------------
    def attach(self, stream: Stream) -> None:
        if stream is self.stream:
            return
        self._detach()
        self.stream = stream
        if stream.live:
            self._new_source()

    def _detach(self) -> None:
        if self.stream is None:
            return
        for tap in self.taps.values():
            self.stream.remove_sink(tap)
        self.taps = {}
        self.stream = None

    def _new_source(self) -> None:
        stream = self.stream
        codecs = stream.codecs()
        for tap in self.taps.values():
            stream.remove_sink(tap)
        self.taps = {}
        for kind in KINDS:
            codec = codecs.get(kind)
            if codec is not None:
                tap = HlsTap(kind, codec.mimeType.lower(), codec.clockRate, self.packager)
                stream.add_sink(tap)
                self.taps[kind] = tap
        self.packager.set_source({k: t.mime for k, t in self.taps.items()})
        self.gone_since = None
        _cancel(self._end_timer)
        if self.ended_at is None:
            stream.request_keyframe("video")

    def on_stream_event(self, event: StreamChange, stream: Stream) -> None:
        """An event of a stream with this entry's name (maybe a new Stream object)."""
        if self.closed or self.ended_at is not None:
            return
        if event is StreamChange.ACTIVE:
            if stream is self.stream:
                self._new_source()
            else:
                self.attach(stream)
        elif stream is not self.stream:
            return
        elif event is StreamChange.CODEC:
            codecs = stream.codecs()
            if any(codecs.get(k) is None or codecs[k].mimeType.lower() != t.mime
                   for k, t in self.taps.items()) or set(codecs) != set(self.taps):
                self._new_source()
        elif event is StreamChange.INACTIVE and self.gone_since is None:
            self.packager.set_source(None)
            self.gone_since = time.monotonic()
            self._end_timer = self.loop.call_later(self.service.config.hls_end_grace,
                                                   self.end)

    def end(self) -> None:
        if self.ended_at is None:
            self.ended_at = time.monotonic()
            self._detach()
            self.packager.end()
            self._linger_timer = self.loop.call_later(
                self.service.linger, self.service.expire, self, "ended")
            log.info("hls ended", extra={"stream": self.name})

    def _check_idle(self) -> None:
        """Stop an on-demand (or transcoding) packaging nobody requested for a while."""
        timeout = self.service.config.hls_idle_timeout
        idle_for = time.monotonic() - self.last_request
        if self.ended_at is not None:
            return
        if not self.waiters and idle_for > timeout and (
                self.service.config.hls == "on_demand" or self.packager.mode == "transcode"):
            self.service.expire(self, "idle")
            return
        wait = timeout - idle_for if not self.waiters and idle_for < timeout else timeout
        self._idle_timer = self.loop.call_later(max(wait, 0.0) + 0.01, self._check_idle)

    def close(self) -> None:
        self.closed = True
        for timer in (self._end_timer, self._idle_timer, self._linger_timer):
            _cancel(timer)
        self._detach()
        self.packager.close(timeout=0)
        self._notify()

    # worker → event loop -----------------------------------------------------------
    def _updated_threadsafe(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._notify)
        except RuntimeError:
            pass  # loop closed

    def _keyframe_threadsafe(self) -> None:
        def ask():
            if self.stream is not None:
                self.stream.request_keyframe("video")
        try:
            self.loop.call_soon_threadsafe(ask)
        except RuntimeError:
            pass

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if not self.closed and not self.packager.alive:
            self.service.expire(self, "worker died")

    async def wait_for(self, condition, timeout: float) -> bool:
        """Wait until `condition()` holds (re-checked on every playlist change). A waiting
        request is a viewer: the packaging is not idle meanwhile."""
        deadline = self.loop.time() + timeout
        self.waiters += 1
        try:
            while not condition():
                remaining = deadline - self.loop.time()
                if remaining <= 0 or self.closed:
                    return condition()
                changed = self._changed
                try:
                    async with asyncio.timeout(remaining):
                        await changed.wait()
                except TimeoutError:
                    pass
            return True
        finally:
            self.waiters -= 1
            self.last_request = time.monotonic()


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


class HlsService:
    """The node's HLS: one StreamHls per packaged stream name, started on request (or, with
    ``hls = always``, when an H264 stream goes live), told of every stream's events."""

    def __init__(self, state, config) -> None:
        self.state = state
        self.config = config
        self.settings = HlsSettings(segment_duration=config.hls_segment_duration,
                                    part_duration=config.hls_part_duration,
                                    window=config.hls_window,
                                    x264_preset=config.hls_x264_preset)
        self.settings.validate()
        self.entries: dict[str, StreamHls] = {}
        self.linger = 2 * max(self.settings.target_duration,
                              self.settings.window * self.settings.segment_duration)

    async def start(self) -> None:
        if self.config.hls == "off":
            return
        self.state.stream_listeners.append(self._on_stream_event)
        for stream in list(self.state.streams.values()):  # any that came before us
            stream.listeners.append(self._on_stream_event)
            if stream.live:
                self._on_stream_event(StreamChange.ACTIVE, stream)

    async def stop(self) -> None:
        if self._on_stream_event in self.state.stream_listeners:
            self.state.stream_listeners.remove(self._on_stream_event)
        for entry in list(self.entries.values()):
            entry.close()
        self.entries.clear()

    def _eligible_always(self, stream: Stream) -> bool:
        video = stream.codecs().get("video")
        return video is None or video.mimeType.lower() == "video/h264"

    def want(self, name: str) -> StreamHls | None:
        """A request for `name`'s HLS: its entry, started now if the stream is live."""
        entry = self.entries.get(name)
        stream = self.state.streams.get(name)
        live = stream is not None and stream.live
        if entry is not None and entry.ended_at is not None and live:
            self._remove(name, "published again")  # a new run, with its own names
            entry = None
        if entry is None:
            if not live:
                return None
            entry = self._create(name, stream)
        entry.last_request = time.monotonic()
        return entry

    def _create(self, name: str, stream: Stream) -> StreamHls:
        entry = StreamHls(self, name)
        self.entries[name] = entry
        entry.attach(stream)
        log.info("hls started", extra={"stream": name})
        return entry

    def _on_stream_event(self, event: StreamChange, stream: Stream) -> None:
        entry = self.entries.get(stream.name)
        if entry is not None and entry.ended_at is None:
            entry.on_stream_event(event, stream)
        elif event is not StreamChange.INACTIVE:
            self._start_always(stream)

    def _start_always(self, stream: Stream) -> None:
        """With ``hls = always``: package a live, eligible stream (a new run if the last
        one ended)."""
        if self.config.hls != "always" or not stream.live or not self._eligible_always(stream):
            return
        entry = self.entries.get(stream.name)
        if entry is not None:
            if entry.ended_at is None:
                return
            self._remove(stream.name, "published again")
        self._create(stream.name, stream)

    def expire(self, entry: StreamHls, why: str) -> None:
        """Stop `entry` (if still current); ``always`` starts the stream's next run."""
        if self.entries.get(entry.name) is not entry:
            return
        self._remove(entry.name, why)
        stream = self.state.streams.get(entry.name)
        if stream is not None:
            self._start_always(stream)

    def _remove(self, name: str, why: str) -> None:
        entry = self.entries.pop(name, None)
        if entry is not None:
            entry.close()
            log.info("hls stopped", extra={"stream": name, "reason": why})


# --- HTTP -------------------------------------------------------------------------------

HLS = web.AppKey("hls", HlsService)


def _service(request: web.Request) -> HlsService:
    return request.app[HLS]


def _check_access(request: web.Request, token: str) -> str:
    """Bearer token, or ``?token=`` (players cannot always set headers). Returns the query
    to repeat on segment URIs."""
    if not token:
        return ""
    given = request.query.get("token")
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        return "?token=" + given
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                          token.encode()):
        return ""
    raise HttpError(401, "unauthorized", "missing or wrong bearer token",
                    {"WWW-Authenticate": 'Bearer realm="unbroken"'})


async def _entry(request: web.Request) -> tuple[HlsService, StreamHls, str]:
    service = _service(request)
    if service.config.hls == "off":
        raise HttpError(404, "hls_off", "HLS is off on this node")
    query = _check_access(request, service.config.token)
    name = stream_name(request)
    entry = service.want(name)
    puller = service.state.puller
    if entry is None and puller is not None:  # an edge: pull the stream, then package it
        await puller.pull(name, 0)
        entry = service.want(name)
    if entry is None:
        raise HttpError(404, "not_live", f"stream {name!r} is not live",
                        {"Cache-Control": "no-cache",
                         "Retry-After": str(service.config.retry_after)})
    return service, entry, query


def _int_param(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 12:
        raise HttpError(400, "bad_query", f"{key} must be a non-negative integer")
    return int(value)


async def playlist(request: web.Request) -> web.Response:
    service, entry, query = await _entry(request)
    pl = entry.packager.playlist
    settings = service.settings
    msn, part = _int_param(request, "_HLS_msn"), _int_param(request, "_HLS_part")
    if part is not None and msn is None:
        raise HttpError(400, "bad_query", "_HLS_part needs _HLS_msn")
    cache = PLAYLIST_CACHE
    if msn is not None and settings.part_duration:
        last_msn, _ = pl.last_position()
        if msn > max(last_msn, pl.next_msn - 1) + 2:
            raise HttpError(400, "bad_query", "_HLS_msn is too far in the future")
        if not await entry.wait_for(lambda: pl.satisfies(msn, part),
                                    3 * settings.target_duration):
            raise HttpError(503, "not_yet", "the requested part did not come in time",
                            {"Retry-After": "1", "Cache-Control": "no-cache"})
        cache = f"public, max-age={3 * settings.target_duration}"
    elif not pl.ready:
        # a packaging run just started: give it a keyframe and a first part
        first_wait = min(8.0, 2 * settings.segment_duration + 3.0)
        if not await entry.wait_for(lambda: pl.ready or pl.ended, first_wait):
            raise HttpError(503, "starting", "HLS packaging is starting",
                            {"Retry-After": "1", "Cache-Control": "no-cache"})
    return web.Response(text=pl.render(query), content_type=PLAYLIST_TYPE,
                        headers={"Cache-Control": cache})


async def segment(request: web.Request) -> web.Response:
    service, entry, _ = await _entry(request)
    pl = entry.packager.playlist
    position = pl.parse_uri(request.match_info["file"])
    if position is None:
        raise HttpError(404, "no_such_segment", "no such segment",
                        {"Cache-Control": "no-cache"})
    msn, part = position
    data = pl.data(msn, part)
    if data is None and pl.is_pending(msn, part):
        # a preload hint (or a segment about to complete): hold the request until it exists
        wait = 2 * (service.settings.part_duration or service.settings.segment_duration) + 1
        await entry.wait_for(lambda: pl.data(msn, part) is not None or not pl.is_pending(
            msn, part), wait)
        data = pl.data(msn, part)
    if data is None:
        raise HttpError(404, "no_such_segment", "no such segment",
                        {"Cache-Control": "no-cache"})
    return web.Response(body=data, content_type=SEGMENT_TYPE,
                        headers={"Cache-Control": SEGMENT_CACHE})


async def stats(request: web.Request) -> web.Response:
    service = _service(request)
    _check_access(request, service.config.token)
    entry = service.entries.get(stream_name(request))
    if entry is None:
        raise HttpError(404, "not_packaged", "no HLS packaging for this stream")
    return web.json_response({"stream": entry.name, **entry.packager.stats(),
                              "taps": sorted(entry.taps)},
                             headers={"Cache-Control": "no-cache"})


async def options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=dict(CORS_HEADERS))


def setup(app: web.Application, state, config) -> HlsService:
    service = HlsService(state, config)
    app[HLS] = service
    app.router.add_get("/hls/{stream}/index.m3u8", playlist)
    app.router.add_get("/hls/{stream}/stats.json", stats)
    app.router.add_get("/hls/{stream}/{file}", segment)
    app.router.add_route("OPTIONS", "/hls/{stream}/{file}", options)

    async def on_startup(app: web.Application) -> None:
        await service.start()

    async def on_shutdown(app: web.Application) -> None:
        await service.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return service
