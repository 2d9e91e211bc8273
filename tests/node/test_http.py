"""The node's HTTP surface against a real node process: WHIP/WHEP resources, their errors,
auth, CORS, trickle ICE, server-sent events, API, health and metrics.

Most tests share one node (module scope, started once); every test checks afterwards that it
still answers /healthz. Configured nodes (--token, replace) are started per test.
"""

import asyncio
import json
import re
import uuid

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from yarl import URL

from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whep import WhepError, WhepViewer
from unbroken.client.whip import WhipError, WhipPublisher, video_codec_preferences

pytestmark = pytest.mark.timeout(60)

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"
MAX_BODY = 64 * 1024  # NodeConfig.max_body_bytes default
NO_STUN = RTCConfiguration(iceServers=[])  # aiortc's default STUN server is not reachable here

@pytest.fixture
async def srv(shared_node, http):
    """The shared node; after the test it must still be running and healthy."""
    yield shared_node
    assert shared_node.proc.poll() is None, shared_node.log()
    async with http.get(f"{shared_node.url}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
        assert r.status == 200, shared_node.log()
        assert (await r.json())["status"] == "ok"


def name(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def tracks(audio: bool = True):
    video = TestPatternVideoTrack(width=160, height=120)
    return [video, ToneAudioTrack()] if audio else [video]


async def offer(direction: str, kinds=("video", "audio"), codec: str | None = None) -> str:
    """A real aiortc offer (the peer connection is closed again: it never connects)."""
    pc = RTCPeerConnection(NO_STUN)
    try:
        for kind in kinds:
            transceiver = pc.addTransceiver(kind, direction=direction)
            if kind == "video" and codec:
                transceiver.setCodecPreferences(video_codec_preferences(codec))
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def ice_of(sdp: str) -> tuple[str, str]:
    return (re.search(r"a=ice-ufrag:(\S+)", sdp).group(1),
            re.search(r"a=ice-pwd:(\S+)", sdp).group(1))


def without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


async def post(http, url: str, body, content_type: str | None = SDP, **headers):
    if content_type:
        headers["Content-Type"] = content_type
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def check_error(resp_or_tuple, status: int, code: str | None = None) -> dict:
    status_, headers, body = resp_or_tuple
    assert status_ == status, body
    assert headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    assert isinstance(data["reason"], str) and data["reason"]
    if code:
        assert data["error"] == code, data
    return data


async def api(http, url: str, path: str, **kwargs):
    async with http.get(url + path, **kwargs) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


class Session:
    """A session made by POSTing an offer directly; deleted again at the end."""

    def __init__(self, http, url: str, kind: str, stream: str, sdp: str, headers, body):
        self.http, self.url, self.kind, self.stream, self.offer = http, url, kind, stream, sdp
        self.headers, self.answer = headers, body.decode()
        self.location = headers["Location"]

    @classmethod
    async def create(cls, http, url: str, kind: str, stream: str, sdp: str | None = None):
        sdp = sdp or await offer("sendonly" if kind == "whip" else "recvonly")
        status, headers, body = await post(http, f"{url}/{kind}/{stream}", sdp)
        assert status == 201, body
        return cls(http, url, kind, stream, sdp, headers, body)

    async def delete(self) -> int:
        async with self.http.delete(self.url + self.location) as resp:
            return resp.status

    async def patch(self, body: str, content_type: str = TRICKLE, **headers) -> tuple:
        async with self.http.patch(self.url + self.location, data=body,
                                   headers={"Content-Type": content_type, **headers}) as r:
            return r.status, r.headers.copy(), await r.read()


# -- malformed offers ---------------------------------------------------------------------

BAD_SDP = {
    "garbage": b"hello, this is not SDP",
    "missing_v0": b"o=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    "binary": bytes(range(256)) * 4,
    "non_utf8": b"v=0\r\ns=\xff\xfe\xfa\r\n",
    "empty": b"",
    "nul_bytes": b"v=0\r\n\x00\x00\x00\r\n",
}


@pytest.mark.parametrize("kind", ["whip", "whep"])
@pytest.mark.parametrize("case", sorted(BAD_SDP))
async def test_garbage_offer_is_400(srv, http, kind, case):
    await check_error(await post(http, f"{srv.url}/{kind}/{name()}", BAD_SDP[case]), 400)


@pytest.mark.parametrize("kind", ["whip", "whep"])
@pytest.mark.parametrize("damage, words", [
    ("no_media", "media"),
    ("no_ice_ufrag", "ice-ufrag"),
    ("no_fingerprint", "fingerprint"),
])
async def test_incomplete_offer_is_400_with_reason(srv, http, kind, damage, words):
    sdp = await offer("sendonly" if kind == "whip" else "recvonly")
    if damage == "no_media":
        sdp = sdp.split("m=", 1)[0]
    elif damage == "no_ice_ufrag":
        sdp = without(sdp, "a=ice-ufrag:")
    else:
        sdp = without(sdp, "a=fingerprint:")
    data = await check_error(await post(http, f"{srv.url}/{kind}/{name()}", sdp), 400, "bad_sdp")
    assert words in data["reason"]


async def test_offer_the_webrtc_stack_refuses_is_4xx(srv, http):
    base = await offer("sendonly")
    # passes the quick checks, then aiortc or the peer refuses it
    cases = {
        "datachannel_only": await datachannel_offer(),
        "no_setup": without(base, "a=setup:"),
        "no_rtpmap": without(without(base, "a=rtpmap:"), "a=fmtp:"),
        "bad_setup": base.replace("a=setup:actpass", "a=setup:sideways"),
        "duplicate_kinds": base.replace("m=audio", "m=video"),
    }
    for case, sdp in cases.items():
        stream = name()
        status, headers, body = await post(http, f"{srv.url}/whip/{stream}", sdp)
        assert 400 <= status < 500, (case, status, body)
        assert json.loads(body)["reason"]
        async with http.get(f"{srv.url}/api/v1/streams/{stream}") as resp:
            assert resp.status == 404, case  # nothing left behind


async def datachannel_offer() -> str:
    pc = RTCPeerConnection(NO_STUN)
    try:
        pc.createDataChannel("x")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def test_publisher_without_a_usable_codec_is_refused(srv, http):
    sdp = await offer("sendonly", kinds=("video",), codec="vp8")
    sdp = without(without(sdp, "a=rtpmap:98"), "a=fmtp:98").replace(" 97 98\r\n", " 97\r\n")
    sdp = sdp.replace("VP8/90000", "AV1/90000")  # a codec the node does not know
    stream = name()
    status, headers, body = await post(http, f"{srv.url}/whip/{stream}", sdp)
    assert status in (400, 406), body
    assert json.loads(body)["error"] == "negotiation_failed"
    async with http.get(f"{srv.url}/api/v1/streams/{stream}") as resp:
        assert resp.status == 404  # a refused publisher leaves no stream behind


@pytest.mark.parametrize("kind", ["whip", "whep"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json",
                                          "application/sdpx", TRICKLE])
async def test_wrong_content_type_is_415(srv, http, kind, content_type):
    sdp = await offer("sendonly")
    status, headers, body = await post(http, f"{srv.url}/{kind}/{name()}", sdp.encode(),
                                       content_type)
    await check_error((status, headers, body), 415, "unsupported_media_type")
    assert headers["Accept-Post"] == SDP


async def test_content_type_parameters_and_case_are_accepted(srv, http):
    stream = name()
    sdp = await offer("sendonly")
    status, headers, body = await post(http, f"{srv.url}/whip/{stream}", sdp,
                                       "Application/SDP; charset=utf-8")
    assert status == 201, body
    async with http.delete(srv.url + headers["Location"]) as resp:
        assert resp.status == 200


# -- body size ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["whip", "whep"])
async def test_oversized_body_is_413(srv, http, kind):
    url = f"{srv.url}/{kind}/{name()}"
    big = b"v=0\r\n" + b"a=x-padding:" + b"p" * MAX_BODY + b"\r\n"
    await check_error(await post(http, url, big), 413, "body_too_large")

    async def chunked():  # no Content-Length at all
        for _ in range(MAX_BODY // 1000 + 10):
            yield b"a=x-padding:" + b"p" * 986 + b"\r\n"

    await check_error(await post(http, url, chunked()), 413, "body_too_large")
    # exactly at the limit is fine as far as size goes (and then bad SDP)
    await check_error(await post(http, url, b"v" * MAX_BODY), 400, "bad_sdp")


async def raw_request(srv, request: bytes, timeout: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read(65536)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_content_length_above_the_limit_is_413_without_reading_the_body(srv):
    # the body announced is huge, but only a few bytes follow: no waiting for the rest
    response = await raw_request(srv, (
        b"POST /whip/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
        b"Content-Length: 1000000000\r\n\r\nv=0\r\n"))
    assert status_of(response) == 413, response
    assert b"body_too_large" in response


async def test_understated_content_length_never_5xx(srv, http):
    # Content-Length says 5 bytes, 100 kB follow: the node reads 5, the rest is no request
    response = await raw_request(srv, (
        b"POST /whep/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
        b"Content-Length: 5\r\n\r\nv=0\r\n" + b"m" * 100_000))
    assert status_of(response) == 400, response


async def test_chunked_body_above_the_limit_is_413(srv):
    chunk = b"a=x-padding:" + b"p" * 4000 + b"\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    response = await raw_request(srv, (
        b"POST /whip/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body))
    assert status_of(response) == 413, response


async def test_content_length_with_chunked_is_refused(srv):
    response = await raw_request(srv, (
        b"POST /whip/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nv=0\n\r\n0\r\n\r\n"))
    assert 400 <= status_of(response) < 500, response


# -- stream names -------------------------------------------------------------------------

BAD_NAMES = ["a" * 129, "a..b", "a%20b", "caf%C3%A9", "a%2Fb", "%2E%2E", ".hidden", "-x",
             "a%0A", "a%0D%0ASet-Cookie:x", "a%00", "%F0%9F%8E%A5"]


@pytest.mark.parametrize("kind", ["whip", "whep"])
@pytest.mark.parametrize("bad", BAD_NAMES)
async def test_bad_stream_name_is_400(srv, http, kind, bad):
    url = URL(f"{srv.url}/{kind}/{bad}", encoded=True)
    data = await check_error(await post(http, url, await offer("sendonly")), 400,
                             "bad_stream_name")
    assert "stream names" in data["reason"]


@pytest.mark.parametrize("bad", ["a" * 129, "a..b", "a%2Fb", "a%0A", "caf%C3%A9"])
async def test_bad_stream_name_in_the_api_is_400(srv, http, bad):
    async with http.get(URL(f"{srv.url}/api/v1/streams/{bad}", encoded=True)) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad_stream_name"


async def test_longest_name_is_fine(srv, http):
    session = await Session.create(http, srv.url, "whip", "n" * 128)
    assert session.location.startswith("/whip/" + "n" * 128 + "/")
    assert await session.delete() == 200


# -- session URLs -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["whip", "whep"])
async def test_unknown_session_is_404(srv, http, kind):
    url = f"{srv.url}/{kind}/{name()}/{'x' * 24}"
    async with http.delete(url) as resp:
        await check_error((resp.status, resp.headers, await resp.read()), 404,
                          "no_such_session")
    async with http.patch(url, data="a=end-of-candidates\r\n",
                          headers={"Content-Type": TRICKLE}) as resp:
        await check_error((resp.status, resp.headers, await resp.read()), 404,
                          "no_such_session")
    if kind == "whep":
        async with http.get(url + "/events") as resp:
            assert resp.status == 404
        async with http.post(url + "/events", json=["active"]) as resp:
            assert resp.status == 404


async def test_session_url_of_the_other_kind_or_stream_is_404(srv, http):
    stream = name()
    async with WhipPublisher(srv.url, stream, tracks(audio=False)) as publisher:
        viewer = await Session.create(http, srv.url, "whep", stream)
        pub_path = URL(publisher.location).path
        pub_id = pub_path.rsplit("/", 1)[1]
        view_id = viewer.location.rsplit("/", 1)[1]
        wrong = [f"/whep/{stream}/{pub_id}", f"/whip/{stream}/{view_id}",
                 f"/whip/other/{pub_id}", f"/whep/other/{view_id}"]
        for path in wrong:
            async with http.delete(srv.url + path) as resp:
                assert resp.status == 404, path
            async with http.patch(srv.url + path, data="a=end-of-candidates\r\n",
                                  headers={"Content-Type": TRICKLE}) as resp:
                assert resp.status == 404, path
        async with http.get(f"{srv.url}/whep/{stream}/{pub_id}/events") as resp:
            assert resp.status == 404  # a publisher has no event stream
        # both sessions are untouched by the wrong requests
        ids = {s["id"] for s in (await api(http, srv.url, "/api/v1/sessions"))["sessions"]}
        assert {pub_id, view_id} <= ids
        assert await viewer.delete() == 200


async def test_unknown_routes_and_methods(srv, http):
    async with http.get(f"{srv.url}/nowhere") as resp:
        await check_error((resp.status, resp.headers, await resp.read()), 404)
    async with http.put(f"{srv.url}/whip/{name()}", data="x") as resp:
        await check_error((resp.status, resp.headers, await resp.read()), 405)
        assert "POST" in resp.headers["Allow"]
    async with http.get(f"{srv.url}/whep/{name()}") as resp:
        assert resp.status == 405


# -- conflicts, not live, codecs ----------------------------------------------------------

async def test_second_publisher_is_409(srv, http):
    stream = name()
    first = await Session.create(http, srv.url, "whip", stream)
    status, headers, body = await post(http, f"{srv.url}/whip/{stream}",
                                       await offer("sendonly"))
    await check_error((status, headers, body), 409, "stream_busy")
    info = await api(http, srv.url, f"/api/v1/streams/{stream}")
    assert info["publisher"]["session"] == first.location.rsplit("/", 1)[1]
    assert await first.delete() == 200


async def test_whep_on_a_stream_that_is_not_live_is_409_with_retry_after(srv, http):
    stream = name()
    status, headers, body = await post(http, f"{srv.url}/whep/{stream}", await offer("recvonly"))
    await check_error((status, headers, body), 409, "not_live")
    assert int(headers["Retry-After"]) >= 1
    assert "Retry-After" in headers["Access-Control-Expose-Headers"]
    async with http.get(f"{srv.url}/api/v1/streams/{stream}") as resp:
        assert resp.status == 404  # asking leaves no stream behind
    with pytest.raises(WhepError) as refused:  # the client sees it the same way
        await WhepViewer(srv.url, stream).start()
    assert refused.value.status == 409 and refused.value.retry_after >= 1


async def test_viewer_that_cannot_take_the_stream_codec_is_406(start_node, http):
    srv = start_node()
    stream = name()
    publisher = await Session.create(http, srv.url, "whip", stream,
                                     await offer("sendonly", codec="h264"))
    assert "H264/90000" in publisher.answer
    vp8_only = await offer("recvonly", kinds=("video",), codec="vp8")
    assert "H264" not in vp8_only
    status, headers, body = await post(http, f"{srv.url}/whep/{stream}", vp8_only)
    data = await check_error((status, headers, body), 406, "negotiation_failed")
    assert "H264" in data["reason"]
    info = await api(http, srv.url, f"/api/v1/streams/{stream}")
    assert info["viewers"] == 0
    # an H264 viewer is served
    viewer = await Session.create(http, srv.url, "whep", stream,
                                  await offer("recvonly", kinds=("video",), codec="h264"))
    assert "H264/90000" in viewer.answer and "VP8" not in viewer.answer
    assert await viewer.delete() == 200
    assert await publisher.delete() == 200


# -- OPTIONS, CORS, 201 answers -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["whip", "whep"])
async def test_options(srv, http, kind):
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    async with http.options(f"{srv.url}/{kind}/{name()}", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Accept-Post"] == SDP
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
    async with http.options(f"{srv.url}/{kind}/{name()}/{'x' * 24}", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Accept-Patch"] == TRICKLE
        assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]
        assert "DELETE" in resp.headers["Access-Control-Allow-Methods"]
        assert "if-match" in resp.headers["Access-Control-Allow-Headers"].lower()
    # a page on another origin sends its token with the events request: preflighted
    events_preflight = {**preflight, "Access-Control-Request-Method": "GET",
                        "Access-Control-Request-Headers": "authorization"}
    async with http.options(f"{srv.url}/{kind}/{name()}/{'x' * 24}/events",
                            headers=events_preflight) as resp:
        assert resp.status == 204
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]
        assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()


def check_created(headers, kind: str, stream: str) -> str:
    location = headers["Location"]
    assert location.startswith(f"/{kind}/{stream}/")  # relative
    session_id = location.rsplit("/", 1)[1]
    assert len(session_id) >= 20 and re.fullmatch(r"[A-Za-z0-9_-]+", session_id)
    assert re.fullmatch(r'(W/)?"[^"]+"', headers["ETag"])
    assert headers["Content-Type"].split(";")[0] == SDP
    assert headers["Accept-Patch"] == TRICKLE
    assert headers["Access-Control-Allow-Origin"] == "*"
    exposed = {h.strip().lower() for h in headers["Access-Control-Expose-Headers"].split(",")}
    assert {"location", "etag", "link", "via"} <= exposed  # via: a proxy's answers
    return session_id


def check_events_link(session: Session) -> None:
    target, *params = [p.strip() for p in session.headers["Link"].split(";")]
    assert target == f"<{session.location}/events>"
    assert f'rel="{SSE_REL}"' in params
    events = next(p for p in params if p.startswith("events="))
    assert set(events.split("=", 1)[1].strip('"').split(",")) >= {"active", "inactive"}


async def test_201_answers(srv, http):
    stream = name()
    publisher = await Session.create(http, srv.url, "whip", stream)
    pub_id = check_created(publisher.headers, "whip", stream)
    assert publisher.answer.startswith("v=0")
    assert "a=fingerprint:" in publisher.answer and "a=ice-ufrag:" in publisher.answer
    check_events_link(publisher)  # publishers have an event stream too

    viewers = [await Session.create(http, srv.url, "whep", stream) for _ in range(3)]
    ids = {pub_id}
    etags = {publisher.headers["ETag"]}
    for viewer in viewers:
        view_id = check_created(viewer.headers, "whep", stream)
        ids.add(view_id)
        etags.add(viewer.headers["ETag"])
        check_events_link(viewer)
    assert len(ids) == 4 and len(etags) == 4  # different for every session
    for viewer in viewers:
        assert await viewer.delete() == 200
    assert await publisher.delete() == 200


# -- PATCH (trickle ICE) ------------------------------------------------------------------

CANDIDATE = "a=candidate:1 1 udp 2130706431 192.0.2.7 50000 typ host"


@pytest.mark.parametrize("kind", ["whip", "whep"])
async def test_patch_trickle_ice(srv, http, kind):
    stream = name()
    publisher = await Session.create(http, srv.url, "whip", stream)
    session = publisher if kind == "whip" else await Session.create(http, srv.url, "whep", stream)
    ufrag, pwd = ice_of(session.offer)
    etag = session.headers["ETag"]

    frag = f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" \
           f"a=mid:0\r\n{CANDIDATE}\r\n"
    status, headers, body = await session.patch(frag)
    assert status == 204, body
    assert (await session.patch(f"a=mid:1\r\n{CANDIDATE.replace('.7 ', '.8 ')}\r\n"))[0] == 204
    assert (await session.patch(CANDIDATE + "\r\n", **{"If-Match": etag}))[0] == 204
    assert (await session.patch(CANDIDATE + "\r\n", **{"If-Match": "*"}))[0] == 204

    # ICE restart: new credentials
    restart = f"a=ice-ufrag:new1\r\na=ice-pwd:{'n' * 24}\r\na=mid:0\r\n{CANDIDATE}\r\n"
    await check_error(await session.patch(restart), 422, "ice_restart_unsupported")
    await check_error(await session.patch(f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{'n' * 24}\r\n"),
                      422, "ice_restart_unsupported")
    await check_error(await session.patch(frag, **{"If-Match": '"not-the-etag"'}), 412,
                      "etag_mismatch")
    await check_error(await session.patch(frag, "application/sdp"), 415,
                      "unsupported_media_type")
    await check_error(await session.patch("no sdp here\r\n"), 400, "bad_sdpfrag")
    for broken in ["a=candidate:garbage", "a=candidate:1 1 udp x 192.0.2.1 5 typ host",
                   "a=candidate:1 1 udp 1 192.0.2.1 port typ host", "a=candidate:"]:
        await check_error(await session.patch(f"a=mid:0\r\n{broken}\r\n"), 400,
                          "bad_candidate")
    await check_error(await session.patch("a" * (MAX_BODY + 1)), 413, "body_too_large")
    await check_error(await session.patch(b"a=mid:\xff\xfe\r\n"), 400, "bad_encoding")

    if session is not publisher:
        assert await session.delete() == 200
    assert await publisher.delete() == 200


# -- DELETE -------------------------------------------------------------------------------

async def test_delete_ends_sessions_and_the_stream(srv, http):
    stream = name()
    publisher = await WhipPublisher(srv.url, stream, tracks(), video_codec="vp8").start()
    viewer = await WhepViewer(srv.url, stream, decode=False).start()
    try:
        await viewer.wait_frames(3, 10)
        pub_id = URL(publisher.location).path.rsplit("/", 1)[1]
        view_id = URL(viewer.location).path.rsplit("/", 1)[1]
        sessions = (await api(http, srv.url, "/api/v1/sessions"))["sessions"]
        kinds = {s["id"]: s["kind"] for s in sessions}
        assert kinds[pub_id] == "publish" and kinds[view_id] == "play"

        async with http.delete(viewer.location) as resp:
            assert resp.status == 200
        ids = {s["id"] for s in (await api(http, srv.url, "/api/v1/sessions"))["sessions"]}
        assert view_id not in ids and pub_id in ids
        assert (await api(http, srv.url, f"/api/v1/streams/{stream}"))["viewers"] == 0
        async with http.delete(viewer.location) as resp:
            assert resp.status == 404  # gone for good

        async with http.delete(publisher.location) as resp:
            assert resp.status == 200
        ids = {s["id"] for s in (await api(http, srv.url, "/api/v1/sessions"))["sessions"]}
        assert pub_id not in ids
        async with http.get(f"{srv.url}/api/v1/streams/{stream}") as resp:
            assert resp.status == 404
        status, headers, _ = await post(http, f"{srv.url}/whep/{stream}", await offer("recvonly"))
        assert status == 409 and "Retry-After" in headers
    finally:
        await viewer.stop()
        await publisher.stop()


# -- server-sent events -------------------------------------------------------------------

DRAFT_EVENTS = ("active", "inactive", "reconnect", "viewercount")


async def next_event(resp, timeout: float = 5, only=DRAFT_EVENTS) -> tuple[str, dict]:
    """The next event of a text/event-stream response among `only` (keep-alive comments
    and the node's other events skipped); EOFError when the stream ends."""
    event, data = None, None
    async with asyncio.timeout(timeout):
        while True:
            line = (await resp.content.readline()).decode()
            if not line:
                raise EOFError("event stream ended")
            line = line.rstrip("\r\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
            elif line == "" and event:
                if event in only:
                    return event, data
                event, data = None, None


async def ends(resp, timeout: float = 5) -> bool:
    """Whether the event stream ends (after whatever events) within `timeout`."""
    try:
        while True:
            await next_event(resp, timeout, only=())
    except EOFError:
        return True


async def test_server_sent_events(srv, http):
    stream = name()
    publisher = await WhipPublisher(srv.url, stream, tracks(audio=False)).start()
    viewer = await Session.create(http, srv.url, "whep", stream,
                                  await offer("recvonly", kinds=("video",)))
    events_url = srv.url + re.match(r"<([^>]+)>", viewer.headers["Link"]).group(1)
    try:
        # refused subscriptions
        for body, code in [("not json", "bad_json"), ('{"a": 1}', "bad_json"),
                           ("[1, 2]", "bad_json"), ('["active", "explode"]', "unknown_event")]:
            async with http.post(events_url, data=body,
                                 headers={"Content-Type": "application/json"}) as resp:
                await check_error((resp.status, resp.headers, await resp.read()), 400, code)
        async with http.post(events_url, data='["active"]',
                             headers={"Content-Type": "text/plain"}) as resp:
            assert resp.status == 415

        # only active/inactive: viewer counts are not sent
        async with http.post(events_url, json=["active", "inactive"]) as resp:
            assert resp.status == 201
            location = resp.headers["Location"]
            assert location == URL(events_url).path
        async with http.get(srv.url + location, timeout=aiohttp.ClientTimeout(total=20)) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert (await next_event(resp))[0] == "active"
            second = await Session.create(http, srv.url, "whep", stream)  # viewercount 2
            async with http.delete(publisher.location) as gone:
                assert gone.status == 200
            assert (await next_event(resp))[0] == "inactive"
            assert await second.delete() == 200
            assert await viewer.delete() == 200
            assert await ends(resp)  # the session ended: so did its event stream
    finally:
        await publisher.stop()


async def test_all_events_by_default(srv, http):
    stream = name()
    publisher = await Session.create(http, srv.url, "whip", stream)
    viewer = await Session.create(http, srv.url, "whep", stream)
    async with http.get(f"{srv.url}{viewer.location}/events",
                        timeout=aiohttp.ClientTimeout(total=20)) as resp:
        assert (await next_event(resp))[0] == "active"
        # events since the session began are kept for the event stream: its own arrival
        assert await next_event(resp) == ("viewercount", {"viewercount": 1})
        second = await Session.create(http, srv.url, "whep", stream)
        assert await next_event(resp) == ("viewercount", {"viewercount": 2})
        assert await second.delete() == 200
        assert await next_event(resp) == ("viewercount", {"viewercount": 1})
        assert await publisher.delete() == 200
        assert (await next_event(resp))[0] == "inactive"
        assert await viewer.delete() == 200


async def test_event_stream_keepalive(srv, http):
    stream = name()
    publisher = await Session.create(http, srv.url, "whip", stream)
    url = f"{srv.url}{publisher.location}/events"
    for bad in ("abc", "5", "60000", ""):
        async with http.get(url, params={"keepalive_ms": bad}) as resp:
            await check_error((resp.status, resp.headers, await resp.read()), 400,
                              "bad_keepalive")
    async with http.get(url, params={"keepalive_ms": "100"},
                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200
        assert (await next_event(resp))[0] == "active"
        async with asyncio.timeout(2):
            while (await resp.content.readline()) != b": keep-alive\n":
                pass
        assert await publisher.delete() == 200
        assert await ends(resp)


# -- API, health, metrics -----------------------------------------------------------------

async def test_stream_api_after_real_publishing(srv, http):
    stream = name()
    async with WhipPublisher(srv.url, stream, tracks(), video_codec="h264") as publisher:
        async with WhepViewer(srv.url, stream, decode=False) as viewer:
            await viewer.wait_frames(60, 15)  # ~2 s of video
            listed = (await api(http, srv.url, "/api/v1/streams"))["streams"]
            info = await api(http, srv.url, f"/api/v1/streams/{stream}")
    assert stream in {s["name"] for s in listed}
    assert info["name"] == stream and info["live"] is True
    assert info["codecs"] == {"video": "H264", "audio": "opus"}
    assert info["viewers"] == 1
    pub = info["publisher"]
    assert pub["session"] == URL(publisher.location).path.rsplit("/", 1)[1]
    assert pub["connection"] == "connected"
    assert pub["since"] > 1
    video, audio = pub["tracks"]["video"], pub["tracks"]["audio"]
    assert video["codec"] == "H264" and video["clock_rate"] == 90000
    assert audio["codec"] == "opus" and audio["clock_rate"] == 48000
    assert video["packets"] >= 60 and video["bytes"] > 1000 and video["frames"] >= 50
    assert video["bitrate"] > 0 and audio["bitrate"] > 0 and audio["packets"] > 50
    assert 10 <= video["fps"] <= 45
    assert video["packets_lost"] >= 0 and video["keyframes"] >= 1


async def test_unknown_stream_is_404(srv, http):
    async with http.get(f"{srv.url}/api/v1/streams/{name()}") as resp:
        await check_error((resp.status, resp.headers, await resp.read()), 404, "no_such_stream")


async def test_healthz_and_metrics(srv, http):
    health = await api(http, srv.url, "/healthz")
    assert health["status"] == "ok"
    assert health["uptime"] > 0 and health["sessions"] >= 0 and health["streams"] >= 0
    assert health["forwarding"] in ("native", "python")

    stream = name()
    publisher = await Session.create(http, srv.url, "whip", stream)
    viewer = await Session.create(http, srv.url, "whep", stream)
    await post(http, f"{srv.url}/whip/{stream}", b"junk")  # a 400
    async with http.get(f"{srv.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    values = metric_values(text)
    assert values['unbroken_sessions_created_total{kind="publish"}'] >= 1
    assert values['unbroken_sessions_created_total{kind="play"}'] >= 1
    assert values['unbroken_requests_rejected_total{status="400"}'] >= 1
    assert values["unbroken_publishers"] >= 1 and values["unbroken_subscribers"] >= 1
    assert values["unbroken_streams"] >= 1
    assert values["unbroken_draining"] == 0
    path = health["forwarding"]
    assert values[f'unbroken_forwarding_path{{path="{path}"}}'] == 1
    assert "unbroken_forwarded_packets" in values and "unbroken_forwarded_bytes" in values
    # every session's ICE consent, checked node-wide (unbroken.media.consent)
    assert values["unbroken_ice_consent_checks_total"] >= 0
    assert "unbroken_ice_consent_expired_total" in values
    assert re.search(r"^# TYPE unbroken_sessions_created(_total)? counter$", text, re.M)
    await viewer.delete()
    await publisher.delete()
    async with http.get(f"{srv.url}/metrics") as resp:
        after = metric_values(await resp.text())
    assert any(k.startswith("unbroken_sessions_closed_total{") for k in after)


def metric_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


# -- token --------------------------------------------------------------------------------

async def test_token(start_node, http):
    node = start_node("--token", "s3cret")
    stream = name()
    sdp = await offer("sendonly")
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                    {"Authorization": "Basic czNjcmV0"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer s3cret2"}]:
        for path in (f"/whip/{stream}", f"/whep/{stream}"):
            status, resp_headers, body = await post(http, node.url + path, sdp, **headers)
            await check_error((status, resp_headers, body), 401, "unauthorized")
            assert resp_headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(f"{node.url}/api/v1/streams", headers=headers) as resp:
            assert resp.status == 401 and "WWW-Authenticate" in resp.headers
    with pytest.raises(WhipError) as refused:
        await WhipPublisher(node.url, stream, tracks(), token="nope").start()
    assert refused.value.status == 401

    # preflight and health need no token
    async with http.options(f"{node.url}/whip/{stream}") as resp:
        assert resp.status == 204
    async with http.get(f"{node.url}/healthz") as resp:
        assert resp.status == 200

    auth = {"Authorization": "Bearer s3cret"}
    async with WhipPublisher(node.url, stream, tracks(), video_codec="vp8",
                             token="s3cret") as publisher:
        async with WhepViewer(node.url, stream, token="s3cret", decode=False) as viewer:
            await viewer.wait_frames(5, 10)
            async with http.delete(viewer.location) as resp:
                assert resp.status == 401  # not without the token
            async with http.get(f"{node.url}/api/v1/streams/{stream}", headers=auth) as resp:
                assert (await resp.json())["viewers"] == 1
            async with http.delete(viewer.location, headers=auth) as resp:
                assert resp.status == 200
        assert publisher.connection_state == "connected"


# -- publisher conflict: replace ----------------------------------------------------------

async def test_replace_publisher(start_node, http):
    node = start_node("--on-publisher-conflict", "replace")
    stream = name()
    first = await WhipPublisher(node.url, stream, tracks(), video_codec="vp8").start()
    second = None
    try:
        await first.wait_connected(10)
        second = await WhipPublisher(node.url, stream, tracks(), video_codec="vp8").start()
        second_id = URL(second.location).path.rsplit("/", 1)[1]
        async with http.delete(first.location) as resp:
            assert resp.status == 404  # the old session was closed by the takeover
        info = await api(http, node.url, f"/api/v1/streams/{stream}")
        assert info["live"] and info["publisher"]["session"] == second_id
        listed = (await api(http, node.url, "/api/v1/streams"))["streams"]
        assert [s["publisher"]["session"] for s in listed if s["name"] == stream] == [second_id]
        sessions = (await api(http, node.url, "/api/v1/sessions"))["sessions"]
        assert [s["id"] for s in sessions if s["kind"] == "publish"] == [second_id]
        async with WhepViewer(node.url, stream, decode=False) as viewer:
            await viewer.wait_frames(5, 10)
    finally:
        await first.stop()
        if second:
            await second.stop()


async def test_replace_publisher_with_a_viewer_watching(start_node, http):
    node = start_node("--on-publisher-conflict", "replace")
    stream = name()
    first = await WhipPublisher(node.url, stream, tracks(audio=False), video_codec="vp8").start()
    viewer = await WhepViewer(node.url, stream, audio=False).start()
    second = None
    try:
        await viewer.wait_frames(5, 10)
        second = await WhipPublisher(node.url, stream, tracks(audio=False),
                                     video_codec="vp8").start()
        second_id = URL(second.location).path.rsplit("/", 1)[1]
        async with http.delete(first.location) as resp:
            assert resp.status == 404  # the old session was closed by the takeover
        info = await api(http, node.url, f"/api/v1/streams/{stream}")
        assert info["publisher"]["session"] == second_id and info["viewers"] == 1
        sessions = (await api(http, node.url, "/api/v1/sessions"))["sessions"]
        assert [s["id"] for s in sessions if s["kind"] == "publish"] == [second_id]
        frames = viewer.frames
        await viewer.wait_frames(frames + 15, 10)  # the viewer goes on with the new publisher
    finally:
        await viewer.stop()
        await first.stop()
        if second:
            await second.stop()


# -- at the end: the shared node took all of the above and still works --------------------

async def test_shared_node_still_publishes_and_plays(srv, http):
    stream = name("final")
    async with WhipPublisher(srv.url, stream, tracks(), video_codec="vp8") as publisher:
        async with WhepViewer(srv.url, stream) as viewer:
            await viewer.wait_frames(10, 10)
            assert viewer.codec == publisher.codec == "video/VP8"
    # no handler failed along the way (aiohttp also logs requests it cannot parse: fine)
    with open(srv.log_path, errors="replace") as f:
        entries = [json.loads(line) for line in f if line.startswith("{")]
    failures = [e for e in entries if "exc" in e and "BadHttpMessage" not in e["exc"]
                and "aiohttp.http_exceptions." not in e["exc"]]  # e.g. LineTooLong
    assert not failures, failures


async def test_a_body_shorter_than_its_content_length_times_out_with_408():
    """A client announcing more than it sends does not hold the request forever."""
    from aiohttp.test_utils import TestServer

    from unbroken.httpkit import body as http_common
    from unbroken.node.app import create_app
    from unbroken.node.config import NodeConfig

    saved, http_common.BODY_TIMEOUT = http_common.BODY_TIMEOUT, 0.5
    try:
        async with TestServer(create_app(NodeConfig())) as server:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(b"POST /whip/short HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp"
                         b"\r\nContent-Length: 500\r\n\r\nv=0\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 408"), status
            writer.close()
    finally:
        http_common.BODY_TIMEOUT = saved


async def test_a_publisher_takes_over_from_its_own_previous_session(srv, http):
    """?replaces=<its old session id> skips the conflict (default reject) at once."""
    stream = name()
    first = await WhipPublisher(srv.url, stream, tracks(), video_codec="vp8").start()
    second = stranger = None
    try:
        await first.wait_connected(10)
        with pytest.raises(WhipError) as busy:  # someone else: still refused
            stranger = await WhipPublisher(srv.url, stream, tracks(), video_codec="vp8",
                                           replaces="/whip/x/not-the-session").start()
        assert busy.value.status == 409
        second = await WhipPublisher(srv.url, stream, tracks(), video_codec="vp8",
                                     replaces=first.location).start()
        second_id = URL(second.location).path.rsplit("/", 1)[1]
        info = await api(http, srv.url, f"/api/v1/streams/{stream}")
        assert info["live"] and info["publisher"]["session"] == second_id
        async with http.delete(first.location) as resp:
            assert resp.status == 404  # the old session ended with the takeover
    finally:
        for publisher in (first, second, stranger):
            if publisher:
                await publisher.stop()


async def test_whep_can_wait_for_a_publisher_that_is_on_its_way(srv, http):
    """?wait_live_ms holds the POST until the stream is live (bounded), else 409 as usual."""
    stream = name()
    viewer = WhepViewer(srv.url, stream, decode=False, wait_live_ms=3000)
    joining = asyncio.create_task(viewer.start())
    await asyncio.sleep(0.5)
    assert not joining.done()
    publisher = await WhipPublisher(srv.url, stream, tracks(), video_codec="vp8").start()
    try:
        await asyncio.wait_for(joining, 10)
        await viewer.wait_frames(5, 10)
        with pytest.raises(WhepError) as late:  # nobody comes: 409 after the wait
            await WhepViewer(srv.url, name(), decode=False, wait_live_ms=200).start()
        assert late.value.status == 409
        for bad in ("abc", "99999", "-1"):
            async with http.post(f"{srv.url}/whep/{stream}?wait_live_ms={bad}",
                                 data=await offer("recvonly"),
                                 headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status == 400
    finally:
        await viewer.stop()
        await publisher.stop()
