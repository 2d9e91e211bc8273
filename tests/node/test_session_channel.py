"""The session channel (GET /ws) against real node processes: real WebSocket sessions,
real aiortc peers with frames checked, a node killed with SIGKILL, and every kind of bad
input. Raw sockets (``Raw``) check the wire; ``SessionClient`` is the Python client."""

import asyncio
import json
import signal
import statistics
import time

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection

from unbroken.client.framecode import counters_advance
from unbroken.client.session import SessionClient, SessionError, StreamFailed
from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whip import video_codec_preferences
from unbroken.protocol import session as proto

pytestmark = pytest.mark.timeout(60)

@pytest.fixture
async def srv(shared_node):
    """The shared node; afterwards it must still be healthy and hold no session sockets."""
    yield shared_node
    assert shared_node.proc.poll() is None, shared_node.log()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{shared_node.url}/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        deadline = time.monotonic() + 3
        while (channels := await api(shared_node.url, "/api/v1/channels"))["channels"]:
            assert time.monotonic() < deadline, channels
            await asyncio.sleep(0.05)


async def api(url: str, path: str):
    async with aiohttp.ClientSession() as http:
        async with http.get(url + path) as r:
            assert r.status == 200
            return await r.json()


async def media_sessions(url: str) -> set[str]:
    return {s["id"] for s in (await api(url, "/api/v1/sessions"))["sessions"]}



async def offer_sdp(codec: str = "vp8", direction: str = "sendonly", kinds=("video",),
                    data_channel: bool = False) -> str:
    """A real aiortc offer that never connects."""
    pc = RTCPeerConnection()
    try:
        for kind in kinds:
            t = pc.addTransceiver(kind, direction=direction)
            if kind == "video" and codec:
                t.setCodecPreferences(video_codec_preferences(codec))
        if data_channel:
            pc.createDataChannel("x")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code, self.reason = code, reason


