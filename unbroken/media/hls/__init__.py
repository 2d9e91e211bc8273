"""HLS packaging of one stream: forwarded RTP packets in, MPEG-TS segments and a playlist out.

No HTTP in here (the node serves what this makes). One `HlsPackager` per stream:

- the event loop only queues packets (`push`) and source changes; a worker thread does
  the rest: RTP → frames (depacketize), frames → H264/AAC packets, packets → parts and
  segments (PyAV MPEG-TS muxer, in memory), segments → `Playlist`;
- H264 video is passed through (depacketized to Annex-B and muxed as it comes, no
  decoding); VP8 video is decoded and encoded once to H264 (libx264); Opus audio is
  decoded and encoded once to AAC (browsers' HLS stacks do not take Opus in MPEG-TS);
- segments are cut at keyframes: the packager asks the publisher for one (PLI) when a
  segment reaches its target duration, and a transcoder makes one itself;
- Low-Latency HLS: every segment is made of parts (each a standalone MPEG-TS with
  PAT/PMT; a segment is the concatenation of its parts, continuity counters rewritten
  to run on across them), listed with EXT-X-PART, with a preload hint for the next;
- the playlist stays valid through everything: EXT-X-DISCONTINUITY when the source
  changes (publisher restore, codec change), EXT-X-ENDLIST at the end, a sliding
  window whose older segments are dropped from memory (nothing is written to disk).
"""

from .packager import HlsPackager
from .playlist import Part, Playlist, Segment
from .settings import HlsSettings
from .muxer import rewrite_continuity

__all__ = ["HlsPackager", "HlsSettings", "Part", "Playlist", "Segment", "rewrite_continuity"]
