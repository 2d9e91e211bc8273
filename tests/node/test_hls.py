"""HLS output of a real node: playlists and segments read back by independent readers
(ffprobe and PyAV demux/decode), restore → discontinuity, unpublish → end, on-demand
transcoding that stops when nobody watches."""

import asyncio
import io
import json
import shutil
import subprocess
import time

import av
import pytest

from unbroken.client.framecode import counters_advance, read_counter
from unbroken.client.hls import HlsPlayer, parse_playlist
from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whip import WhipPublisher

pytestmark = pytest.mark.timeout(40)

# a loaded machine can starve a publisher for longer than the default 0.8 s media timeout;
# these tests are not about that
SLACK = ("--media-timeout", "3")


@pytest.fixture
def node(start_node):
    return start_node(*SLACK)


async def publish(url, stream, codec, audio=True):
    tracks = [TestPatternVideoTrack()]
    if audio:
        tracks.append(ToneAudioTrack())
    return await WhipPublisher(url, stream, tracks=tracks, video_codec=codec).start()


async def get(http, url, **params):
    async with http.get(url, params=params or None) as r:
        return r.status, r.headers, await r.read()


async def playlist_with(http, url, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        status, headers, body = await get(http, url)
        if status == 200:
            pl = parse_playlist(body.decode())
            if predicate(pl):
                return pl, body.decode(), headers
        if time.monotonic() > deadline:
            raise AssertionError(f"playlist never matched: {status} {body[-400:]!r}")
        await asyncio.sleep(0.2)


def ffprobe(data: bytes) -> dict:
    assert shutil.which("ffprobe"), "no ffprobe: scripts/install-system.sh installs Debian's ffmpeg"
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format",
         "-of", "json", "-i", "pipe:0"], input=data, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert not out.stderr.strip(), out.stderr.decode()[-2000:]  # no corrupt packets
    return json.loads(out.stdout)


def decode_counters(data: bytes) -> list:
    counters = []
    with av.open(io.BytesIO(data), format="mpegts") as container:
        for frame in container.decode(video=0):
            counters.append(read_counter(frame))
    return counters