class Raw:
    """A bare protocol client: sends what it is told, answers pings unless ``silent``."""

    def __init__(self, http, ws):
        self.http, self.ws = http, ws
        self.silent = False
        self.received: list[dict] = []
        self.welcome: dict | None = None

    @classmethod
    async def open(cls, url: str, hello: dict | None = None, headers=None) -> "Raw":
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(url.replace("http://", "ws://") + "/ws", heartbeat=None,
                                       headers=headers, max_msg_size=0)
        except BaseException:
            await http.close()
            raise
        raw = cls(http, ws)
        if hello is not None:
            await raw.send(hello)
            raw.welcome = await raw.next(types=("welcome",))
        return raw

    async def send(self, message) -> None:
        if isinstance(message, dict):
            await self.ws.send_str(json.dumps(message))
        elif isinstance(message, bytes):
            await self.ws.send_bytes(message)
        else:
            await self.ws.send_str(message)

    async def next(self, timeout: float = 3, types=None) -> dict:
        """The next message (of ``types``, if given); pings answered and skipped."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:  # the node's close frame
                    raise Closed(msg.data, msg.extra)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise Closed(self.ws.close_code, msg.extra)
                message = json.loads(msg.data)
                self.received.append(message)
                if message["type"] == "ping" and not self.silent:
                    try:
                        await self.send({"type": "pong", "seq": message["seq"]})
                    except ConnectionError:
                        pass  # the node is closing this socket
                if types is None and message["type"] != "ping" or (
                        types is not None and message["type"] in types):
                    return message

    async def closed(self, timeout: float = 3) -> Closed:
        """Read until the node closes the socket; returns the close."""
        try:
            while True:
                await self.next(timeout)
        except Closed as exc:
            return exc

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


HELLO = {"type": "hello", "version": 1}


# -- pings ---------------------------------------------------------------------------------

async def test_pings_arrive_at_the_asked_interval(srv):
    async with SessionClient(srv.url, ping_interval=0.15, missing_pings=3) as client:
        assert client.welcome["ping_interval"] == 150
        assert client.welcome["missing_pings"] == 3
        assert client.welcome["version"] == proto.PROTOCOL_VERSION
        assert len(client.id) >= 16 and client.state == "ESTABLISHED"
        assert client.welcome["limits"]["max_streams"] == proto.MAX_STREAMS
        async with asyncio.timeout(5):
            while len(client.pings) < 13:
                await asyncio.sleep(0.05)
        pings = list(client.pings)
        assert [seq for seq, _ in pings] == list(range(1, len(pings) + 1))
        gaps = [b - a for (_, a), (_, b) in zip(pings, pings[1:])]
        print(f"ping gaps asked 150 ms: mean {statistics.mean(gaps) * 1000:.1f} ms, "
              f"min {min(gaps) * 1000:.1f}, max {max(gaps) * 1000:.1f}")
        assert 0.135 <= statistics.mean(gaps) <= 0.165, gaps
        assert max(gaps) < 0.3, gaps
        channel = (await api(srv.url, "/api/v1/channels"))["channels"]
        assert [c["id"] for c in channel] == [client.id]
        assert channel[0]["rtt"] is not None and channel[0]["rtt"] < 0.1

    # bounds and defaults, on the wire; a client may ping the node too
    for asked, given in ((None, 250), (10, 100), (10 ** 7, 5000), (333.3, 333)):
        hello = dict(HELLO) if asked is None else {**HELLO, "ping_interval": asked}
        raw = await Raw.open(srv.url, hello)
        assert raw.welcome["ping_interval"] == given
        assert raw.welcome["missing_pings"] == 4
        if asked is None:
            assert (await raw.next(types=("ping",)))["seq"] == 1
            ping = await raw.next(types=("ping",))
            assert ping["seq"] == 2 and abs(ping["t"] / 1000 - time.time()) < 5
            await raw.send({"type": "ping", "seq": 77})
            assert await raw.next(types=("pong",)) == {"type": "pong", "seq": 77}
        await raw.close()


async def test_a_client_that_stops_answering_is_closed_and_its_streams_released(srv):
    source = TestPatternVideoTrack()
    quiet = await SessionClient(srv.url, ping_interval=0.1, missing_pings=3).connect()
    watcher = await SessionClient(srv.url).connect()
    try:
        publisher = await quiet.publish("quiet", [source], video_codec="vp8")
        own_viewer = await quiet.play("quiet", decode=False)
        viewer = await watcher.play("quiet", decode=False)
        await publisher.wait_state("PUBLISHING", 5)
        await viewer.wait_state("PLAYING", 5)
        await own_viewer.wait_state("PLAYING", 5)
        held = {publisher.media_session, own_viewer.media_session}
        assert held <= await media_sessions(srv.url)
        events_before = len(viewer.events)

        quiet.answer_pings = False
        stopped = time.monotonic()
        await quiet.wait_state("FAILED", 3)
        took = time.monotonic() - stopped
        print(f"node closed a silent session after {took * 1000:.0f} ms "
              f"(pings every 100 ms, 3 may go unanswered)")
        assert quiet.failure[0] == "ping_timeout", quiet.failure
        assert quiet.closing == {"type": "session_closing", "code": "ping_timeout",
                                 "reason": "3 pings without a pong"}
        assert quiet._ws.close_code == 4000
        assert 0.25 <= took <= 1.0, took
        # its streams are released: the media sessions are gone, the viewer hears it
        await viewer.wait_event("inactive", 3, since=events_before)
        assert not held & await media_sessions(srv.url)
        channels = (await api(srv.url, "/api/v1/channels"))["channels"]
        assert [c["id"] for c in channels] == [watcher.id]
        assert viewer.state == "PLAYING"  # viewers stay for the publisher to come back
        assert publisher.state == own_viewer.state == "FAILED"  # reported locally
        assert publisher.code == "session_lost"
    finally:
        await quiet.close()
        await watcher.close()


# -- publish and play --------------------------------------------------------------------

async def start_proxy(target: str):
    """A plain reverse proxy (HTTP and WebSocket) in front of the node: other host/port,
    its own connections. Nothing passes that names the node."""
    http = aiohttp.ClientSession(auto_decompress=False)

    async def ws_proxy(request):
        down = web.WebSocketResponse(heartbeat=None, max_msg_size=0)
        await down.prepare(request)
        async with http.ws_connect(target.replace("http", "ws", 1) + request.path_qs,
                                   heartbeat=None, max_msg_size=0) as up:
            async def pump(src, dst):
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                await dst.close()

            await asyncio.gather(pump(down, up), pump(up, down), return_exceptions=True)
        return down

    async def http_proxy(request):
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with http.request(request.method, target + request.path_qs, headers=headers,
                                data=await request.read()) as up:
            resp = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.router.add_get("/ws", ws_proxy)
    app.router.add_route("*", "/{tail:.*}", http_proxy)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]

    async def stop():
        await runner.cleanup()
        await http.close()

    return f"http://127.0.0.1:{port}", stop


async def sse_events(url: str, into: list, ready: asyncio.Event) -> None:
    """(event, data) of a text/event-stream until it ends."""
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 200
            ready.set()
            event = None
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event:
                    into.append((event, json.loads(line.split(":", 1)[1])))
                    event = None


async def test_publish_and_play_over_the_session_through_a_reverse_proxy(srv):
    proxy_url, stop_proxy = await start_proxy(srv.url)
    publishing = await SessionClient(proxy_url).connect()
    playing = await SessionClient(proxy_url).connect()
    sources = {"h264": TestPatternVideoTrack(), "vp8": TestPatternVideoTrack()}
    try:
        # VP8 with audio, H264 video only (keeps the test light on a busy machine)
        publishers = {codec: await publishing.publish(
            f"px-{codec}", [src, ToneAudioTrack()] if codec == "vp8" else [src],
            video_codec=codec) for codec, src in sources.items()}
        # the publisher's server-sent events (WHIP resource) carry the same states
        sse: list = []
        ready = asyncio.Event()
        reader = asyncio.create_task(sse_events(
            proxy_url + publishers["vp8"].answer_message["resource"] + "/events", sse, ready))
        await asyncio.wait_for(ready.wait(), 5)
        viewers = {codec: await playing.play(f"px-{codec}") for codec in sources}
        await asyncio.gather(*(v.wait_frames(40, 15) for v in viewers.values()))
        for codec, viewer in viewers.items():
            assert counters_advance(viewer.counters), list(viewer.counters)[-20:]
            assert viewer.codec.lower() == f"video/{codec}"
            assert viewer.audio_frames > 10 or codec == "h264"
            assert viewer.state == "PLAYING" and viewer.active is True
            assert viewer.viewercount == 1
            assert publishers[codec].state == "PUBLISHING"
        ids = await media_sessions(srv.url)
        for handle in [*publishers.values(), *viewers.values()]:
            answer = handle.answer_message
            kind = "whip" if handle.kind == "publish" else "whep"
            assert answer["resource"] == f"/{kind}/{handle.stream}/{answer['session']}"
            assert answer["session"] in ids
        # nothing in any message names a host: it all works behind a proxy
        for client in (publishing, playing):
            for message in client.messages:
                text = json.dumps({k: v for k, v in message.items() if k != "sdp"})
                assert "://" not in text and str(srv.port) not in text, message

        await publishers["vp8"].stop()
        assert publishers["vp8"].states[-1]["state"] == "UNPUBLISHED"
        await asyncio.wait_for(reader, 5)  # the event stream ends with the session
        states = [(d["state"], d["code"]) for e, d in sse if e == "stream_state"]
        assert states == [("PUBLISHING", None), ("UNPUBLISHED", "stopped")], sse
        socket_states = [(s["state"], s["code"]) for s in publishers["vp8"].states]
        assert socket_states == states
        await viewers["vp8"].wait_event("inactive", 3)
        assert viewers["h264"].active is True  # the other stream goes on
        frames = viewers["h264"].frames
        await viewers["h264"].wait_frames(frames + 10, 5)
    finally:
        await playing.close()
        await publishing.close()
        await stop_proxy()
    assert publishing.state == playing.state == "DISCONNECTED"


async def test_states_and_events_in_order(start_node):
    """Publish, stop, publisher loss (media timeout), publisher return: each side hears it
    in order, and the viewer's server-sent events say exactly what its socket says."""
    node = start_node("--media-timeout", "0.4")
    source = TestPatternVideoTrack()
    pub_session = await SessionClient(node.url).connect()
    view_session = await SessionClient(node.url).connect()
    sse: list = []
    reader = None
    try:
        pub = await pub_session.publish("order", [source], video_codec="vp8")
        await pub.wait_state("PUBLISHING", 5)
        viewer = await view_session.play("order", audio=False)
        ready = asyncio.Event()
        reader = asyncio.create_task(sse_events(
            node.url + viewer.answer_message["resource"] + "/events", sse, ready))
        await asyncio.wait_for(ready.wait(), 5)
        await viewer.wait_frames(15, 10)

        await pub.stop()  # 1. stopped on purpose
        assert [(s["state"], s["code"]) for s in pub.states] == [
            ("PUBLISHING", None), ("UNPUBLISHED", "stopped")]
        await viewer.wait_event("inactive", 3)

        pub = await pub_session.publish("order", [source], video_codec="vp8")  # 2. back
        await pub.wait_state("PUBLISHING", 5)
        await viewer.wait_event("active", 3, since=3)
        frames = viewer.frames
        await viewer.wait_frames(frames + 15, 5)

        source.stall()  # 3. lost: the encoder stalls, the node times the publisher out
        stalled = time.monotonic()
        with pytest.raises(StreamFailed):
            await pub.wait_state("UNPUBLISHED", 3)
        print(f"publisher loss reported {time.monotonic() - stalled:.2f} s after its media "
              f"stopped (media timeout 0.4 s)")
        assert (pub.state, pub.code) == ("FAILED", "media_timeout")
        await viewer.wait_event("inactive", 3, since=4)

        source.resume()  # 4. back again: the viewer continues on the same session
        pub = await pub_session.publish("order", [source], video_codec="vp8")
        await pub.wait_state("PUBLISHING", 5)
        await viewer.wait_event("active", 3, since=5)
        frames = viewer.frames
        await viewer.wait_frames(frames + 15, 5)
        assert counters_advance(list(viewer.counters)[-12:])
        await viewer.stop()
        assert viewer.states[-1]["state"] == "STOPPED"
        await asyncio.wait_for(reader, 5)

        seen = [(m["type"], m.get("event") or m.get("state"))
                for m in view_session.messages if m["type"] not in ("ping", "welcome")]
        assert seen == [
            ("answer", None), ("stream_event", "active"), ("stream_event", "viewercount"),
            ("stream_state", "PLAYING"),
            ("stream_event", "inactive"), ("stream_event", "active"),
            ("stream_event", "inactive"), ("stream_event", "active"),
            ("stream_state", "STOPPED")], seen
        # server-sent events: the first event is the stream's state on connecting
        sse_seen = [("stream_state", d["state"]) if e == "stream_state" else ("stream_event", e)
                    for e, d in sse]
        assert sse_seen == seen[1:], sse
        assert sse[-1][1] == {"stream": "order", "state": "STOPPED", "code": "stopped",
                              "reason": "stopped by client"}
    finally:
        if reader:
            reader.cancel()
        await view_session.close()
        await pub_session.close()


