"""What a Publisher sends: a factory of fresh tracks for every session.

Fresh tracks per session matter for restores: a republish gets a new encoder,
which is what clears a stalled one (seed 004)."""

from __future__ import annotations

import os
from collections.abc import Callable

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer

from .testsrc import TestPatternVideoTrack, ToneAudioTrack

TrackFactory = Callable[[], list[MediaStreamTrack]]


def testsrc(width: int = 640, height: int = 360, fps: float = 30,
                 audio: bool = True) -> TrackFactory:
    """Checkable frames (a counter drawn into the picture) and a tone."""

    def make() -> list[MediaStreamTrack]:
        tracks: list[MediaStreamTrack] = [TestPatternVideoTrack(width, height, fps)]
        if audio:
            tracks.append(ToneAudioTrack())
        return tracks

    return make


def media_file(path: str, loop: bool = True) -> TrackFactory:
    """A media file played in real time (looped by default), decoded and re-encoded."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)

    def make() -> list[MediaStreamTrack]:
        player = MediaPlayer(path, loop=loop)
        return [t for t in (player.video, player.audio) if t is not None]

    return make


def capture_device(device: str, format: str = "v4l2",
                   options: dict | None = None) -> TrackFactory:
    """A capture device through PyAV/FFmpeg, e.g. ("/dev/video0", "v4l2")."""

    def make() -> list[MediaStreamTrack]:
        player = MediaPlayer(device, format=format, options=options or {})
        return [t for t in (player.video, player.audio) if t is not None]

    return make


def tracks(*given: MediaStreamTrack) -> TrackFactory:
    """Any aiortc tracks. They are reused by every session (wrapped per session)."""
    return lambda: list(given)


def from_spec(spec: str) -> TrackFactory:
    """CLI spelling: "testsrc" or a file path."""
    if spec == "testsrc":
        return testsrc()
    return media_file(spec)
