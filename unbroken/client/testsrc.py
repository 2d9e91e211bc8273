"""Synthetic media sources: a test-pattern video track with a frame counter, and a tone."""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import numpy as np
from aiortc import MediaStreamTrack, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from unbroken.client import framecode

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_PTIME = 0.020


class Pacer:
    """Releases ticks at a fixed rate on the monotonic clock.

    After a pause longer than ``max_lag`` (e.g. a stall) it re-anchors on the
    current time instead of bursting to catch up. ``elapsed`` is the tick's
    time since the first tick, the basis for media timestamps.
    """

    def __init__(self, rate: float, max_lag: float = 0.2) -> None:
        self.interval = 1.0 / rate
        self.max_lag = max_lag
        self._start: float | None = None
        self._next = 0.0

    @property
    def due(self) -> float | None:
        """When the last tick was due (monotonic), however late it was released: in a
        catch-up after a short pause the ticks come at once, each with its own due time."""
        return None if self._start is None else self._next

    async def tick(self) -> float:
        """Wait for the next tick; returns its elapsed time in seconds."""
        now = time.monotonic()
        if self._start is None:
            self._start = self._next = now
        else:
            self._next += self.interval
            wait = self._next - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -self.max_lag:
                self._next = now
        return self._next - self._start


class TestPatternVideoTrack(VideoStreamTrack):
    """Moving colour pattern with the frame index (mod 65536) drawn as a frame counter.

    ``stall()`` makes ``recv()`` block (no frames, like a stalled encoder) until
    ``resume()``; frame timestamps then continue from wall-clock time. The
    background is precomputed, a frame costs a few array copies.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30) -> None:
        super().__init__()
        if width % 2 or height % 2:
            raise ValueError("width and height must be even")
        self.width, self.height, self.fps = width, height, fps
        self.frames_sent = 0
        self._pacer = Pacer(fps)
        self._running = asyncio.Event()
        self._running.set()
        self._y, self._u, self._v = _background_planes(width, height)

    @property
    def frame_due(self) -> float | None:
        """When the latest frame was due (monotonic): the moment its picture stands for."""
        return self._pacer.due

    @property
    def stalled(self) -> bool:
        return not self._running.is_set()

    def stall(self) -> None:
        """Stop producing frames: ``recv()`` blocks until ``resume()``."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        super().stop()
        self._running.set()  # wake a blocked recv() so it sees the track ended

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        """The next frame's pts at ``fps``, after waiting for its time."""
        if self.readyState != "live":
            raise MediaStreamError
        elapsed = await self._pacer.tick()
        return round(elapsed * VIDEO_CLOCK_RATE), VIDEO_TIME_BASE

    async def recv(self) -> VideoFrame:
        await self._running.wait()
        frame_pts, time_base = await self.next_timestamp()
        frame = self._draw(self.frames_sent)
        frame.pts, frame.time_base = frame_pts, time_base
        self.frames_sent += 1
        return frame

    def _draw(self, index: int) -> VideoFrame:
        w, h = self.width, self.height
        shift = (index * 4) % w  # the pattern scrolls 4 px per frame
        y = self._y[:, shift : shift + w].copy()
        u = self._u[:, shift // 2 : shift // 2 + w // 2].copy()
        v = self._v[:, shift // 2 : shift // 2 + w // 2].copy()
        if w >= framecode.WIDTH and h >= framecode.HEIGHT:
            framecode.draw_counter_luma(y, index)
            # neutral chroma under the counter, so its blocks are pure grey
            u[: framecode.HEIGHT // 2, : framecode.WIDTH // 2] = 128
            v[: framecode.HEIGHT // 2, : framecode.WIDTH // 2] = 128
        packed = np.concatenate((y.ravel(), u.ravel(), v.ravel()))
        return VideoFrame.from_ndarray(packed.reshape(h * 3 // 2, w), format="yuv420p")


class ClockedPatternTrack(TestPatternVideoTrack):
    """The test pattern whose frame counter is the frame slot since a shared `epoch`
    (monotonic clock: the same in every process of the machine), not the track's own
    frame count: a publisher's new session (new tracks) goes on with the counter where
    the clock is, so a viewer's counters have a hole exactly where frames were lost.
    `last_index` is the slot of the last frame produced (not wrapped at 65536)."""

    def __init__(self, epoch: float, width: int = 512, height: int = 64, fps: float = 30) -> None:
        super().__init__(width, height, fps)
        self.epoch = epoch
        self.last_index = -1

    async def recv(self) -> VideoFrame:
        await self._running.wait()
        pts, time_base = await self.next_timestamp()
        # the slot the frame was due in, not when recv() ran: after a short pause the
        # pacer catches up with frames that come at once, and counting those on from the
        # last one would put this counter ahead of the clock for good
        index = max(self.last_index + 1, round((self.frame_due - self.epoch) * self.fps))
        self.last_index = index
        frame = self._draw(index % framecode.MODULUS)
        frame.pts, frame.time_base = pts, time_base
        self.frames_sent += 1
        return frame


def clocked_source(epoch: float, width: int = 512, height: int = 64, fps: float = 30):
    """A publisher source (fresh tracks per session, see sources.py) on one counter clock."""
    return lambda: [ClockedPatternTrack(epoch, width, height, fps)]


def _background_planes(width: int, height: int) -> tuple[np.ndarray, ...]:
    """Y, U, V planes twice as wide as the frame and periodic in ``width``.

    A window at any horizontal offset is a seamless scrolled pattern.
    """
    x = np.arange(2 * width)
    phase = 2 * math.pi * x / width
    y_rows = np.arange(height)[:, None]
    luma = 128 + 60 * np.sin(phase)[None, :] + 40 * np.cos(2 * math.pi * y_rows / height)
    cx = np.arange(width)  # chroma: half resolution, period width/2
    cphase = 4 * math.pi * cx / width
    c_rows = np.arange(height // 2)[:, None]
    u = 128 + 90 * np.sin(cphase)[None, :] * np.ones((height // 2, 1))
    v = 128 + 90 * np.cos(cphase + 2 * math.pi * c_rows / height)
    return (np.clip(luma, 16, 235).astype(np.uint8),
            np.clip(u, 16, 240).astype(np.uint8),
            np.clip(v, 16, 240).astype(np.uint8))


class ToneAudioTrack(MediaStreamTrack):
    """A sine tone: s16 samples in 20 ms frames, mono or stereo, paced in real time.

    Integer frequencies loop seamlessly (the sample table is one second long).
    """

    kind = "audio"

    def __init__(self, frequency: float = 440.0, sample_rate: int = 48_000,
                 channels: int = 1, volume: float = 0.2) -> None:
        super().__init__()
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        self.sample_rate, self.channels = sample_rate, channels
        self.samples_per_frame = int(sample_rate * AUDIO_PTIME)
        self.frames_sent = 0
        self._pacer = Pacer(1 / AUDIO_PTIME)
        self._time_base = fractions.Fraction(1, sample_rate)
        # one second of tone plus a frame, so any frame is a slice without wrap-around
        t = np.arange(sample_rate + self.samples_per_frame) / sample_rate
        tone = (volume * 32767 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)
        self._tone = np.repeat(tone, channels)  # interleaved for packed s16
        self._layout = "mono" if channels == 1 else "stereo"

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        elapsed = await self._pacer.tick()
        pts = round(elapsed * self.sample_rate)
        start = (self.frames_sent * self.samples_per_frame) % self.sample_rate
        chunk = self._tone[start * self.channels :
                           (start + self.samples_per_frame) * self.channels]
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16",
                                        layout=self._layout)
        frame.sample_rate = self.sample_rate
        frame.pts = pts
        frame.time_base = self._time_base
        self.frames_sent += 1
        return frame
