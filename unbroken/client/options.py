"""The restore knobs of seed 004 (same meaning, fast defaults) and seed 000's transport order."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class RestoreOptions:
    """Every knob of a client's restore: seed 004's (same meaning, fast defaults), the
    subscriber's silence and transport failover, and the connect timeout."""

    # Restore connection: restart on session/stream failure until it works or tries run out
    restore: bool = True
    # waits before each pass over the URL list (ms), the first at once; capped by `timeout_ms`
    backoff_ms: tuple[int, ...] = (0, 25, 50, 100, 200, 400)
    # seed 004 "Timeout": the longest wait between two tries (ms)
    timeout_ms: int = 1000
    # seed 004 "Max tries": tries per fault before giving up (a success resets the count)
    max_tries: int = 100
    # +/- this fraction of random spread on every wait, so clients don't retry in lockstep
    jitter: float = 0.2
    # seed 004 "Missing pings" / "Pings check period": the session channel's server pings
    missing_pings: int = 3
    ping_period_ms: int = 250
    # a session whose signaling went through a proxy (the stream manager) that broke while
    # its media still flows: re-attach the signaling within this long, keeping the media
    # session (a manager restart costs no gap); 0 = a new session at once
    reattach_ms: int = 10000
    # seed 004 "Check bitrate": publisher's outbound bytes sampled every interval;
    # `bitrate_max_tries` zero samples in a row = publishing failed → republish
    bitrate_check: bool = True
    bitrate_check_interval_ms: int = 200
    bitrate_max_tries: int = 3
    # seed 004 "Change codec": when publishing H264 stalls, republish with VP8
    change_codec: bool = False
    # subscriber: no video/audio packet for this long → restore (0 = off)
    media_silence_ms: int = 700
    # subscriber (decoding): video packets keep arriving but no frame is decoded this long
    # → restore; a keyframe is asked for at half of it (0 = off)
    frame_stall_ms: int = 1000
    # subscriber: stream inactive (publisher gone) this long → look for it elsewhere (seed 000)
    inactive_timeout_ms: int = 2000
    # watch the host's interfaces and default route; on a change, restore at once
    network_watch: bool = True
    # subscriber transport order (seed 000): "whep" and/or "hls" (docs/hls.md), first preferred
    transports: tuple[str, ...] = field(default=("whep",))
    # this many attempts in a row failing on a transport (refused, unreachable, no media;
    # "not live" does not count) → the subscriber moves to the next one in `transports`
    transport_failures: int = 3
    # while not on the first transport, try it again this often and move back when it
    # plays (make-before-break); 0 = only when asked (Subscriber.switch_transport)
    transport_probe_ms: int = 10000
    # HLS transport: Low-Latency HLS (parts, blocking reloads) when the server offers it
    hls_low_latency: bool = True
    # seconds a single connect attempt may take (HTTP + ICE + DTLS + first media)
    connect_timeout_s: float = 5.0

    def validate(self) -> None:
        if self.max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        if self.timeout_ms < 0 or any(b < 0 for b in self.backoff_ms):
            raise ValueError("retry waits cannot be negative")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.reattach_ms < 0:
            raise ValueError("reattach_ms cannot be negative")
        if self.frame_stall_ms < 0:
            raise ValueError("frame_stall_ms cannot be negative")
        if self.missing_pings < 1 or not 50 <= self.ping_period_ms <= 60000:
            raise ValueError("missing_pings >= 1 and ping_period_ms in [50, 60000]")
        if self.bitrate_max_tries < 1 or self.bitrate_check_interval_ms < 20:
            raise ValueError("bitrate_max_tries >= 1 and bitrate_check_interval_ms >= 20")
        if self.transport_failures < 1 or self.transport_probe_ms < 0:
            raise ValueError("transport_failures >= 1 and transport_probe_ms >= 0")
        unknown = set(self.transports) - {"whep", "hls"}
        if unknown or not self.transports:
            raise ValueError(f"transports must be taken from whep, hls: {self.transports}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
