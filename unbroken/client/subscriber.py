"""Subscriber: plays a stream over WHEP (or the session channel, or HLS) and brings
playback back after every fault.

Seed 000: on unpublish or a closed connection it tears down and tries again,
across the URL list, until the stream plays. While the publisher restores on the
same node the session is kept (the node continues it), unless the stream stays
inactive longer than `inactive_timeout_ms`.
"""

from __future__ import annotations

import asyncio

from unbroken.protocol.states import Kind

from .attempt import Attempt
from .events import PLAYING, STOPPED, ClientEvent
from .hls import HlsPlayer
from .play_attempts import FrameCallback, PlaySettings, new_play_attempt
from .recorder import EncodedRecorder
from .restorer import RestoringClient
from .transport_switch import SwitchingAttempt, TransportSelector
from .whep import WhepViewer

__all__ = ["Subscriber"]


class Subscriber(RestoringClient):
    """Plays `stream` from the first URL that has it and restores playback by itself.

    Sinks: `decode=False` counts packets and frames only (load, monitoring);
    `on_frame(frame, counter)` gets every decoded video frame (CV pipelines);
    `record="out.ts"` (or .webm, .mkv) writes the encoded frames as received,
    without re-encoding, across restores. `policy` (a RestorePolicy) and `url_source`
    (a UrlSource) replace where and when restores try; `manager` asks stream managers for
    a route on every try (see RestoringClient).
    """

    role = "subscriber"
    kind = Kind.PLAY
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
        self.transports = TransportSelector(self.options.transports,
                                            self.options.transport_failures,
                                            self._transport_changed)
        self.play_settings = PlaySettings(
            stream=stream, token=self.token, options=self.options, signaling=signaling,
            decode=self.decode, on_frame=on_frame, recorder=self.recorder,
            urls=tuple(self.urls), emit=self.emit)
        self._probe: asyncio.Task | None = None

    @property
    def transport(self) -> str:
        """The transport playback uses now ("whep" or "hls")."""
        return self.transports.current

    def _new_attempt(self, url: str) -> Attempt:
        if len(self.options.transports) > 1:
            return SwitchingAttempt(url, self.transports, self._play_attempt,
                                    self.close_in_background, self.emit,
                                    self.options.connect_timeout_s)
        return self._play_attempt(self.transport, url)

    def _play_attempt(self, transport: str, url: str) -> Attempt:
        return new_play_attempt(transport, url, self.play_settings)

    def _transport_changed(self, transport: str, why: str) -> None:
        self.emit(ClientEvent("transport", state=transport, reason=why, url=self.url))

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
        preferred = self.transports.preferred
        while not self.stopping:
            await asyncio.sleep(interval)
            attempt = self.attempt
            if (isinstance(attempt, SwitchingAttempt) and attempt.transport != preferred
                    and self.state == PLAYING):
                await attempt.switch(preferred)

    async def stop(self) -> None:
        self.transports.closed = True
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
        base = {"state": self.state, "url": self.url, "node": self.node,
                "transport": self.transport,
                "restores": len(self.restores)}
        if viewer is not None:
            base.update(viewer.stats())
        return base
