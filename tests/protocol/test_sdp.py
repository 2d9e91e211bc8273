"""SDP offer checks and trickle-ICE fragments (unbroken.protocol.sdp), on real aiortc offers."""

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from unbroken.protocol.sdp import (
    SdpError,
    check_offer,
    offer_ice_credentials,
    parse_trickle_fragment,
)


@pytest.fixture
async def offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: nothing to wait for
    pc.addTransceiver("video", direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


def test_real_offer_passes(offer):
    check_offer(offer)
    check_offer(offer.replace("\r\n", "\n"))  # bare LF line ends are tolerated


@pytest.mark.parametrize("sdp, reason", [
    ("", "empty"),
    ("   \r\n\t ", "empty"),
    ("hello world", "v=0"),
    ("o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n", "v=0"),
    ("v=1\r\n", "v=0"),
    ("v=0\r\nthis is not sdp\r\n", "line 2"),
    ("v=0\r\n=x\r\n", "line 2"),
    ("v=0\r\n1=x\r\n", "line 2"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no media"),
    ("v=0\r\nm=video\r\na=ice-ufrag:x\r\na=fingerprint:sha-256 00\r\n", "malformed media line"),
    ("v=0\r\nm=text 9 UDP/TLS/RTP/SAVPF 96\r\n", "unsupported media kind"),
    ("v=0\r\nm=video nine UDP/TLS/RTP/SAVPF 96\r\n", "malformed port"),
])
def test_garbage_is_rejected_with_a_reason(sdp, reason):
    with pytest.raises(SdpError, match=reason):
        check_offer(sdp)


def test_offer_without_ice_credentials(offer):
    with pytest.raises(SdpError, match="ice-ufrag"):
        check_offer(without(offer, "a=ice-ufrag:"))


def test_offer_without_fingerprint(offer):
    with pytest.raises(SdpError, match="fingerprint"):
        check_offer(without(offer, "a=fingerprint:"))


def test_offer_without_media(offer):
    head = offer.split("m=", 1)[0]
    with pytest.raises(SdpError, match="no media"):
        check_offer(head)


def test_sdp_error_is_a_value_error():
    assert issubclass(SdpError, ValueError)


def test_offer_ice_credentials(offer):
    ufrag, pwd = offer_ice_credentials(offer)
    assert ufrag and pwd
    assert f"a=ice-ufrag:{ufrag}\r\n" in offer and f"a=ice-pwd:{pwd}\r\n" in offer
    # the first session/media-level value wins
    assert offer_ice_credentials("a=ice-ufrag:one\na=ice-ufrag:two\na=ice-pwd:p\n") == ("one", "p")
    assert offer_ice_credentials("v=0\r\n") == (None, None)


def test_trickle_fragment():
    frag = parse_trickle_fragment(
        "a=ice-ufrag:EsAw\r\n"
        "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=mid:0\r\n"
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n"
        "a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0\r\n"
        "a=mid:1\r\n"
        "a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active\r\n"
        "a=end-of-candidates\r\n")
    assert frag.ice_ufrag == "EsAw"
    assert frag.ice_pwd == "P2uYro0UCOQ4zxjKXaWCBui1"
    assert [mid for mid, _ in frag.candidates] == ["0", "0", "1"]
    assert all(line.startswith("candidate:") for _, line in frag.candidates)
    assert frag.end_of_candidates


def test_trickle_fragment_without_mid_or_credentials():
    frag = parse_trickle_fragment("a=candidate:1 1 udp 2 192.0.2.1 5000 typ host\n")
    assert frag.candidates == [(None, "candidate:1 1 udp 2 192.0.2.1 5000 typ host")]
    assert frag.ice_ufrag is None and frag.ice_pwd is None
    assert not frag.end_of_candidates
    assert parse_trickle_fragment("").candidates == []


@pytest.mark.parametrize("body", ["garbage", "a", "=x", "a=ok\r\nnot a line\r\n"])
def test_bad_trickle_fragment(body):
    with pytest.raises(SdpError):
        parse_trickle_fragment(body)