async def test_refusals_say_why(srv):
    video = await offer_sdp("vp8")
    async with SessionClient(srv.url) as client:
        with pytest.raises(StreamFailed) as refused:
            await client.play("nobody-here")
        assert refused.value.code == "not_live"
        assert "not live" in refused.value.reason

    raw = await Raw.open(srv.url, HELLO)
    try:
        async def expect(message, **fields):
            await raw.send(message)
            reply = await raw.next(types=("answer", "stream_state", "error"))
            for key, value in fields.items():
                assert reply.get(key) == value, (message.get("type"), reply)
            assert reply["type"] == "answer" or reply["reason"], reply
            return reply

        def publish(id_, stream, sdp=video):
            return {"type": "publish", "id": id_, "stream": stream, "sdp": sdp}

        await expect(publish("a", "../etc"), type="stream_state", id="a", state="FAILED",
                     code="bad_stream_name", stream="../etc")
        await expect(publish("a", "ok", "v=0\r\nnot sdp"), state="FAILED", code="bad_sdp")
        await expect(publish("a", "ok", await offer_sdp(kinds=(), data_channel=True)),
                     state="FAILED", code="negotiation_failed")
        vp9 = video.replace("VP8/90000", "VP9/90000")
        await expect(publish("a", "ok", vp9), state="FAILED", code="unsupported_codec")
        await expect({"type": "play", "id": "a", "stream": "ok",
                      "sdp": await offer_sdp(direction="recvonly")},
                     state="FAILED", code="not_live")
        # a session holds at most max_streams; ids are unique while in use
        answers = [await expect(publish(f"p{i}", f"many-{i}"), type="answer", id=f"p{i}")
                   for i in range(proto.MAX_STREAMS)]
        assert {a["session"] for a in answers} <= await media_sessions(srv.url)
        await expect(publish("p0", "other"), type="error", code="duplicate_id", ref="p0")
        await expect(publish("p9", "more"), type="stream_state", state="FAILED",
                     code="too_many_streams")
        await expect({"type": "stop", "id": "nope"}, type="error", code="unknown_id",
                     ref="nope")
        # a second publisher on a live stream (another session) is refused
        async with SessionClient(srv.url) as other:
            with pytest.raises(StreamFailed) as busy:
                await other.publish("many-0", [TestPatternVideoTrack()])
            assert busy.value.code == "stream_busy"
        await expect({"type": "stop", "id": "p0"}, type="stream_state", id="p0",
                     state="UNPUBLISHED", code="stopped")
        await expect(publish("p9", "more"), type="answer", id="p9")  # room again
    finally:
        await raw.close()
    # closing the socket released every stream it held
    deadline = time.monotonic() + 3
    while not {a["session"] for a in answers}.isdisjoint(await media_sessions(srv.url)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


# -- bad input -----------------------------------------------------------------------------

async def test_bad_input_gets_errors_or_a_close_and_others_carry_on(srv):
    bystander = await SessionClient(srv.url, ping_interval=0.1, missing_pings=3).connect()
    pings_before = len(bystander.pings)

    async def errors_then_still_fine():
        raw = await Raw.open(srv.url, HELLO)
        cases = [
            ("not json", "bad_json", None),
            ("[1, 2]", "bad_message", None),
            ("{}", "bad_field", None),
            ({"type": "explode"}, "unknown_type", "explode"),
            ({"type": "publish", "id": 5, "stream": "a", "sdp": "v=0"}, "bad_field", "publish"),
            ({"type": "play", "id": "v1", "stream": "a", "sdp": 7}, "bad_field", "v1"),
            ({"type": "pong", "seq": "x"}, "bad_field", "pong"),
            ({"type": "pong", "seq": 10 ** 9}, "bad_pong", "pong"),
            (b"\x00\x01binary", "bad_message", None),
            ({"type": "stop", "id": "zz"}, "unknown_id", "zz"),
            (HELLO, "already_welcomed", "hello"),
        ]
        for message, code, ref in cases:
            await raw.send(message)
            error = await raw.next(types=("error",))
            assert (error["code"], error["ref"]) == (code, ref), (message, error)
            assert error["reason"]
        await raw.send({"type": "ping", "seq": 5})
        assert (await raw.next(types=("pong",)))["seq"] == 5
        seq = (await raw.next(types=("ping",)))["seq"]
        assert (await raw.next(types=("ping",)))["seq"] == seq + 1  # still pinged
        await raw.close()

    async def closed_with(hello_or_nothing, close_code, session_code, error_code=None):
        raw = await Raw.open(srv.url)
        if hello_or_nothing is not None:
            await raw.send(hello_or_nothing)
        if error_code:
            assert (await raw.next(types=("error",), timeout=7))["code"] == error_code
        closing = await raw.next(types=("session_closing",), timeout=7)
        assert closing["code"] == session_code and closing["reason"]
        closed = await raw.closed()
        assert closed.code == close_code and closed.reason, (closed.code, closed.reason)
        await raw.close()
        return closed.reason

    async def too_big(size: int, before_hello: bool = False):
        raw = await Raw.open(srv.url, None if before_hello else HELLO)
        try:
            await raw.send(json.dumps({"type": "ping", "seq": 1, "pad": "x" * size}))
        except ConnectionError:
            pass
        try:
            closing = await raw.next(types=("session_closing",))
            assert closing["code"] == "message_too_big"
            closed = await raw.closed()
        except Closed as exc:  # beyond 16 x the limit the node stops reading at once:
            closed = exc       # its close may be lost in the reset of the unread data
            assert size > 16 * 65536
        assert closed.code in (1009, 1006)
        if size <= 16 * 65536:
            assert closed.code == 1009 and "65536" in closed.reason
        await raw.close()

    async def flood():
        raw = await Raw.open(srv.url, HELLO)
        try:
            for seq in range(2000):
                await raw.send({"type": "ping", "seq": seq})
        except ConnectionError:
            pass  # closed while still flooding
        error = await raw.next(types=("error",))
        assert error["code"] == "rate_limited"
        closing = await raw.next(types=("session_closing",))
        assert closing["code"] == "rate_limited"
        assert (await raw.closed()).code == 4008
        pongs = [m for m in raw.received if m["type"] == "pong"]
        assert proto.MESSAGE_BURST <= len(pongs) < 300  # the burst, not the flood
        await raw.close()

    async def no_upgrade():
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.url + "/ws") as r:
                assert r.status == 426
                assert (await r.json())["error"] == "upgrade_required"

    started = time.monotonic()
    try:
        reasons = await asyncio.gather(
            errors_then_still_fine(),
            closed_with({"type": "ping", "seq": 1}, 4002, "hello_required", "hello_required"),
            closed_with({"type": "hello", "version": "1"}, 4002, "hello_required", "bad_field"),
            closed_with({"type": "hello", "version": 99}, 4003, "unsupported_version",
                        "unsupported_version"),
            closed_with("}{", 4002, "hello_required", "bad_json"),
            closed_with(None, 4002, "hello_required"),  # says nothing: closed after 5 s
            too_big(100_000), too_big(70_000, before_hello=True), too_big(3_000_000),
            flood(), no_upgrade())
        assert "no hello within 5 s" in reasons[5]
        assert time.monotonic() - started < 7

        # the bystander was pinged all along, without gaps
        pings = list(bystander.pings)[pings_before:]
        gaps = [b - a for (_, a), (_, b) in zip(pings, pings[1:])]
        print(f"bystander: {len(pings)} pings, largest gap {max(gaps) * 1000:.0f} ms")
        assert max(gaps) < 0.3 and bystander.state == "ESTABLISHED"
    finally:
        await bystander.close()


