"""Fuzzing the node's HTTP surface (hypothesis) against an in-process app.

Whatever arrives (random bytes, SDP-looking text, real aiortc offers with lines deleted,
duplicated or corrupted, random paths and methods), the node answers below 500 and keeps
answering. A 5xx fails with the handler's traceback, captured from aiohttp's log.
"""

import json
import logging
import re
import string

import pytest
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from yarl import URL

from unbroken.node.app import create_app
from unbroken.node.config import NodeConfig

pytestmark = pytest.mark.timeout(90)

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"


def fuzz(examples: int) -> settings:
    # one app for all examples of a test is the point (it must keep answering)
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


class Failures(logging.Handler):
    """Keeps the tracebacks aiohttp logs for requests whose handler raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            return  # a request aiohttp could not parse, answered 400: fine
        self.records.append(self.format(record))


async def make_offer(direction: str) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: nothing to wait for
    try:
        pc.addTransceiver("video", direction=direction)
        pc.addTransceiver("audio", direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


class Fuzzed:
    """The in-process node, a live stream on it (a publisher that never connects: live from
    its answer on, for connect_timeout), and real offers to mutate."""

    def __init__(self, client: TestClient, failures: Failures, pub_offer: str, view_offer: str,
                 live_location: str) -> None:
        self.client, self.failures = client, failures
        self.pub_offer, self.view_offer = pub_offer, view_offer
        self.live_location = live_location

    async def request(self, method: str, path, **kwargs) -> int:
        before = len(self.failures.records)
        async with self.client.request(method, path, **kwargs) as resp:
            await resp.read()
            status = resp.status
            location = resp.headers.get("Location")
        assert status < 500, (method, path, status, self.failures.records[before:])
        if status == 201 and method == "POST" and not str(path).endswith("/events"):
            # a session came out of it: end it again at once
            async with self.client.delete(location) as resp:
                assert resp.status == 200
        return status

    async def post_sdp(self, kind: str, body: bytes | str, stream: str = "live") -> int:
        return await self.request("POST", f"/{kind}/{stream}", data=body,
                                  headers={"Content-Type": SDP})


@pytest.fixture
async def fuzzed():
    failures = Failures()
    server_log = logging.getLogger("aiohttp.server")
    server_log.addHandler(failures)
    app = create_app(NodeConfig(connect_timeout=120, max_body_bytes=16 * 1024))
    try:
        async with TestClient(TestServer(app)) as client:
            async with client.post("/whip/live", data=await make_offer("sendonly"),
                                   headers={"Content-Type": SDP}) as resp:
                assert resp.status == 201
                live_location = resp.headers["Location"]
            yield Fuzzed(client, failures, await make_offer("sendonly"),
                         await make_offer("recvonly"), live_location)
            # still answering, and still negotiating, after all of it
            async with client.get("/healthz") as resp:
                assert resp.status == 200
            async with client.post("/whep/live", data=await make_offer("recvonly"),
                                   headers={"Content-Type": SDP}) as resp:
                assert resp.status == 201, await resp.text()
            async with client.get("/api/v1/sessions") as resp:
                sessions = (await resp.json())["sessions"]
            # the live publisher and the last viewer: every fuzzed session was ended
            assert len(sessions) == 2, sessions
    finally:
        server_log.removeHandler(failures)
    assert not failures.records, failures.records


# -- strategies ---------------------------------------------------------------------------

SDP_TYPES = "voOsiuepcbtrzkamx= "
sdp_line = st.one_of(
    st.tuples(st.sampled_from(SDP_TYPES), st.text(max_size=60)).map(lambda t: f"{t[0]}={t[1]}"),
    st.sampled_from([
        "v=0", "m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=video 0 RTP/AVP 0",
        "a=ice-ufrag:abcd", "a=ice-pwd:" + "p" * 22, "a=setup:actpass", "a=mid:0",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=rtpmap:96 VP8/90000",
        "a=rtpmap:111 opus/48000/2", "a=rtpmap:96 H264/90000", "a=rtcp-mux", "a=sendonly",
        "a=recvonly", "a=group:BUNDLE 0 1", "a=ssrc:1 cname:x", "a=fmtp:96 apt=97",
        "c=IN IP4 0.0.0.0", "a=candidate:1 1 udp 1 192.0.2.1 9 typ host",
    ]),
    st.text(max_size=40),
)
sdp_like = st.lists(sdp_line, max_size=30).map(lambda ls: "\r\n".join(ls) + "\r\n")


@st.composite
def mutated(draw, sdp: str) -> str:
    """A real offer with a few lines deleted, duplicated, swapped, corrupted or invented."""
    lines = sdp.split("\r\n")
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "delete_all_like", "duplicate", "swap",
                                   "truncate", "replace", "insert", "number", "flip_char"]))
        line = lines[i]
        if op == "delete":
            del lines[i]
        elif op == "delete_all_like":
            prefix = line.split(":", 1)[0] if ":" in line else line[:2]
            lines = [x for x in lines if not x.startswith(prefix)]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "truncate":
            lines[i] = line[:draw(st.integers(0, max(0, len(line) - 1)))]
        elif op == "replace":
            lines[i] = draw(sdp_line)
        elif op == "insert":
            lines.insert(i, draw(sdp_line))
        elif op == "number":
            numbers = list(re.finditer(r"\d+", line))
            if numbers:
                m = draw(st.sampled_from(numbers))
                value = draw(st.sampled_from(["0", "-1", "65536", "4294967296", "999999999999",
                                              "127", "96", "x"]))
                lines[i] = line[:m.start()] + value + line[m.end():]
        elif op == "flip_char" and line:
            k = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:k] + draw(st.characters()) + line[k + 1:]
    return "\r\n".join(lines)


path_segment = st.one_of(
    st.text(string.ascii_letters + string.digits + "._-~", min_size=0, max_size=20),
    st.text(max_size=20).map(lambda s: "".join(f"%{b:02X}" for b in s.encode())),
    st.sampled_from(["..", ".", "%2e%2e", "%2F", "%00", "live", "events", "x" * 300,
                     "%", "%zz", "a;b", "a?b=c", "%C3%A9", "%0A"]),
)
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD",
                           "TRACE", "PROPFIND"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.sampled_from(
        ["active", "inactive", "reconnect", "viewercount"]),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8)
content_types = st.sampled_from([SDP, TRICKLE, "application/json", "text/plain", "",
                                 "application/sdp; charset=latin-1", "multipart/form-data"])


# -- tests --------------------------------------------------------------------------------

@fuzz(300)
@given(body=st.binary(max_size=2048), kind=st.sampled_from(["whip", "whep"]))
async def test_random_bytes(fuzzed, body, kind):
    assert await fuzzed.post_sdp(kind, body) in (400, 409, 413)


@fuzz(400)
@given(text=sdp_like, kind=st.sampled_from(["whip", "whep"]))
async def test_sdp_like_text(fuzzed, text, kind):
    await fuzzed.post_sdp(kind, text.encode("utf-8", "surrogatepass"), stream="other")


@fuzz(400)
@given(data=st.data())
async def test_mutated_publisher_offers(fuzzed, data):
    sdp = data.draw(mutated(fuzzed.pub_offer))
    stream = data.draw(st.sampled_from(["fresh", "live"]))
    status = await fuzzed.post_sdp("whip", sdp.encode("utf-8", "surrogatepass"), stream)
    if stream == "live":
        assert status != 201  # the stream has a publisher: a second one is refused


@fuzz(400)
@given(data=st.data())
async def test_mutated_viewer_offers(fuzzed, data):
    sdp = data.draw(mutated(fuzzed.view_offer))
    await fuzzed.post_sdp("whep", sdp.encode("utf-8", "surrogatepass"))


@fuzz(600)
@given(method=methods, root=st.sampled_from(["whip", "whep", "api/v1/streams", "api/v1",
                                             "metrics", "healthz", "web", "whip/live"]),
       segments=st.lists(path_segment, max_size=4), content_type=content_types,
       body=st.one_of(st.none(), st.binary(max_size=256)))
async def test_random_paths_and_methods(fuzzed, method, root, segments, content_type, body):
    path = "/" + "/".join([root, *segments])
    try:
        url = URL(path, encoded=True)
    except ValueError:
        assume(False)
    headers = {"Content-Type": content_type} if content_type else {}
    await fuzzed.request(method, url, data=body, headers=headers)


async def test_static_file_with_a_very_long_name_is_404():
    async with TestClient(TestServer(create_app(NodeConfig()))) as client:
        async with client.get("/web/" + "x" * 300) as resp:
            assert resp.status == 404


@fuzz(300)
@given(body=st.one_of(st.binary(max_size=512), sdp_like.map(str.encode)),
       if_match=st.one_of(st.none(), st.text(string.printable.strip(), max_size=20)),
       content_type=content_types)
async def test_random_patches(fuzzed, body, if_match, content_type):
    headers = {"Content-Type": content_type}
    if if_match is not None:
        headers["If-Match"] = if_match
    status = await fuzzed.request("PATCH", fuzzed.live_location, data=body, headers=headers)
    assert status in (204, 400, 412, 415, 422)


@fuzz(200)
@given(body=st.one_of(st.binary(max_size=256), json_values.map(lambda v: json.dumps(v).encode())))
async def test_random_event_subscriptions(fuzzed, body):
    status = await fuzzed.request("POST", fuzzed.live_location + "/events", data=body,
                                  headers={"Content-Type": "application/json"})
    assert status in (201, 400, 413)