@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_playlist_and_segments_are_valid_and_decode(node, http, codec):
    pub = await publish(node.url, "cam", codec)
    base = f"{node.url}/hls/cam/"
    try:
        await asyncio.sleep(0.5)
        status, headers, body = await get(http, base + "index.m3u8")
        assert status == 200, body
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        assert headers["Cache-Control"] == "no-cache"
        assert headers["Access-Control-Allow-Origin"] == "*"
        pl, text, _ = await playlist_with(
            http, base + "index.m3u8", lambda p: sum(s.uri is not None for s in p.segments) >= 2)
        assert text.startswith("#EXTM3U\n") and "#EXT-X-TARGETDURATION:1\n" in text
        assert "#EXT-X-PART-INF:PART-TARGET=0.500" in text and "#EXT-X-PRELOAD-HINT" in text
        assert "#EXT-X-ENDLIST" not in text and "#EXT-X-DISCONTINUITY\n" not in text
        complete = [s for s in pl.segments if s.uri]
        data = b""
        for seg in complete:
            assert 0.3 <= seg.duration < pl.target_duration + 0.5, seg
            status, headers, seg_bytes = await get(http, base + seg.uri)
            assert status == 200 and headers["Content-Type"] == "video/mp2t"
            assert "immutable" in headers["Cache-Control"]
            if seg.parts:  # a segment is its parts, one after the other
                assert seg.parts[0].independent
                assert sum(p.duration for p in seg.parts) == pytest.approx(seg.duration,
                                                                           abs=0.01)
                joined = b""
                for part in seg.parts:
                    status, _, part_bytes = await get(http, base + part.uri)
                    assert status == 200
                    joined += part_bytes
                assert joined == seg_bytes
            # each segment starts at a keyframe and decodes on its own
            counters = await asyncio.to_thread(decode_counters, seg_bytes)
            assert len(counters) >= 10 and counters[0] is not None
            data += seg_bytes
        info = await asyncio.to_thread(ffprobe, data)
        streams = {s["codec_type"]: s for s in info["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
        assert streams["audio"]["codec_name"] == "aac"
        duration = sum(s.duration for s in complete)
        assert int(streams["video"]["nb_read_frames"]) >= 25 * duration
        assert int(streams["audio"]["nb_read_frames"]) >= 40 * duration
        assert counters_advance(await asyncio.to_thread(decode_counters, data), minimum=20)
        status, _, stats = await get(http, base + "stats.json")
        assert json.loads(stats)["mode"] == ("passthrough" if codec == "h264" else "transcode")
    finally:
        await pub.stop()


async def test_blocking_reload_preload_hint_and_bad_requests(node, http):
    pub = await publish(node.url, "ll", "h264", audio=False)
    base = f"{node.url}/hls/ll/"
    try:
        pl, _, _ = await playlist_with(http, base + "index.m3u8", lambda p: p.segments)
        last = pl.segments[-1]
        msn, part = (last.msn, len(last.parts)) if last.uri is None else (last.msn + 1, 0)
        started = time.monotonic()
        status, headers, body = await get(http, base + "index.m3u8", _HLS_msn=msn,
                                          _HLS_part=part)
        waited = time.monotonic() - started
        assert status == 200 and waited < 2.0
        after = parse_playlist(body.decode())
        seg = after.segment(msn)
        assert seg is not None and (len(seg.parts) > part or seg.uri is not None)
        # the preload hint is answered when the part exists
        hint = after.preload_hint
        status, _, data = await get(http, base + hint)
        assert status == 200 and len(data) % 188 == 0 and data[0] == 0x47
        for params in ({"_HLS_msn": "1000000"}, {"_HLS_part": "1"}, {"_HLS_msn": "x"}):
            status, _, _ = await get(http, base + "index.m3u8", **params)
            assert status == 400, params
        assert (await get(http, base + "nope.ts"))[0] == 404
        assert (await get(http, base + "deadbeef-1.ts"))[0] == 404
        assert (await get(http, f"{node.url}/hls/nothing/index.m3u8"))[0] == 404
        async with http.options(base + "index.m3u8") as r:
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    finally:
        await pub.stop()


async def test_publisher_restore_is_a_discontinuity_and_playback_goes_on(node, http):
    pub = await publish(node.url, "again", "h264")
    player = None
    try:
        await asyncio.sleep(0.3)
        player = await HlsPlayer(node.url, "again").start()
        await player.wait_frames(30, 10)
        assert player.mode == "ll-hls"
        await pub.stop()
        await asyncio.sleep(0.3)
        pub = await publish(node.url, "again", "h264")
        frames = player.frames
        await player.wait_frames(frames + 45, 10)
        assert player.discontinuities == 1 and not player.ended
        tail = [c for c in list(player.counters)[-30:] if c is not None]
        assert counters_advance(tail, minimum=20) and min(tail) < 300  # the new publisher's counters
        _, text, _ = await playlist_with(http, f"{node.url}/hls/again/index.m3u8",
                                         lambda p: True)
        assert "#EXT-X-DISCONTINUITY\n" in text
        assert "#EXT-X-DISCONTINUITY-SEQUENCE:0" in text
    finally:
        if player:
            await player.stop()
        await pub.stop()


async def test_unpublish_ends_the_playlist_then_frees_it(start_node, http):
    node = start_node(*SLACK, "--hls-end-grace", "0.5", "--hls-window", "2",
                      "--hls-segment-duration", "0.5", "--hls-part-duration", "0.25")
    pub = await publish(node.url, "bye", "vp8")
    ended = asyncio.Event()
    player = None
    try:
        await asyncio.sleep(0.3)
        player = await HlsPlayer(node.url, "bye", on_end=ended.set).start()
        await player.wait_frames(20, 10)
        await pub.stop()
        await asyncio.wait_for(ended.wait(), 6)
        status, _, body = await get(http, f"{node.url}/hls/bye/index.m3u8")
        assert status == 200 and body.decode().rstrip().endswith("#EXT-X-ENDLIST")
        ended_pl = parse_playlist(body.decode())
        assert ended_pl.ended and "PRELOAD-HINT" not in body.decode()
        last_uri = [s.uri for s in ended_pl.segments if s.uri][-1]
        # served a while for players to see the end, then everything is gone
        deadline = time.monotonic() + 10
        while (await get(http, f"{node.url}/hls/bye/stats.json"))[0] != 404:
            assert time.monotonic() < deadline, "HLS state not freed"
            await asyncio.sleep(0.25)
        assert (await get(http, f"{node.url}/hls/bye/index.m3u8"))[0] == 404
        assert (await get(http, f"{node.url}/hls/bye/{last_uri}"))[0] == 404
    finally:
        if player:
            await player.stop()
        await pub.stop()


async def test_transcoding_runs_only_while_watched(start_node, http):
    node = start_node(*SLACK, "--hls-idle-timeout", "1")
    pub = await publish(node.url, "vp", "vp8", audio=False)
    stats = f"{node.url}/hls/vp/stats.json"
    try:
        await asyncio.sleep(0.3)
        assert (await get(http, stats))[0] == 404  # nobody watches: nothing runs
        await playlist_with(http, f"{node.url}/hls/vp/index.m3u8", lambda p: p.segments)
        status, _, body = await get(http, stats)
        assert status == 200 and json.loads(body)["mode"] == "transcode"
        deadline = time.monotonic() + 5
        while (await get(http, stats))[0] != 404:
            assert time.monotonic() < deadline, "the transcoder did not stop"
            await asyncio.sleep(0.25)
    finally:
        await pub.stop()


async def test_token_as_bearer_or_query_and_repeated_on_uris(start_node, http):
    node = start_node(*SLACK, "--token", "s3cret")
    pub = await WhipPublisher(node.url, "tok", token="s3cret",
                              tracks=[TestPatternVideoTrack()], video_codec="h264").start()
    base = f"{node.url}/hls/tok/"
    try:
        assert (await get(http, base + "index.m3u8"))[0] == 401
        assert (await get(http, base + "index.m3u8", token="wrong"))[0] == 401
        status, _, body = await get(http, base + "index.m3u8", token="s3cret")
        assert status == 200, body
        pl = parse_playlist(body.decode())
        uri = pl.segments[0].parts[0].uri
        assert uri.endswith("?token=s3cret")
        assert (await get(http, base + uri))[0] == 200
        assert (await get(http, base + uri.split("?")[0]))[0] == 401
        async with http.get(base + "index.m3u8",
                            headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200 and "?token=" not in await r.text()
        player = await HlsPlayer(node.url, "tok", token="s3cret").start()
        try:
            await player.wait_frames(10, 10)
        finally:
            await player.stop()
    finally:
        await pub.stop()


async def test_always_mode_and_plain_hls(start_node, http):
    """`--hls always` packages H264 streams before anyone asks (VP8 ones still wait for a
    viewer); `--hls-part-duration 0` makes plain HLS, which the player reads by segment."""
    node = start_node(*SLACK, "--hls", "always", "--hls-part-duration", "0")
    h264 = await publish(node.url, "early", "h264", audio=False)
    vp8 = await publish(node.url, "late", "vp8", audio=False)
    player = None
    try:
        deadline = time.monotonic() + 5
        while (await get(http, f"{node.url}/hls/early/stats.json"))[0] != 200:
            assert time.monotonic() < deadline, "H264 stream not packaged by itself"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        assert (await get(http, f"{node.url}/hls/late/stats.json"))[0] == 404
        pl, text, _ = await playlist_with(http, f"{node.url}/hls/early/index.m3u8",
                                          lambda p: len(p.segments) >= 2)
        assert "#EXT-X-PART" not in text and "#EXT-X-VERSION:3" in text
        assert "PRELOAD-HINT" not in text and "SERVER-CONTROL" not in text
        player = await HlsPlayer(node.url, "early").start()
        assert player.mode == "hls"
        await player.wait_frames(40, 10)
        assert counters_advance(player.counters, minimum=20)
    finally:
        if player:
            await player.stop()
        await vp8.stop()
        await h264.stop()


@pytest.mark.parametrize("settings", [
    {"hls": "sometimes"}, {"hls_transcode": "always"}, {"hls_segment_duration": 0.1},
    {"hls_part_duration": 2.0}, {"hls_part_duration": 0.05}, {"hls_window": 1},
    {"hls_idle_timeout": 0}, {"hls_end_grace": -1}, {"hls_x264_preset": "placebo"},
    {"hls_window": 3.5},
])
def test_bad_hls_settings_are_refused(settings):
    from unbroken.node.config import NodeConfig

    with pytest.raises(ValueError):
        NodeConfig.load(**settings)
    assert NodeConfig.load(hls="always", hls_part_duration=0, hls_window=3).hls == "always"