async def test_token(start_node):
    node = start_node("--token", "s3cret")
    raw = await Raw.open(node.url)
    await raw.send(HELLO)
    assert (await raw.next(types=("error",)))["code"] == "unauthorized"
    assert (await raw.closed()).code == 4001
    await raw.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await Raw.open(node.url, HELLO, headers={"Authorization": "Bearer wrong"})
    assert refused.value.status == 401
    raw = await Raw.open(node.url, HELLO, headers={"Authorization": "Bearer s3cret"})
    assert raw.welcome["session"]
    await raw.close()
    with pytest.raises(SessionError) as refused:
        await SessionClient(node.url, token="wrong").connect()
    assert refused.value.code == "unauthorized"
    async with SessionClient(node.url, token="s3cret") as client:
        assert client.state == "ESTABLISHED"


# -- node faults ---------------------------------------------------------------------------

async def start_relay(target_port: int):
    """A TCP relay that, when the node side dies, leaves the client side open and silent:
    a dead path (no FIN, no RST), the case only missing pings can tell."""
    conns = []

    async def handle(down_r, down_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            down_w.close()
            return
        conns.append((down_w, up_w))

        async def pump(reader, writer, close_at_eof: bool):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            if close_at_eof:
                writer.close()

        await asyncio.gather(pump(down_r, up_w, True), pump(up_r, down_w, False))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def stop():
        server.close()
        for down_w, up_w in conns:
            down_w.close()
            up_w.close()

    return f"http://127.0.0.1:{port}", stop


async def test_node_killed_is_detected_from_missing_pings(start_node):
    node = start_node()
    relay_url, stop_relay = await start_relay(node.port)
    period, missing = 0.5, 4  # the node pings every 125 ms
    direct = await SessionClient(node.url, missing_pings=missing, ping_period=period).connect()
    silent = await SessionClient(relay_url, missing_pings=missing, ping_period=period).connect()
    try:
        assert silent.welcome["ping_interval"] == direct.welcome["ping_interval"] == 125
        publisher = await silent.publish("doomed", [TestPatternVideoTrack()])
        await publisher.wait_state("PUBLISHING", 5)
        await asyncio.sleep(0.3)
        killed = time.monotonic()
        node.proc.send_signal(signal.SIGKILL)
        await asyncio.gather(direct.wait_state("FAILED", 3), silent.wait_state("FAILED", 3))
        took_direct = direct.failed_at - killed
        took_silent = silent.failed_at - killed
        print(f"node SIGKILLed: found by the client on a dead path (missing pings) after "
              f"{took_silent * 1000:.0f} ms, by the client with a direct socket "
              f"({direct.failure[0]}) after {took_direct * 1000:.0f} ms; "
              f"pings check period {period * 1000:.0f} ms, {missing} missing pings")
        assert silent.failure[0] == "missing_pings", silent.failure
        # the last ping came at most one interval (plus jitter) before the kill
        assert period - 2 * 0.125 <= took_silent <= period + 0.1, took_silent
        assert took_direct <= period + 0.1, (took_direct, direct.failure)
        assert publisher.state == "FAILED" and publisher.code == "session_lost"
    finally:
        await direct.close()
        await silent.close()
        await stop_relay()


async def test_drain_notice_then_close(start_node):
    node = start_node("--drain-timeout", "1")
    source = TestPatternVideoTrack()
    client = await SessionClient(node.url).connect()
    try:
        pub = await client.publish("drain", [source])
        viewer = await client.play("drain", decode=False)
        await viewer.wait_state("PLAYING", 5)
        await pub.wait_state("PUBLISHING", 5)
        sse: list = []
        ready = asyncio.Event()
        reader = asyncio.create_task(sse_events(
            node.url + viewer.answer_message["resource"] + "/events", sse, ready))
        await asyncio.wait_for(ready.wait(), 5)
        mark = len(client.messages)

        node.proc.send_signal(signal.SIGTERM)
        notice = await client.wait_message(lambda m: m["type"] == "node_draining", 3, mark)
        assert notice == {"type": "node_draining", "code": "draining",
                          "reason": "node is draining", "redirect": None, "ends_in": 1.0}
        with pytest.raises(StreamFailed) as refused:  # no new streams while draining
            await client.publish("drain-2", [TestPatternVideoTrack()])
        assert refused.value.code == "draining"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # no new sessions
            await Raw.open(node.url, HELLO)
        assert refused.value.status == 503

        await client.wait_state("FAILED", 4)
        assert client.failure[0] == "node_shutdown"
        assert client._ws.close_code == 1001
        tail = [(m["type"], m.get("id"), m.get("state"), m.get("code"))
                for m in list(client.messages)[mark:] if m["type"] != "ping"]
        assert tail[0] == ("node_draining", None, None, "draining"), tail
        assert tail[1][0] == "stream_state" and tail[1][2:] == ("FAILED", "draining"), tail
        tail = [t for t in tail[2:] if t[0] != "stream_event"]  # the viewer hears inactive
        assert sorted(tail[:2]) == sorted([("stream_state", pub.id, "FAILED", "node_shutdown"),
                                           ("stream_state", viewer.id, "FAILED",
                                            "node_shutdown")]), tail
        assert tail[2:] == [("session_closing", None, None, "node_shutdown")], tail
        assert pub.code == viewer.code == "node_shutdown"
        await asyncio.wait_for(reader, 5)
        sse_names = [e for e, _ in sse]
        assert "node_draining" in sse_names and sse[-1][1]["code"] == "node_shutdown", sse
        assert await asyncio.to_thread(node.proc.wait, 5) == 0
    finally:
        await client.close()


async def test_wait_live_and_replaces_over_the_session_channel(start_node):
    """The session channel takes WHIP/WHEP's options through the same admission path: a
    play with `wait_live_ms` waits for the publisher instead of failing `not_live`; a
    second publisher is refused `stream_busy` (the default), but one naming the first one's
    resource in `replaces` (a restoring publisher) takes the stream over at once, and the
    viewer goes on with the same stream handle."""
    node = start_node()
    pub_session = await SessionClient(node.url).connect()
    view_session = await SessionClient(node.url).connect()
    try:
        waiting = asyncio.create_task(view_session.play("opts", audio=False, wait_live_ms=4000))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # no not_live: it waits
        first = await pub_session.publish("opts", [TestPatternVideoTrack()], video_codec="vp8")
        viewer = await asyncio.wait_for(waiting, 6)
        await viewer.wait_frames(10, 10)

        with pytest.raises(StreamFailed) as busy:
            await pub_session.publish("opts", [TestPatternVideoTrack()], video_codec="vp8")
        assert busy.value.code == "stream_busy"

        second = await pub_session.publish("opts", [TestPatternVideoTrack()], video_codec="vp8",
                                           replaces=first.answer_message["resource"])
        await second.wait_state("PUBLISHING", 5)
        await first.wait_state("UNPUBLISHED", 3)
        assert first.code == "replaced"
        frames = viewer.frames
        await viewer.wait_frames(frames + 15, 10)
        assert viewer.state == "PLAYING"
    finally:
        await view_session.close()
        await pub_session.close()


# -- resume: a socket through a proxy breaks, the node keeps its streams ------------------

VIA = {"Via": "1.1 unbroken-manager"}


async def test_a_proxied_socket_that_breaks_is_resumed_with_its_streams(start_node, tmp_path):
    config = tmp_path / "node.toml"
    config.write_text("[node]\nsession_resume_ms = 1500\n")
    node = start_node("--config", str(config))
    first = await Raw.open(node.url, HELLO, headers=VIA)
    welcome = first.welcome
    assert welcome["proxied"] and welcome["resume_token"] and welcome["node"].startswith("standalone-")
    assert welcome["limits"]["resume_ms"] == 1500
    await first.send({"type": "publish", "id": "p1", "stream": "kept", "sdp": await offer_sdp()})
    answer = await first.next(types=("answer",))
    # the path breaks: no close frame, the connection just ends
    first.ws._response.connection.transport.abort()
    await first.http.close()
    await asyncio.sleep(0.3)
    assert answer["session"] in await media_sessions(node.url)  # kept for a resume
    # a wrong token resumes nothing (and leaves the parked session alone)
    wrong = await Raw.open(node.url, {**HELLO, "resume": welcome["session"],
                                      "resume_token": "nope"}, headers=VIA)
    assert not wrong.welcome["resumed"] and wrong.welcome["session"] != welcome["session"]
    await wrong.close()
    second = await Raw.open(node.url, {**HELLO, "resume": welcome["session"],
                                       "resume_token": welcome["resume_token"]}, headers=VIA)
    try:
        assert second.welcome["resumed"] and second.welcome["session"] == welcome["session"]
        channels = (await api(node.url, "/api/v1/channels"))["channels"]
        assert [c["streams"]["p1"]["session"] for c in channels] == [answer["session"]]
        await second.send({"type": "stop", "id": "p1"})  # the stream is this socket's now
        state = await second.next(types=("stream_state",))
        assert (state["id"], state["state"]) == ("p1", "FAILED") or state["state"] in (
            "UNPUBLISHED", "STOPPED"), state
    finally:
        await second.close()

    # not resumed in time: the streams are released when the window ends
    third = await Raw.open(node.url, HELLO, headers=VIA)
    await third.send({"type": "publish", "id": "p2", "stream": "gone", "sdp": await offer_sdp()})
    gone = (await third.next(types=("answer",)))["session"]
    third.ws._response.connection.transport.abort()
    await third.http.close()
    await asyncio.sleep(0.5)
    assert gone in await media_sessions(node.url)
    await asyncio.sleep(1.5)
    assert gone not in await media_sessions(node.url)
    assert not (await api(node.url, "/api/v1/channels"))["channels"]


async def test_a_direct_socket_that_breaks_releases_its_streams_at_once(srv):
    raw = await Raw.open(srv.url, HELLO)
    assert not raw.welcome["proxied"]
    await raw.send({"type": "publish", "id": "p1", "stream": "direct", "sdp": await offer_sdp()})
    session = (await raw.next(types=("answer",)))["session"]
    raw.ws._response.connection.transport.abort()
    await raw.http.close()
    deadline = time.monotonic() + 2
    while session in await media_sessions(srv.url):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
