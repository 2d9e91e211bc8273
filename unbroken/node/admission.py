"""The one way a media session starts, whatever the entry point (WHIP, WHEP, the session
channel, and later the relay and the manager's proxied requests)."""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.media.peer import NegotiationError
from unbroken.protocol.refusals import Refusal, Refused
from unbroken.protocol.sdp import (
    SdpError,
    check_offer,
    offer_ice_credentials,
    section_without_codec,
)
from unbroken.protocol.session import check_stream_name
from unbroken.protocol.states import Kind

from .media_session import MediaSession
from .state import NodeState, NotLive, StreamBusy


# what the data plane forwards (names as in a=rtpmap, lower case)
USABLE_CODECS = {"video": frozenset({"vp8", "h264"}), "audio": frozenset({"opus"})}


@dataclass(frozen=True)
class OfferRequest:
    """A request for a media session, with the options every entry point accepts."""

    kind: Kind
    stream: str
    sdp: str
    replaces: str | None = None  # publish: our previous session's id on this stream
    wait_live: float = 0.0  # play: seconds to wait for a publisher


class Admission:
    """Owns the decision whether a new media session may start (stream name, draining,
    limits, SDP, conflicts) and starts it; refusals are ``Refused`` with their code."""

    def __init__(self, state: NodeState) -> None:
        self.state = state

    def check_open(self, stream: str, kind: Kind | None = None) -> None:
        """What can be refused before the offer is read (`kind`: what the session would
        do, when known)."""
        problem = check_stream_name(stream)
        if problem:
            raise Refused(Refusal.BAD_STREAM_NAME, problem)
        if kind == Kind.PUBLISH and self.state.config.role == "edge":
            raise Refused(Refusal.EDGE_NO_PUBLISH,
                          "this node is an edge: it serves viewers only; publish to an "
                          "origin (or through the stream manager)")
        if self.state.draining:
            raise Refused(Refusal.DRAINING, "node is draining")
        if len(self.state.sessions) >= self.state.config.max_sessions:
            raise Refused(Refusal.TOO_MANY_SESSIONS, "node is at its session limit")

    async def admit(self, request: OfferRequest) -> MediaSession:
        self.check_open(request.stream, request.kind)
        state, name = self.state, request.stream
        try:
            check_offer(request.sdp)
            kind = section_without_codec(request.sdp, USABLE_CODECS)
            if kind is not None:
                raise Refused(Refusal.UNSUPPORTED_CODEC,
                              f"the offer's {kind} section has no codec this node can use "
                              f"(video: VP8, H264; audio: Opus)")
            ice = offer_ice_credentials(request.sdp)
            if request.kind == Kind.PUBLISH:
                return await state.publish(name, request.sdp, ice, replaces=request.replaces)
            return await state.play(name, request.sdp, ice, wait_live=request.wait_live)
        except SdpError as exc:
            raise Refused(Refusal.BAD_SDP, str(exc)) from None
        except StreamBusy:
            raise Refused(Refusal.STREAM_BUSY,
                          f"stream {name!r} already has a live publisher") from None
        except NotLive:
            raise Refused(Refusal.NOT_LIVE, f"stream {name!r} is not live",
                          retry_after=state.config.retry_after) from None
        except NegotiationError as exc:
            # the data plane says 406 when the offer has no codec it can use
            code = Refusal.UNSUPPORTED_CODEC if exc.status == 406 else Refusal.NEGOTIATION_FAILED
            raise Refused(code, exc.reason) from None
