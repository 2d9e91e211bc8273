"""Frame counter drawn into the picture, so a viewer can check decoded frames.

Format (shared with the browser reader in ``unbroken/web``, do not change it):
16 square blocks of 32x32 pixels in a row at the top-left of the frame
(y = 0..31, block i at x = 32*i .. 32*i+31), block 0 is the most significant
bit; bit 1 is luma 235 (white), bit 0 is luma 16 (black). A reader takes the
mean luma of the inner 16x16 of each block: above 128 means 1. Frames must be
at least 512 pixels wide and 32 high.
"""

from __future__ import annotations

import time

import av
import numpy as np

BITS = 16
BLOCK = 32
WIDTH = BITS * BLOCK  # 512: the narrowest frame that holds the counter
HEIGHT = BLOCK
MODULUS = 1 << BITS

LUMA_ONE = 235
LUMA_ZERO = 16
THRESHOLD = 128
# A block whose inner mean falls in this band is neither clearly black nor
# white: the picture does not carry a counter (or is badly damaged).
AMBIGUOUS = (64, 192)

_INNER = slice(BLOCK // 4, BLOCK - BLOCK // 4)  # inner 16 pixels of a block
_WEIGHTS = (1 << np.arange(BITS - 1, -1, -1)).astype(np.int64)


def _bits(n: int) -> np.ndarray:
    """The counter's bits, most significant first, as a bool array."""
    return ((n % MODULUS) >> np.arange(BITS - 1, -1, -1)) & 1 == 1


def _block_row(n: int, one: int, zero: int) -> np.ndarray:
    """One 512-pixel row of the pattern for counter ``n``."""
    return np.repeat(np.where(_bits(n), one, zero).astype(np.uint8), BLOCK)


def draw_counter_luma(luma: np.ndarray, n: int) -> np.ndarray:
    """Draw counter ``n`` (mod 65536) into a 2-D uint8 luma array, in place.

    Also accepts the ``(H*3/2, W)`` array of a yuv420p frame, whose first rows
    are the luma plane. Returns ``luma``.
    """
    _check_size(luma.shape[0], luma.shape[1])
    luma[:HEIGHT, :WIDTH] = _block_row(n, LUMA_ONE, LUMA_ZERO)
    return luma


def draw_counter_rgb(rgb: np.ndarray, n: int) -> np.ndarray:
    """Draw counter ``n`` into an ``(H, W, 3)`` uint8 RGB array, in place.

    Uses RGB white/black, which a limited-range encoder maps to luma 235/16.
    """
    _check_size(rgb.shape[0], rgb.shape[1])
    rgb[:HEIGHT, :WIDTH, :] = _block_row(n, 255, 0)[:, None]
    return rgb


def draw_counter(target: av.VideoFrame | np.ndarray, n: int):
    """Draw counter ``n`` into a yuv420p ``av.VideoFrame`` or a numpy array, in place.

    A 2-D array is taken as luma (or a packed yuv420p array), a 3-D one as RGB.
    On a frame, the chroma under the counter is set neutral so the blocks are
    pure grey (readable after any YUV to RGB conversion). Returns ``target``.
    """
    if isinstance(target, np.ndarray):
        if target.ndim == 3:
            return draw_counter_rgb(target, n)
        return draw_counter_luma(target, n)
    if target.format.name != "yuv420p":
        raise ValueError(f"draw_counter needs a yuv420p frame, not {target.format.name}")
    _check_size(target.height, target.width)
    y, u, v = (_plane_array(p) for p in target.planes)
    y[:HEIGHT, :WIDTH] = _block_row(n, LUMA_ONE, LUMA_ZERO)
    u[: HEIGHT // 2, : WIDTH // 2] = 128
    v[: HEIGHT // 2, : WIDTH // 2] = 128
    return target


def read_counter_luma(luma: np.ndarray) -> int | None:
    """Read the counter from a 2-D luma array; None if no plausible pattern."""
    if luma.ndim != 2 or luma.shape[0] < HEIGHT or luma.shape[1] < WIDTH:
        return None
    blocks = luma[:HEIGHT, :WIDTH].reshape(BLOCK, BITS, BLOCK)
    means = blocks[_INNER, :, _INNER].mean(axis=(0, 2))
    if np.any((means > AMBIGUOUS[0]) & (means < AMBIGUOUS[1])):
        return None
    return int(_WEIGHTS[means > THRESHOLD].sum())


def read_counter_rgb(rgb: np.ndarray) -> int | None:
    """Read the counter from an ``(H, W, 3)`` RGB array; None if no plausible pattern."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        return None
    top = rgb[:HEIGHT, :WIDTH, :3].astype(np.float32)
    luma = top @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return read_counter_luma(luma)


def read_counter(frame: av.VideoFrame) -> int | None:
    """Read the counter from a decoded frame; None if the pattern is not plausible.

    Reads the top rows of the luma plane in place for yuv420p/yuvj420p frames
    (what the decoders produce), converts other formats to grey first.
    """
    if frame.width < WIDTH or frame.height < HEIGHT:
        return None
    if frame.format.name in ("yuv420p", "yuvj420p"):
        luma = _plane_array(frame.planes[0], rows=HEIGHT)
    else:
        luma = frame.to_ndarray(format="gray")
    return read_counter_luma(luma)


def _plane_array(plane, rows: int | None = None) -> np.ndarray:
    """A writable view of a frame plane as ``(rows, width)`` uint8 (strides respected)."""
    rows = plane.height if rows is None else rows
    buf = np.frombuffer(plane, dtype=np.uint8, count=rows * plane.line_size)
    return buf.reshape(rows, plane.line_size)[:, : plane.width]


def _check_size(height: int, width: int) -> None:
    if width < WIDTH or height < HEIGHT:
        raise ValueError(f"frame {width}x{height} too small for the counter "
                         f"(needs at least {WIDTH}x{HEIGHT})")


def counters_advance(counters, minimum: int = 10, max_step: int = 5) -> bool:
    """True when at least `minimum` readable counters go up by 1..`max_step` each
    (a lost frame is allowed; unreadable ones are skipped): the picture is right and live."""
    values = [c for c in counters if c is not None]
    steps = [(b - a) % MODULUS for a, b in zip(values, values[1:])]
    return len(values) >= minimum and all(0 < s <= max_step for s in steps)


class FrameLog:
    """Every decoded frame counter a viewer got, from any of its sessions (the old and
    the new one overlap during a make-before-break move), in arrival order, with the
    arrival time (monotonic). Use it as a Subscriber's `on_frame`. With a source on a
    shared clock (`testsrc.ClockedPatternTrack`), a counter missing between the first
    and the last one is a frame the viewer never got."""

    def __init__(self) -> None:
        self.counters: list[tuple[float, int]] = []

    def __call__(self, frame: av.VideoFrame, counter: int | None) -> None:
        if counter is not None:
            self.counters.append((time.monotonic(), counter))

    def mark(self) -> int:
        return len(self.counters)

    def fps(self, start: int = 0) -> float:
        """Decoded frames per second since `start` (0 with fewer than two frames)."""
        window = self.counters[start:]
        if len(window) < 2:
            return 0.0
        return (len(window) - 1) / max(1e-6, window[-1][0] - window[0][0])

    def steps(self, start: int = 0, since: float = 0.0) -> list[tuple[float, int, int]]:
        """(time after `since`, counter before, counter after) where a counter is not
        its predecessor + 1 (a hole, or the old and the new session interleaved)."""
        window = self.counters[start:]
        return [(round(t - since, 3), p, c) for (t, c), (_, p) in zip(window[1:], window)
                if c != (p + 1) % MODULUS]

    def missing(self, start: int = 0, end: int | None = None) -> list[int]:
        """Counter values between the first and the last frame of the window that no
        session delivered (unwrapped across 65536)."""
        values = unwrap_counters([c for _, c in self.counters[start:end]])
        if not values:
            return []
        got = set(values)
        return [v for v in range(min(values), max(values) + 1) if v not in got]

    def largest_gap(self, start: int = 0, end: int | None = None) -> int:
        """Frames missing in a row at the worst place (0: none missing)."""
        holes = self.missing(start, end)
        run = best = 0
        previous = None
        for value in holes:
            run = run + 1 if previous is not None and value == previous + 1 else 1
            best = max(best, run)
            previous = value
        return best


def unwrap_counters(values: list[int]) -> list[int]:
    """Counters (mod 65536) in arrival order as a count that does not wrap: each one is
    taken as the value nearest to its predecessor (a jump of more than half the range is
    a wrap, forwards or, when an old session's late frame follows, backwards)."""
    out: list[int] = []
    for value in values:
        if out:
            previous = out[-1]
            value += previous - previous % MODULUS
            if value - previous > MODULUS // 2:
                value -= MODULUS
            elif previous - value > MODULUS // 2:
                value += MODULUS
        out.append(value)
    return out
