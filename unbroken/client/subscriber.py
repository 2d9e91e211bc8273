"""Subscriber: plays a stream over WHEP and brings playback back after every fault.

Seed 000: on unpublish or a closed connection it tears down and tries again,
across the URL list, until the stream plays. While the publisher restores on the
same node the session is kept (the node continues it), unless the stream stays
inactive longer than `inactive_timeout_ms`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import av

from unbroken.protocol.faults import Fault as FaultName, reconnect_fault

from .events import PLAYING, STOPPED, ClientEvent
from .hls import HlsAttempt, HlsPlayer
from .recorder import EncodedRecorder
from .restorer import Attempt, RestoringClient
from .signaling import Signaling
from .watchdogs import StallWatchdog
from .whep import WhepViewer

FrameCallback = Callable[[av.VideoFrame, int | None], None]
WAIT_LIVE_MS = 500  # the node holds a WHEP POST this long for a publisher that restores
UPSTREAM_SILENCE_WINDOW = 2.5  # s of silence tolerated while the node is heard from
MOVED_POLL_INTERVAL = 0.1
NOT_LIVE = (404, 409)  # answers that say the stream is not there, not that the transport fails


class PlayAttempt(Attempt):
    transport = "whep"

    def __init__(self, client: "Subscriber", url: str) -> None:
        super().__init__(url)
        self.client = client
        self.viewer: WhepViewer | None = None
        self.signaling: Signaling | None = None
        self._inactive_since: float | None = None
        self._silence_extended = False

    async def open(self) -> None:
        client, options = self.client, self.client.options
        viewer_class = WhepViewer
        if client.recorder is not None:
            recorder = client.recorder

            class RecordingViewer(WhepViewer):
                def _add_transceivers(self, pc) -> None:
                    super()._add_transceivers(pc)
                    recorder.attach(pc)

            viewer_class = RecordingViewer
        self.signaling = Signaling(client.signaling, self.url, client.stream, client.token,
                                   options, self._on_server_event, self.report_fault)
        self.viewer = await self.signaling.play(
            viewer_class, decode=client.decode, on_frame=client.on_frame,
            on_state=self._on_state, wait_live_ms=WAIT_LIVE_MS)
        self._tasks.append(asyncio.create_task(
            self.follow_frames(lambda: self.viewer.frames)))
        if options.media_silence_ms:
            self._watch_silence(options.media_silence_ms / 1000)

    def _watch_silence(self, window: float) -> None:
        silence = StallWatchdog(FaultName.MEDIA_SILENCE, lambda: self.viewer.packets,
                                max(0.02, window / 3), 3, self._on_silence)
        silence.paused = self._inactive_since is not None
        silence.start()
        self._watchers.append(silence)

    def _on_silence(self, name: str, last_good_at: float) -> None:
        """No media. If the node is still heard from, the break is upstream: the node will
        say `inactive` when it sees the publisher go (and `active` when it is back on this
        same session), so wait for that, within a longer window."""
        heard = self.signaling.last_heard() if self.signaling else None
        period = self.client.options.ping_period_ms / 1000
        recent = heard is not None and time.monotonic() - heard < 2 * period
        if recent and not self._silence_extended:
            self._silence_extended = True
            self._watch_silence(UPSTREAM_SILENCE_WINDOW)
            return
        self.report_fault(name, last_good_at)

    def _on_state(self, state: str) -> None:
        if state in ("failed", "closed"):
            self.report_fault(f"connection_{state}", self.last_media_at)

    def _on_server_event(self, event: str, data: dict) -> None:
        if event == "inactive":
            self._inactive_since = time.monotonic()
            self._set_silence_paused(True)
            self.client._emit(ClientEvent("stream_event", reason="inactive", url=self.url))
            self._tasks.append(asyncio.create_task(self._unpublished_after_timeout()))
            if len(self.client.urls) > 1:
                self._tasks.append(asyncio.create_task(self._look_for_the_publisher()))
        elif event == "active":
            self._inactive_since = None
            self._silence_extended = False
            self._set_silence_paused(False)
            self.client._emit(ClientEvent("stream_event", reason="active", url=self.url))
        elif event == "reconnect":
            self.report_fault(reconnect_fault(data), time.monotonic())

    def _set_silence_paused(self, paused: bool) -> None:
        for watcher in self._watchers:
            if isinstance(watcher, StallWatchdog):
                watcher.paused = paused

    async def _unpublished_after_timeout(self) -> None:
        since = self._inactive_since
        await asyncio.sleep(self.client.options.inactive_timeout_ms / 1000)
        if self._inactive_since == since and since is not None:
            self.report_fault(FaultName.UNPUBLISHED, self.last_media_at)

    async def _look_for_the_publisher(self) -> None:
        """While the stream is inactive here, ask the other nodes whether it is live there:
        a publisher that restored on another node is followed at once (seed 000)."""
        since = self._inactive_since
        others = [u for u in self.client.urls if u != self.url]
        headers = {"Authorization": f"Bearer {self.client.token}"} if self.client.token else {}
        timeout = aiohttp.ClientTimeout(total=1, sock_connect=0.3)
        deadline = since + self.client.options.inactive_timeout_ms / 1000
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while self._inactive_since == since and time.monotonic() < deadline:
                for url in others:
                    try:
                        async with http.get(f"{url}/api/v1/streams/{self.client.stream}",
                                            headers=headers) as resp:
                            live = resp.status == 200 and (await resp.json()).get("live")
                    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                        live = False
                    if live and self._inactive_since == since:
                        self.report_fault("publisher_moved", self.last_media_at,
                                          prefer_url=url)
                        return
                await asyncio.sleep(MOVED_POLL_INTERVAL)

    async def close(self) -> None:
        self._stop_background()
        if self.viewer:
            await self.viewer.stop()
        if self.signaling:
            await self.signaling.close()


class SwitchingAttempt(Attempt):
    """A subscriber session whose transport (WHEP or HLS: the inner attempt) can change
    underneath the restore loop: `switch()` opens the other transport, and swaps only once
    it delivers media (make-before-break). Faults of the current inner attempt are this
    attempt's faults; failures to connect are counted per transport by the Subscriber."""

    def __init__(self, client: "Subscriber", url: str) -> None:
        super().__init__(url)
        self.client = client
        self.transport = client.transport
        self.inner = client._transport_attempt(self.transport, url)
        self._relay: asyncio.Task | None = None
        self._closed = False

    @property
    def viewer(self):
        return self.inner.viewer

    async def open(self) -> None:
        try:
            await self.inner.open()
        except BaseException as exc:
            self.client._transport_failed(self.transport, exc)
            raise
        self._relay = asyncio.create_task(self._relay_faults(self.inner))

    async def wait_media(self, timeout: float) -> None:
        try:
            await self.inner.wait_media(timeout)
        except BaseException as exc:
            self.client._transport_failed(self.transport, exc)
            raise
        self._adopt(self.inner)
        self.client._transport_worked(self.transport)

    def _adopt(self, inner: Attempt) -> None:
        if self.first_media_at is None:
            self.first_media_at = inner.first_media_at
        self.last_media_at = inner.last_media_at
        self._media.set()

    async def _relay_faults(self, inner: Attempt) -> None:
        fault = await inner.wait_fault()
        if inner is self.inner and not self._fault.done():
            self.last_media_at = inner.last_media_at or self.last_media_at
            self._fault.set_result(fault)

    async def switch(self, transport: str) -> bool:
        """Play over `transport` instead, if it delivers media; False if it does not."""
        if transport == self.transport:
            return True
        options = self.client.options
        new = self.client._transport_attempt(transport, self.url)
        try:
            await asyncio.wait_for(new.open(), options.connect_timeout_s)
            await new.wait_media(options.connect_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure: stay where we are
            self.client._close_in_background(new)
            self.client._emit(ClientEvent("transport_probe", state=transport,
                                          reason=repr(exc)[:200], url=self.url))
            return False
        except asyncio.CancelledError:
            self.client._close_in_background(new)
            raise
        if self._closed or self._fault.done():
            self.client._close_in_background(new)
            return False
        old, self.inner = self.inner, new
        self.transport = transport
        self._relay = asyncio.create_task(self._relay_faults(new))
        self._adopt(new)
        self.client._close_in_background(old)
        self.client._transport_worked(transport)
        self.client._set_transport(transport, "switched")
        return True

    async def close(self) -> None:
        self._closed = True
        if self._relay:
            self._relay.cancel()
        await self.inner.close()


class Subscriber(RestoringClient):
    """Plays `stream` from the first URL that has it and restores playback by itself.

    Sinks: `decode=False` counts packets and frames only (load, monitoring);
    `on_frame(frame, counter)` gets every decoded video frame (CV pipelines);
    `record="out.ts"` (or .webm, .mkv) writes the encoded frames as received,
    without re-encoding, across restores.
    """

    role = "subscriber"
    live_state = PLAYING
    stopped_state = STOPPED

    def __init__(self, urls, stream: str, decode: bool = True,
                 on_frame: FrameCallback | None = None, record: str | None = None,
                 signaling: str = "http", **kwargs) -> None:
        super().__init__(urls, stream, **kwargs)
        self.signaling = signaling
        self.recorder = EncodedRecorder(record) if record else None
        # recording takes frames on their way to the decoder: it needs the decoding path
        self.decode = decode or on_frame is not None or self.recorder is not None
        self.on_frame = on_frame
        self.transport = self.options.transports[0]
        self._failures = {t: 0 for t in self.options.transports}
        self._probe: asyncio.Task | None = None

    def _new_attempt(self, url: str) -> Attempt:
        if len(self.options.transports) > 1:
            return SwitchingAttempt(self, url)
        return self._transport_attempt(self.transport, url)

    def _transport_attempt(self, transport: str, url: str) -> Attempt:
        return HlsAttempt(self, url) if transport == "hls" else PlayAttempt(self, url)

    # transport failover (docs/hls.md) --------------------------------------------------
    def _transport_failed(self, transport: str, exc: BaseException) -> None:
        if self._stopping or getattr(exc, "status", None) in NOT_LIVE:
            return
        self._failures[transport] = self._failures.get(transport, 0) + 1
        transports = self.options.transports
        if (transport == self.transport and len(transports) > 1
                and self._failures[transport] >= self.options.transport_failures):
            self._failures[transport] = 0
            following = transports[(transports.index(transport) + 1) % len(transports)]
            self._set_transport(following, f"{transport} failed "
                                           f"{self.options.transport_failures} times")

    def _transport_worked(self, transport: str) -> None:
        self._failures[transport] = 0

    def _set_transport(self, transport: str, why: str) -> None:
        if transport != self.transport:
            self.transport = transport
            self._emit(ClientEvent("transport", state=transport, reason=why, url=self.url))

    async def switch_transport(self, transport: str) -> bool:
        """Move playback to `transport` now (make-before-break); False if it did not play."""
        if transport not in self.options.transports:
            raise ValueError(f"{transport!r} is not in transports {self.options.transports}")
        attempt = self.attempt
        if not isinstance(attempt, SwitchingAttempt):
            return transport == self.transport
        return await attempt.switch(transport)

    async def start(self) -> "Subscriber":
        await super().start()
        probe_ms = self.options.transport_probe_ms
        if len(self.options.transports) > 1 and probe_ms:
            self._probe = asyncio.create_task(self._probe_preferred(probe_ms / 1000))
        return self

    async def _probe_preferred(self, interval: float) -> None:
        """While on a fallback transport, try the preferred one every `interval`."""
        preferred = self.options.transports[0]
        while not self._stopping:
            await asyncio.sleep(interval)
            attempt = self.attempt
            if (isinstance(attempt, SwitchingAttempt) and attempt.transport != preferred
                    and self.state == PLAYING):
                await attempt.switch(preferred)

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await super().stop()
        if self.recorder is not None:
            self.recorder.close()

    @property
    def viewer(self) -> WhepViewer | HlsPlayer | None:
        return self.attempt.viewer if self.attempt else None

    def stats(self) -> dict:
        viewer = self.viewer
        base = {"state": self.state, "url": self.url, "transport": self.transport,
                "restores": len(self.restores)}
        if viewer is not None:
            base.update(viewer.stats())
        return base
