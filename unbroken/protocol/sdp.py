"""SDP checks done before an offer reaches the WebRTC stack, and trickle-ICE fragments."""

from __future__ import annotations

from dataclasses import dataclass, field

SDP_CONTENT_TYPE = "application/sdp"
TRICKLE_CONTENT_TYPE = "application/trickle-ice-sdpfrag"


class SdpError(ValueError):
    """The SDP is unusable; the message says why (returned to the client as 400)."""


def check_offer(sdp: str) -> None:
    """Reject what is clearly not a usable WebRTC offer, with a reason."""
    if not sdp.strip():
        raise SdpError("empty SDP offer")
    lines = [line.rstrip("\r") for line in sdp.strip().split("\n")]
    if lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"line {number} is not an SDP line: {line[:60]!r}")
    media = [line for line in lines if line.startswith("m=")]
    if not media:
        raise SdpError("SDP offer has no media section")
    for line in media:
        parts = line[2:].split()
        if len(parts) < 4:
            raise SdpError(f"malformed media line: {line[:60]!r}")
        if parts[0] not in ("audio", "video", "application"):
            raise SdpError(f"unsupported media kind {parts[0]!r}")
        if not parts[1].isdigit():
            raise SdpError(f"malformed port in media line: {line[:60]!r}")
    if not any(line.startswith("a=ice-ufrag:") for line in lines):
        raise SdpError("SDP offer has no ICE credentials (a=ice-ufrag)")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise SdpError("SDP offer has no DTLS fingerprint (a=fingerprint)")


@dataclass
class TrickleFragment:
    """An `application/trickle-ice-sdpfrag` body (RFC 8840), as far as we use it."""

    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    # (mid, candidate line without "a=") in order
    candidates: list[tuple[str | None, str]] = field(default_factory=list)
    end_of_candidates: bool = False


def parse_trickle_fragment(body: str) -> TrickleFragment:
    frag = TrickleFragment()
    mid: str | None = None
    for raw in body.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"not an SDP fragment line: {line[:60]!r}")
        if line.startswith("a=ice-ufrag:"):
            frag.ice_ufrag = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:"):
            frag.ice_pwd = line.split(":", 1)[1]
        elif line.startswith("a=mid:"):
            mid = line.split(":", 1)[1]
        elif line.startswith("a=candidate:"):
            frag.candidates.append((mid, line[2:]))
        elif line == "a=end-of-candidates":
            frag.end_of_candidates = True
    return frag


def offer_ice_credentials(sdp: str) -> tuple[str | None, str | None]:
    ufrag = pwd = None
    for raw in sdp.split("\n"):
        line = raw.strip()
        if line.startswith("a=ice-ufrag:") and ufrag is None:
            ufrag = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:") and pwd is None:
            pwd = line.split(":", 1)[1]
    return ufrag, pwd


def section_without_codec(sdp: str, usable: dict[str, frozenset[str]]) -> str | None:
    """The kind of the first audio/video section whose codecs (``a=rtpmap``) include none
    of ``usable[kind]`` (lower-case names), or None."""
    kind: str | None = None
    names: set[str] = set()

    def unusable() -> bool:
        return kind in usable and bool(names) and not names & usable[kind]

    for raw in sdp.split("\n"):
        line = raw.strip()
        if line.startswith("m="):
            if unusable():
                return kind
            kind, names = line[2:].split(" ", 1)[0], set()
        elif line.startswith("a=rtpmap:") and " " in line:
            names.add(line.split(" ", 1)[1].split("/", 1)[0].lower())
    return kind if unusable() else None
