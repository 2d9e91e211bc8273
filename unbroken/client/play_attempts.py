"""The Subscriber's attempts, one per transport: WebRTC (WHEP or the session channel) and
HLS. Each opens one playback through its transport and turns what it sees into faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import av

from unbroken.protocol.faults import Fault, reconnect_fault
from unbroken.protocol.whip_whep import SseEvent

from .attempt import Attempt
from .events import ClientEvent
from .hls import HlsPlayer
from .options import RestoreOptions
from .recorder import EncodedRecorder
from .signaling import Signaling
from .watchdogs import FrameStallWatchdog, StallWatchdog
from .whep import WhepViewer

__all__ = ["FrameCallback", "HlsPlayAttempt", "PlaySettings", "WebRtcPlayAttempt",
           "new_play_attempt"]

FrameCallback = Callable[[av.VideoFrame, int | None], None]
WAIT_LIVE_MS = 500  # the node holds a WHEP POST this long for a publisher that restores
UPSTREAM_SILENCE_WINDOW = 2.5  # s of silence tolerated while the node is heard from
MOVED_POLL_INTERVAL = 0.1
HLS_SILENCE_TARGETS = 4  # HLS delivers in bursts: silence counts after 4 target durations


@dataclass(frozen=True)
class PlaySettings:
    """What every play attempt of one Subscriber shares: the stream, the sinks, the
    knobs, the URL list (to look for a publisher that moved) and where events go."""

    stream: str
    token: str | None
    options: RestoreOptions
    signaling: str
    decode: bool
    on_frame: FrameCallback | None
    recorder: EncodedRecorder | None
    urls: tuple[str, ...]
    emit: Callable[[ClientEvent], None]


class WebRtcPlayAttempt(Attempt):
    """One WebRTC playback on one node (WHEP, or a play over the session channel).

    Faults: the connection failing, the node going silent, media silence (extended while
    the node is still heard from: the break is upstream), frames stalled while video
    packets still arrive (a keyframe is asked for first), the stream staying inactive
    longer than `inactive_timeout_ms`, the publisher showing up on another URL (seed 000),
    and the node asking us to move."""

    transport = "whep"

    def __init__(self, url: str, settings: PlaySettings) -> None:
        super().__init__(url)
        self.settings = settings
        self.viewer: WhepViewer | None = None
        self.signaling: Signaling | None = None
        self._inactive_since: float | None = None
        self._silence_extended = False

    async def open(self) -> None:
        s = self.settings
        self.signaling = Signaling(s.signaling, self.url, s.stream, s.token, s.options,
                                   self._on_server_event, self.report_fault, self._media_flows)
        self.viewer = await self.signaling.play(
            decode=s.decode, on_frame=s.on_frame, on_state=self.connection_changed,
            wait_live_ms=WAIT_LIVE_MS,
            on_receivers=s.recorder.attach if s.recorder is not None else None)
        self.run_in_background(self.follow_frames(lambda: self.viewer.frames))
        if s.options.media_silence_ms:
            self._watch_silence(s.options.media_silence_ms / 1000)
        if s.options.frame_stall_ms and s.decode:
            viewer = self.viewer
            stalls = FrameStallWatchdog(Fault.FRAMES_STALLED, lambda: viewer.frames,
                                        lambda: viewer.video_packets,
                                        s.options.frame_stall_ms / 1000,
                                        viewer.request_keyframe, self.report_fault)
            stalls.paused = self._inactive_since is not None
            self.watch(stalls)

    def _media_flows(self) -> bool:
        """Media arrived within the silence window (1 s when that check is off)."""
        window = (self.settings.options.media_silence_ms or 1000) / 1000
        return self.last_media_at is not None and time.monotonic() - self.last_media_at < window

    def _watch_silence(self, window: float) -> None:
        silence = StallWatchdog(Fault.MEDIA_SILENCE, lambda: self.viewer.packets,
                                max(0.02, window / 3), 3, self._on_silence)
        silence.paused = self._inactive_since is not None
        self.watch(silence)

    def _on_silence(self, name: str, last_good_at: float) -> None:
        """No media. If the node is still heard from, the break is upstream: the node will
        say `inactive` when it sees the publisher go (and `active` when it is back on this
        same session), so wait for that, within a longer window."""
        heard = self.signaling.last_heard() if self.signaling else None
        period = self.settings.options.ping_period_ms / 1000
        recent = heard is not None and time.monotonic() - heard < 2 * period
        if recent and not self._silence_extended:
            self._silence_extended = True
            self._watch_silence(UPSTREAM_SILENCE_WINDOW)
            return
        self.report_fault(name, last_good_at)

    def _on_server_event(self, event: str, data: dict) -> None:
        if event == "inactive":
            self._inactive_since = time.monotonic()
            self._set_silence_paused(True)
            self.settings.emit(ClientEvent("stream_event", reason="inactive", url=self.url))
            self.run_in_background(self._unpublished_after_timeout())
            if len(self.settings.urls) > 1:
                self.run_in_background(self._look_for_the_publisher())
        elif event == "active":
            self._inactive_since = None
            self._silence_extended = False
            self._set_silence_paused(False)
            self.settings.emit(ClientEvent("stream_event", reason="active", url=self.url))
        elif event == SseEvent.RECONNECT:
            self.report_fault(reconnect_fault(data), time.monotonic())

    def _set_silence_paused(self, paused: bool) -> None:
        for watchdog in self.watchdogs():
            if isinstance(watchdog, (StallWatchdog, FrameStallWatchdog)):
                watchdog.paused = paused

    async def _unpublished_after_timeout(self) -> None:
        since = self._inactive_since
        await asyncio.sleep(self.settings.options.inactive_timeout_ms / 1000)
        if self._inactive_since == since and since is not None:
            self.report_fault(Fault.UNPUBLISHED, self.last_media_at)

    async def _look_for_the_publisher(self) -> None:
        """While the stream is inactive here, ask the other nodes whether it is live there:
        a publisher that restored on another node is followed at once (seed 000)."""
        s = self.settings
        since = self._inactive_since
        others = [u for u in s.urls if u != self.url]
        headers = {"Authorization": f"Bearer {s.token}"} if s.token else {}
        timeout = aiohttp.ClientTimeout(total=1, sock_connect=0.3)
        deadline = since + s.options.inactive_timeout_ms / 1000
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while self._inactive_since == since and time.monotonic() < deadline:
                for url in others:
                    try:
                        async with http.get(f"{url}/api/v1/streams/{s.stream}",
                                            headers=headers) as resp:
                            live = resp.status == 200 and (await resp.json()).get("live")
                    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                        live = False
                    if live and self._inactive_since == since:
                        self.report_fault(Fault.PUBLISHER_MOVED, self.last_media_at,
                                          prefer_url=url)
                        return
                await asyncio.sleep(MOVED_POLL_INTERVAL)

    async def close(self) -> None:
        self.stop_background()
        if self.viewer:
            await self.viewer.stop()
        if self.signaling:
            await self.signaling.close()


class HlsPlayAttempt(Attempt):
    """One HLS playback on one node: faults are the end of the playlist ("unpublished"),
    HTTP failing ("hls_error"), or no frames for a while ("media_silence", at least
    HLS_SILENCE_TARGETS target durations: HLS delivers in bursts)."""

    transport = "hls"

    def __init__(self, url: str, settings: PlaySettings) -> None:
        super().__init__(url)
        self.settings = settings
        self.viewer: HlsPlayer | None = None

    async def open(self) -> None:
        s = self.settings
        self.viewer = HlsPlayer(
            self.url, s.stream, s.token, decode=s.decode, on_frame=s.on_frame,
            low_latency=s.options.hls_low_latency, http_timeout=s.options.connect_timeout_s,
            on_end=lambda: self.report_fault(Fault.UNPUBLISHED, self.last_media_at),
            on_error=lambda exc: self.report_fault(Fault.HLS_ERROR, self.last_media_at))
        await self.viewer.start()
        self.run_in_background(self.follow_frames(lambda: self.viewer.frames))
        target = self.viewer.playlist.target_duration or 1.0
        silence_ms = max(s.options.media_silence_ms, HLS_SILENCE_TARGETS * 1000 * target)
        self.watch(StallWatchdog(Fault.MEDIA_SILENCE,
                                 lambda: self.viewer.frames + self.viewer.audio_frames,
                                 silence_ms / 3000, 3, self.report_fault))

    async def close(self) -> None:
        self.stop_background()
        if self.viewer:
            await self.viewer.stop()


def new_play_attempt(transport: str, url: str, settings: PlaySettings) -> Attempt:
    """A play attempt over `transport` ("whep" or "hls")."""
    if transport == "hls":
        return HlsPlayAttempt(url, settings)
    return WebRtcPlayAttempt(url, settings)
