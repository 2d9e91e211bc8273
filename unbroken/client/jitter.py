"""Loss recovery on the SDK viewer's video receivers (the decoding path).

aiortc's receiver, left alone, can freeze a viewer for tens of seconds after a burst of
loss: its NACK generator asks for a missing packet only when a *new* gap appears (so a
packet whose NACK or retransmission was lost just as the loss ended is never asked for
again), and its video jitter buffer holds every frame behind a missing packet until 512
newer packets have arrived, asking for no keyframe meanwhile. Here:

- `RetryingNackGenerator` (unbroken.media.nack, the node's ingest uses it too) asks
  again for what is still missing, every `NACK_RETRY_INTERVAL`, on the next packet that
  arrives;
- `VideoJitterBuffer` assembles frames as aiortc's does, but a missing packet may hold the
  frames behind it only `HOLE_WAIT`: then it asks for a keyframe (PLI, again every
  `PLI_INTERVAL`) and goes on from the first complete keyframe past the hole (frames in
  between could not be decoded anyway).

Both stand in for aiortc's own objects on a receiver (`rtc_internals.use_nack_generator`,
`use_video_jitter_buffer`); they use no private name of aiortc's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from unbroken.media.nack import behind

__all__ = ["HOLE_WAIT", "PLI_INTERVAL", "VideoJitterBuffer"]

HOLE_WAIT = 0.3  # s a missing packet may hold the frames behind it before a keyframe is asked for
PLI_INTERVAL = 0.5  # s between keyframe requests while frames are still held
CAPACITY = 512  # packets held at most (aiortc's video jitter buffer holds as many)
MAX_MISORDER = 100  # a packet further behind than this means the sequence started over

Clock = Callable[[], float]


class VideoJitterBuffer:
    """Reassembles video frames from RTP packets, in sequence order, like aiortc's
    (`add(packet) -> (pli_flag, frame or None)`: a frame is complete when the first
    packet of the next one has arrived), but does not wait for ever for a lost packet:
    after `hole_wait` it asks for a keyframe and skips to the first complete keyframe
    past the hole. `depayload(packet)` gives a packet's codec data (its share of the
    frame), `is_keyframe_start(packet)` tells the first packet of a keyframe;
    `on_skip(seq)` hears where it went on (e.g. to stop NACKing what was skipped)."""

    def __init__(self, depayload: Callable[[RtpPacket], bytes],
                 is_keyframe_start: Callable[[RtpPacket], bool],
                 capacity: int = CAPACITY, hole_wait: float = HOLE_WAIT,
                 pli_interval: float = PLI_INTERVAL,
                 on_skip: Callable[[int], None] | None = None,
                 clock: Clock = time.monotonic) -> None:
        if capacity & (capacity - 1) or not 0 < capacity <= 0x8000:
            raise ValueError("capacity must be a power of 2 up to 32768")
        self.depayload = depayload
        self.is_keyframe_start = is_keyframe_start
        self.capacity = capacity
        self.hole_wait = hole_wait
        self.pli_interval = pli_interval
        self.on_skip = on_skip
        self.clock = clock
        self._packets: list[RtpPacket | None] = [None] * capacity
        self._origin: int | None = None  # the sequence number the next frame starts at
        self._newest = 0  # offset from the origin of the newest packet held
        self._held_since: float | None = None  # a hole has held frames since then
        self._asked_at: float | None = None  # last keyframe request for that hole
        # figures
        self.frames = 0
        self.skips = 0  # holes given up on (skipped to a keyframe)
        self.skipped_packets = 0
        self.keyframe_requests = 0
        self.restarts = 0  # the sequence jumped: everything held was dropped

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        pli = False
        if self._origin is None:
            self._origin = seq
        delta = (seq - self._origin) & 0xFFFF
        if delta >= 0x8000:  # behind the origin
            if 0x10000 - delta < MAX_MISORDER:
                return False, None  # late (a retransmission of what was given up): too late
            pli = self._restart(seq)
            delta = 0
        elif delta >= self.capacity:  # a whole buffer behind a hole: start over here
            pli = self._restart(seq)
            delta = 0
        self._packets[seq % self.capacity] = packet
        self._newest = max(self._newest, delta)

        frame, hole = self._take_frame()
        if frame is not None or hole is None or hole >= self._newest:
            self._held_since = self._asked_at = None  # nothing held behind a hole
            return pli, frame
        # a hole with packets behind it
        now = self.clock()
        if self._held_since is None:
            self._held_since = now
            return pli, None
        if now - self._held_since < self.hole_wait:
            return pli, None
        if self._skip_to_keyframe(hole):
            self._held_since = self._asked_at = None
            frame, _ = self._take_frame()
            return pli, frame
        if self._asked_at is None or now - self._asked_at >= self.pli_interval:
            self._asked_at = now
            self.keyframe_requests += 1
            pli = True
        return pli, None

    def _take_frame(self) -> tuple[JitterFrame | None, int | None]:
        """The frame at the origin if complete (removed from the buffer), else None and
        the offset of the first missing packet (None when the whole buffer is full)."""
        assert self._origin is not None
        packets: list[RtpPacket] = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None:
                return None, count
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                frame = JitterFrame(data=b"".join(map(self.depayload, packets)),
                                    timestamp=timestamp)
                self._drop(count)
                self.frames += 1
                return frame, None
            packets.append(packet)
        return None, None

    def _skip_to_keyframe(self, hole: int) -> bool:
        """Drop what is held before the first keyframe past the hole, if there is one."""
        for offset in range(hole + 1, self._newest + 1):
            packet = self._packets[(self._origin + offset) % self.capacity]
            if packet is not None and self._keyframe_start(packet):
                self._drop(offset)
                self.skips += 1
                self.skipped_packets += offset
                if self.on_skip is not None:
                    self.on_skip(self._origin)
                return True
        return False

    def _keyframe_start(self, packet: RtpPacket) -> bool:
        try:
            return bool(self.is_keyframe_start(packet))
        except Exception:  # noqa: BLE001 - a payload it cannot read is no keyframe
            return False

    def _drop(self, count: int) -> None:
        """Forget the `count` packets from the origin on; the origin moves past them."""
        for offset in range(count):
            self._packets[(self._origin + offset) % self.capacity] = None
        self._origin = (self._origin + count) & 0xFFFF
        self._newest = max(0, self._newest - count)

    def _restart(self, seq: int) -> bool:
        """Drop everything held and start again at `seq`; ask for a keyframe."""
        self._packets = [None] * self.capacity
        self._origin = seq
        self._newest = 0
        self._held_since = self._asked_at = None
        self.restarts += 1
        self.keyframe_requests += 1
        if self.on_skip is not None:
            self.on_skip(seq)
        return True
