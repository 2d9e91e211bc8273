import asyncio

import pytest
from aiortc import RTCRtpReceiver

from unbroken.media import rtc_internals


def test_aiortc_private_hooks_exist():
    """aiortc is pinned exactly because media/ reaches into these internals."""
    rtc_internals.check_hooks()


def test_a_missing_hook_is_named(monkeypatch):
    monkeypatch.setattr(rtc_internals, "HOOKS", rtc_internals.HOOKS + (
        (RTCRtpReceiver, "__no_such_queue", "a hook aiortc never had"),))
    rtc_internals.check_hooks.cache_clear()
    try:
        with pytest.raises(rtc_internals.MissingHook, match=r"RTCRtpReceiver\.__no_such_queue"):
            rtc_internals.check_hooks()
    finally:
        rtc_internals.check_hooks.cache_clear()


def test_every_private_name_used_is_listed():
    """Each `x._name` the module reads or writes appears in HOOKS (or is its own)."""
    import inspect
    import re

    source = inspect.getsource(rtc_internals)
    listed = {name.lstrip("_") for _, name, _ in rtc_internals.HOOKS}
    used = set(re.findall(r"(?<!self)\.(_[A-Za-z]\w*)", source))
    own = {"_setup", "_use", "_bind", "_protect_and_send", "_binding",
           "_tap", "_inner", "_on_frame", "_never", "_dtls", "_ice_connection",
           "_session", "_transport", "_addr", "_cdata", "_buffer", "_view", "_length",
           "_SelectorTransport", "_batch", "_target", "_fastpath"}
    foreign = {u for u in used - own
               if u.split("__")[-1] not in listed and u.lstrip("_") not in listed}
    assert not foreign, f"private names used but not in HOOKS: {sorted(foreign)}"


def test_aiortc_version_is_the_pinned_one():
    import aiortc
    assert aiortc.__version__ == "1.16.0"


def test_new_connections_share_one_certificate_made_once(monkeypatch):
    first = rtc_internals.new_peer_connection()
    second = rtc_internals.new_peer_connection()
    cert = first._RTCPeerConnection__certificates[0]
    assert second._RTCPeerConnection__certificates == [cert]
    assert isinstance(cert, rtc_internals.SharedCertificate)
    assert cert.getFingerprints() == cert.getFingerprints()  # digests made once
    from aiortc.rtcdtlstransport import SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80

    profiles = [SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80]
    assert cert._create_ssl_context(profiles) is cert._create_ssl_context(profiles)
    # a new one once the current one is old (connections keep theirs)
    monkeypatch.setattr(rtc_internals, "CERTIFICATE_LIFETIME", -1.0)
    third = rtc_internals.new_peer_connection()
    assert third._RTCPeerConnection__certificates[0] is not cert


async def test_connections_with_the_shared_certificate_connect():
    from aiortc import RTCSessionDescription

    offerer, answerer = rtc_internals.new_peer_connection(), rtc_internals.new_peer_connection()
    try:
        offerer.createDataChannel("x")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(RTCSessionDescription(
            answerer.localDescription.sdp, "answer"))
        for _ in range(500):
            if offerer.connectionState == answerer.connectionState == "connected":
                break
            await asyncio.sleep(0.01)
        assert offerer.connectionState == answerer.connectionState == "connected"
    finally:
        await offerer.close()
        await answerer.close()


def test_the_bitrate_estimator_is_built_at_its_first_packet():
    from aiortc.rate import RemoteBitrateEstimator

    import types

    receiver = RTCRtpReceiver("video", transport=types.SimpleNamespace(state="new"))
    lazy = receiver._RTCRtpReceiver__remote_bitrate_estimator
    assert lazy._real is None  # nothing built for a receiver that gets no packet
    real = RemoteBitrateEstimator()
    for n in range(60):  # aiortc's call, keywords and all
        args = dict(abs_send_time=n * 1000, arrival_time_ms=n * 20, payload_size=1000, ssrc=1)
        assert lazy.add(**args) == real.add(**args)
    assert isinstance(lazy._real, RemoteBitrateEstimator)


def test_host_addresses_are_cached_only_when_asked(monkeypatch):
    import aioice.ice

    original = aioice.ice.get_host_addresses
    calls = []

    def enumerate_interfaces(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        calls.append((use_ipv4, use_ipv6))
        return ["192.0.2.7"]

    monkeypatch.setattr(rtc_internals, "_host_addresses", enumerate_interfaces)
    try:
        rtc_internals.cache_host_addresses(60)
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["192.0.2.7"]
        assert aioice.ice.get_host_addresses(True, True) == ["192.0.2.7"]
        assert calls == [(True, True)]  # enumerated once for the ttl
        rtc_internals.cache_host_addresses(0)  # off: aioice's own, every time
        assert aioice.ice.get_host_addresses is enumerate_interfaces
    finally:
        monkeypatch.undo()
        rtc_internals.cache_host_addresses(0)
    assert aioice.ice.get_host_addresses is original


def test_codec_matching_copies_codecs_as_deepcopy_did(monkeypatch):
    """find_common_codecs with the cheap codec copy gives what it gave with deepcopy, and
    its results share nothing mutable with aiortc's codec tables or the offer's codecs."""
    import copy

    import aiortc.rtcpeerconnection as pcmod
    from aiortc.codecs import CODECS
    from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

    remote = [RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96,
                                    rtcpFeedback=[RTCRtcpFeedback(type="nack"),
                                                  RTCRtcpFeedback(type="goog-remb")]),
              RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=97,
                                    parameters={"apt": 96}),
              RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102,
                                    rtcpFeedback=[RTCRtcpFeedback(type="nack", parameter="pli")],
                                    parameters={"packetization-mode": 1,
                                                "profile-level-id": "42e01f"})]
    fast = pcmod.find_common_codecs(CODECS["video"], remote)
    monkeypatch.setattr(pcmod, "copy", copy)
    slow = pcmod.find_common_codecs(CODECS["video"], remote)
    assert fast == slow and len(fast) == 3
    before = copy.deepcopy(CODECS["video"]), copy.deepcopy(remote)
    for codec in fast:
        codec.parameters["x"] = 1
        codec.rtcpFeedback.append(RTCRtcpFeedback(type="x"))
        for feedback in codec.rtcpFeedback:
            feedback.type += "!"
    assert (CODECS["video"], remote) == before
