"""The HLS packager of one stream: its queue, its worker thread, and the source it follows."""

from __future__ import annotations

import logging
import queue
import threading
import time

from ..packet import ForwardPacket
from .assembler import FrameAssembler
from .clock import RtpClock
from .muxer import Unit
from .playlist import Playlist
from .segmenter import Segmenter
from .settings import TS_CLOCK, HlsSettings
from .transcoder import AudioTranscoder, VideoTranscoder

__all__ = ["HlsPackager"]

log = logging.getLogger("unbroken.media.hls")

# output timestamps start here (seconds), so that early audio (encoder priming) stays positive
BASE_SECONDS = 10.0
MAX_QUEUE = 2000  # queued packets before the worker is considered behind (then resyncs)


class HlsPackager:
    """Packages one stream; `push` (from the event loop) is cheap, the worker does the rest.

    `on_update()` is called from the worker thread after each playlist change, and once
    when the worker stops (`alive` is then False);
    `request_keyframe()` too (the caller forwards it to its event loop);
    `transcode`: whether VP8/Opus sources are transcoded (else only H264 video is
    packaged, without audio).
    """

    def __init__(self, name: str, settings: HlsSettings, on_update=None,
                 request_keyframe=None, transcode: bool = True) -> None:
        settings.validate()
        self.name = name
        self.settings = settings
        self.transcode_allowed = transcode
        self.playlist = Playlist(settings)
        self.on_update = on_update or (lambda: None)
        self._request_keyframe = request_keyframe or (lambda: None)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._t0 = time.monotonic()
        self._t0_wall = time.time()
        self.segmenter = Segmenter(self.playlist, settings, self._wall_of_pts,
                                   self._ask_keyframe)
        self.mode = "waiting"  # "passthrough" | "transcode" | "waiting" | "unsupported"
        self.dropped = 0
        self.frames_in = 0
        self.cpu_seconds = 0.0
        self._last_pts = 0
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"hls-{name}", daemon=True)
        self._thread.start()

    # event-loop side ---------------------------------------------------------------
    def push(self, kind: str, mime: str, clock_rate: int, fp: ForwardPacket) -> None:
        if self._queue.qsize() > MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.put(("rtp", kind, mime, clock_rate, fp))

    def set_source(self, codecs: dict[str, str] | None) -> None:
        """A new publisher (kind -> mime type), or None when the publisher went away."""
        self._queue.put(("source", codecs))

    def end(self) -> None:
        """The stream is over: finish the playlist with EXT-X-ENDLIST."""
        self._queue.put(("end",))

    def close(self, timeout: float = 2.0) -> None:
        self._queue.put(("stop",))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._running

    def stats(self) -> dict:
        msn, parts = self.playlist.last_position()
        return {"mode": self.mode, "segments": self.segmenter.segments_made,
                "last_msn": msn, "forced_cuts": self.segmenter.forced_cuts,
                "dropped_packets": self.dropped, "frames_in": self.frames_in,
                "worker_cpu_s": round(self.cpu_seconds, 3), "ended": self.playlist.ended}

    # worker side -------------------------------------------------------------------
    def _wall_of_pts(self, pts: int) -> float:
        return self._t0_wall + pts / TS_CLOCK - BASE_SECONDS

    def _out_of_arrival(self, arrival: float) -> int:
        return int((arrival - self._t0 + BASE_SECONDS) * TS_CLOCK)

    def _ask_keyframe(self) -> None:
        if self.mode == "passthrough":
            self._request_keyframe()

    def _run(self) -> None:
        try:
            self._work()
        finally:
            self._running = False
            self._updated()

    def _updated(self) -> None:
        try:
            self.on_update()
        except Exception:
            log.exception("hls update callback failed")

    def _work(self) -> None:
        state = _SourceState(None)
        last_version = self.playlist.version
        while True:
            item = self._queue.get()
            started = time.thread_time()
            try:
                op = item[0]
                if op == "rtp":
                    self._rtp(state, *item[1:])
                elif op == "source":
                    self.segmenter.new_source()
                    state = _SourceState(item[1])
                    state.min_start = self._last_pts + TS_CLOCK // 30
                    self._start_source(state)
                elif op == "end":
                    self.segmenter.flush()
                    self.playlist.end()
                elif op == "stop":
                    return
            except Exception:
                log.exception("hls packaging failed", extra={"stream": self.name})
                state.resync()
            finally:
                self.cpu_seconds += time.thread_time() - started
            if self.playlist.version != last_version:
                last_version = self.playlist.version
                self._updated()

    def _start_source(self, state: "_SourceState") -> None:
        codecs = state.codecs or {}
        video, audio = codecs.get("video"), codecs.get("audio")
        if video == "video/h264":
            self.mode = "passthrough"
        elif video is not None and self.transcode_allowed:
            self.mode = "transcode"
            state.video_transcoder = VideoTranscoder(video, self.settings)
        elif video is not None:
            self.mode = "unsupported"
            state.codecs = {}
            return
        else:
            self.mode = "passthrough" if audio else "waiting"
        if audio == "audio/opus" and self.transcode_allowed:
            state.audio_transcoder = AudioTranscoder(self.settings)
            self.segmenter.audio_extradata = state.audio_transcoder.extradata
        else:
            state.codecs.pop("audio", None)
        self.segmenter.has_video, self.segmenter.has_audio = state.kinds()

    def _rtp(self, state: "_SourceState", kind: str, mime: str, clock_rate: int,
             fp: ForwardPacket) -> None:
        if not state.codecs or state.codecs.get(kind) != mime:
            return
        assembler = state.assemblers.get(kind)
        if assembler is None:
            assembler = state.assemblers[kind] = FrameAssembler(kind, mime)
            state.clocks[kind] = RtpClock(clock_rate)
        was_waiting = assembler.need_keyframe
        frames = assembler.add(fp)
        if kind == "video" and assembler.need_keyframe and not was_waiting:
            self._request_keyframe()  # loss: the picture can only continue at a keyframe
        for data, ts, keyframe, arrival in frames:
            self.frames_in += 1
            self._frame(state, kind, data, ts, keyframe, arrival)

    def _frame(self, state: "_SourceState", kind: str, data: bytes, ts: int, keyframe: bool,
               arrival: float) -> None:
        clock = state.clocks[kind]
        has_video = "video" in state.codecs
        if kind == "audio" and has_video and not state.clocks.get("video", clock).anchored:
            return  # audio starts with the picture
        if not clock.anchored:
            out = self._out_of_arrival(arrival)
            out = max(out, state.min_start)
            clock.anchor(ts, out)
        pts = clock.map(ts)
        if kind == "video":
            if state.video_transcoder is not None:
                units = state.video_transcoder.transcode(data, pts,
                                                         self.segmenter.wants_keyframe)
            else:
                units = [Unit("video", data, pts, keyframe)]
        elif state.audio_transcoder is not None:
            units = state.audio_transcoder.transcode(data, pts)
        else:
            units = []
        for unit in units:
            self.segmenter.add(unit)
            if unit.pts > self._last_pts:
                self._last_pts = unit.pts


class _SourceState:
    """Per-publisher state in the worker: codecs, frame assemblers, clocks, transcoders."""

    def __init__(self, codecs: dict[str, str] | None) -> None:
        self.codecs = dict(codecs) if codecs else {}
        self.assemblers: dict[str, FrameAssembler] = {}
        self.clocks: dict[str, RtpClock] = {}
        self.video_transcoder: VideoTranscoder | None = None
        self.audio_transcoder: AudioTranscoder | None = None
        self.min_start = 0

    def kinds(self) -> tuple[bool, bool]:
        return "video" in self.codecs, "audio" in self.codecs

    def resync(self) -> None:
        for assembler in self.assemblers.values():
            assembler.need_keyframe = assembler.kind == "video"
