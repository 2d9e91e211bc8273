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

import av

from .events import PLAYING, STOPPED, ClientEvent
from .recorder import EncodedRecorder
from .restorer import Attempt, RestoringClient
from .signaling import Signaling
from .watchdogs import StallWatchdog
from .whep import WhepViewer

FrameCallback = Callable[[av.VideoFrame, int | None], None]
FIRST_MEDIA_POLL = 0.005


class PlayAttempt(Attempt):
    def __init__(self, client: "Subscriber", url: str) -> None:
        super().__init__(url)
        self.client = client
        self.viewer: WhepViewer | None = None
        self.signaling: Signaling | None = None
        self._watchers: list = []
        self._tasks: list[asyncio.Task] = []
        self._inactive_since: float | None = None

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
            on_state=self._on_state)
        self._tasks.append(asyncio.create_task(self._follow_frames()))
        if options.media_silence_ms:
            silence = StallWatchdog("media_silence", lambda: self.viewer.packets,
                                    max(0.02, options.media_silence_ms / 3000), 3,
                                    self.report_fault)
            silence.start()
            self._watchers.append(silence)

    async def _follow_frames(self) -> None:
        """Marks media arrival from the viewer's frame count (first one promptly)."""
        seen = 0
        while True:
            frames = self.viewer.frames
            if frames > seen:
                seen = frames
                self.media_arrived()
            await asyncio.sleep(FIRST_MEDIA_POLL if self.first_media_at is None else 0.05)

    def _on_state(self, state: str) -> None:
        if state in ("failed", "closed"):
            self.report_fault(f"connection_{state}", self.last_media_at)

    def _on_server_event(self, event: str, data: str) -> None:
        if event == "inactive":
            self._inactive_since = time.monotonic()
            self._set_silence_paused(True)
            self.client._emit(ClientEvent("stream_event", reason="inactive", url=self.url))
            self._tasks.append(asyncio.create_task(self._unpublished_after_timeout()))
        elif event == "active":
            self._inactive_since = None
            self._set_silence_paused(False)
            self.client._emit(ClientEvent("stream_event", reason="active", url=self.url))
        elif event == "reconnect":
            self.report_fault("node_draining" if "drain" in data else "reconnect",
                              time.monotonic())

    def _set_silence_paused(self, paused: bool) -> None:
        for watcher in self._watchers:
            if isinstance(watcher, StallWatchdog):
                watcher.paused = paused

    async def _unpublished_after_timeout(self) -> None:
        since = self._inactive_since
        await asyncio.sleep(self.client.options.inactive_timeout_ms / 1000)
        if self._inactive_since == since and since is not None:
            self.report_fault("unpublished", self.last_media_at)

    async def close(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        for task in self._tasks:
            task.cancel()
        if self.viewer:
            await self.viewer.stop()
        if self.signaling:
            await self.signaling.close()


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

    def _new_attempt(self, url: str) -> Attempt:
        return PlayAttempt(self, url)

    async def stop(self) -> None:
        await super().stop()
        if self.recorder is not None:
            self.recorder.close()

    @property
    def viewer(self) -> WhepViewer | None:
        return self.attempt.viewer if self.attempt else None

    def stats(self) -> dict:
        viewer = self.viewer
        base = {"state": self.state, "url": self.url, "transport": self.transport,
                "restores": len(self.restores)}
        if viewer is not None:
            base.update(viewer.stats())
        return base
