"""The live (LL-)HLS playlist of one packaging run, and the parts and segments it lists."""

from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .settings import HlsSettings

__all__ = ["Part", "Playlist", "Segment"]


@dataclass
class Part:
    """One LL-HLS part: a standalone MPEG-TS chunk of a segment."""

    data: bytes
    duration: float
    independent: bool


@dataclass
class Segment:
    """One media segment: its parts while it grows, their concatenation once complete."""

    msn: int
    wall_start: float  # time.time() of its first frame
    discontinuity: bool = False
    parts: list[Part] = field(default_factory=list)
    data: bytes | None = None  # set when complete
    duration: float = 0.0

    @property
    def complete(self) -> bool:
        return self.data is not None


class Playlist:
    """The live playlist of one packaging run: segments by media sequence number.

    Written by the packager's worker thread, read by the server: every method takes the
    lock. URIs are relative: ``{epoch}-{msn}.ts`` and ``{epoch}-{msn}.{part}.ts``, where
    the epoch is random per run, so that a segment name never means two contents.
    """

    def __init__(self, settings: HlsSettings) -> None:
        self.settings = settings
        self.epoch = secrets.token_hex(4)
        self.segments: deque[Segment] = deque()
        self.next_msn = 0
        self.discontinuity_sequence = 0
        self.ended = False
        self.version = 0  # bumped on every change
        self._lock = threading.Lock()
        # listed segments + a few more kept for clients reading an older playlist
        self._keep = settings.window + 4

    # writer side ---------------------------------------------------------------------
    def open_segment(self, wall_start: float, discontinuity: bool) -> Segment:
        with self._lock:
            seg = Segment(self.next_msn, wall_start, discontinuity and bool(self.segments))
            self.next_msn += 1
            self.segments.append(seg)
            return seg

    def add_part(self, seg: Segment, part: Part) -> None:
        with self._lock:
            seg.parts.append(part)
            self.version += 1

    def close_segment(self, seg: Segment) -> None:
        with self._lock:
            seg.data = b"".join(p.data for p in seg.parts)
            seg.duration = sum(p.duration for p in seg.parts)
            self.version += 1
            self._trim()

    def drop_segment(self, seg: Segment) -> None:
        """Forget an open segment that got no part."""
        with self._lock:
            if self.segments and self.segments[-1] is seg and not seg.parts:
                self.segments.pop()
                self.next_msn -= 1

    def end(self) -> None:
        with self._lock:
            self.ended = True
            self.version += 1

    def _trim(self) -> None:
        complete = [s for s in self.segments if s.complete]
        while len(complete) > self._keep:
            old = self.segments.popleft()
            complete.remove(old)
        # parts are listed (and kept) only for the last few segments
        for seg in complete[:-4]:
            if seg.parts and seg.data is not None:
                seg.parts = [Part(b"", p.duration, p.independent) for p in seg.parts]

    # reader side ---------------------------------------------------------------------
    def _listed(self) -> list[Segment]:
        complete = [s for s in self.segments if s.complete]
        first = complete[-self.settings.window] if len(complete) >= self.settings.window \
            else (self.segments[0] if self.segments else None)
        if first is None:
            return []
        return [s for s in self.segments if s.msn >= first.msn]

    @property
    def ready(self) -> bool:
        """Worth showing a first player: with LL-HLS, parts covering PART-HOLD-BACK (so a
        player can start that far behind the live edge, not at the very first part and
        later), else one whole segment."""
        with self._lock:
            if self.ended:
                return True
            if self.settings.part_duration:
                available = sum(p.duration for s in self.segments for p in s.parts)
                return available >= 3 * self.settings.part_duration - 0.05
            return any(s.complete for s in self.segments)

    def last_position(self) -> tuple[int, int]:
        """(msn, parts) of the newest segment; -1 msn when there is none."""
        with self._lock:
            if not self.segments:
                return -1, 0
            seg = self.segments[-1]
            return seg.msn, len(seg.parts)

    def satisfies(self, msn: int, part: int | None) -> bool:
        """Blocking playlist reload: does the playlist hold segment `msn` (complete) or
        its part `part` (or anything later)?"""
        with self._lock:
            if self.ended:
                return True
            for seg in reversed(self.segments):
                if seg.msn > msn and (seg.parts or seg.complete):
                    return True
                if seg.msn == msn:
                    if seg.complete:
                        return True
                    return part is not None and len(seg.parts) > part
            return False

    def is_pending(self, msn: int, part: int | None) -> bool:
        """Is this the segment or part the packager makes next (worth waiting for)?"""
        with self._lock:
            if self.ended:
                return False
            if not self.segments:
                return msn == self.next_msn and not part
            last = self.segments[-1]
            if last.complete:
                return msn == self.next_msn and not part
            if msn != last.msn:
                return msn == last.msn + 1 and not part
            return part is None or part >= len(last.parts) and part <= len(last.parts) + 1

    def data(self, msn: int, part: int | None = None) -> bytes | None:
        with self._lock:
            for seg in self.segments:
                if seg.msn == msn:
                    if part is None:
                        return seg.data
                    if part < len(seg.parts) and seg.parts[part].data:
                        return seg.parts[part].data
                    return None
            return None

    def uri(self, msn: int, part: int | None = None) -> str:
        return f"{self.epoch}-{msn}.ts" if part is None else f"{self.epoch}-{msn}.{part}.ts"

    def parse_uri(self, name: str) -> tuple[int, int | None] | None:
        """(msn, part) of a segment file name of this run, or None."""
        prefix = self.epoch + "-"
        if not name.startswith(prefix) or not name.endswith(".ts"):
            return None
        core = name[len(prefix):-3].split(".")
        if not 1 <= len(core) <= 2 or not all(c.isdigit() and len(c) < 12 for c in core):
            return None
        return int(core[0]), (int(core[1]) if len(core) == 2 else None)

    def render(self, query: str = "") -> str:
        """The playlist text; `query` (e.g. ``?token=...``) is appended to every URI."""
        s = self.settings
        with self._lock:
            listed = self._listed()
            first_listed = listed[0].msn if listed else self.next_msn
            dropped_disc = 0
            # discontinuities that left the window count into DISCONTINUITY-SEQUENCE
            for seg in self.segments:
                if seg.msn < first_listed and seg.discontinuity:
                    dropped_disc += 1
            lines = ["#EXTM3U", f"#EXT-X-VERSION:{6 if s.part_duration else 3}",
                     f"#EXT-X-TARGETDURATION:{s.target_duration}"]
            if s.part_duration:
                lines.append("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
                             f"PART-HOLD-BACK={3 * s.part_duration:.3f},"
                             f"HOLD-BACK={3 * s.target_duration:.3f}")
                lines.append(f"#EXT-X-PART-INF:PART-TARGET={s.part_duration:.3f}")
            lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_listed}")
            lines.append("#EXT-X-DISCONTINUITY-SEQUENCE:"
                         f"{self.discontinuity_sequence + dropped_disc}")
            with_parts = {seg.msn for seg in listed[-4:]} if s.part_duration else set()
            for seg in listed:
                if not seg.complete and not (seg.parts and s.part_duration):
                    continue
                if seg.discontinuity:
                    lines.append("#EXT-X-DISCONTINUITY")
                lines.append("#EXT-X-PROGRAM-DATE-TIME:" + _iso(seg.wall_start))
                if seg.msn in with_parts:
                    for i, p in enumerate(seg.parts):
                        lines.append(f"#EXT-X-PART:DURATION={p.duration:.5f},"
                                     f'URI="{self.uri(seg.msn, i)}{query}"'
                                     + (",INDEPENDENT=YES" if p.independent else ""))
                if seg.complete:
                    lines.append(f"#EXTINF:{seg.duration:.5f},")
                    lines.append(self.uri(seg.msn) + query)
            if self.ended:
                lines.append("#EXT-X-ENDLIST")
            elif s.part_duration:
                last = self.segments[-1] if self.segments else None
                if last is not None and not last.complete:
                    hint = self.uri(last.msn, len(last.parts))
                else:
                    hint = self.uri(self.next_msn, 0)
                lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}{query}"')
            return "\n".join(lines) + "\n"


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")
