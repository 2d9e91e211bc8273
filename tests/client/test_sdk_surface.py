"""SDK sources, sinks and the publish/play command line, against a real node."""

import asyncio
import fractions
import json
import signal
import subprocess
import sys

import av
import numpy as np
import pytest

from unbroken.client.framecode import draw_counter
from unbroken.client.publisher import Publisher
from unbroken.client.sources import media_file
from unbroken.client.subscriber import Subscriber

pytestmark = pytest.mark.timeout(60)


def write_clip(path: str, frames: int = 60) -> None:
    """A 2 s VP8 + Opus WebM clip with the frame counter drawn in."""
    with av.open(path, "w") as out:
        video = out.add_stream("libvpx", rate=30)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        audio = out.add_stream("libopus", rate=48000)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((360, 640, 3), 90, np.uint8),
                                               format="rgb24").reformat(format="yuv420p")
            draw_counter(frame, i)
            frame.pts = i
            frame.time_base = fractions.Fraction(1, 30)
            for packet in video.encode(frame):
                out.mux(packet)
        samples = np.zeros((1, 960), np.int16)
        for i in range(frames * 48000 // 30 // 960):
            chunk = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            chunk.sample_rate = 48000
            chunk.pts = i * 960
            for packet in audio.encode(chunk):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)


async def test_a_looped_media_file_is_published_and_frames_reach_a_callback(node, tmp_path):
    clip = str(tmp_path / "clip.webm")
    write_clip(clip)
    arrays, counters = [], []

    def on_frame(frame, counter):
        arrays.append(frame.to_ndarray(format="rgb24").shape)
        counters.append(counter)

    pub = await Publisher(node.url, "file", source=media_file(clip), codec="vp8").start()
    sub = await Subscriber(node.url, "file", on_frame=on_frame).start()
    try:
        await sub.viewer.wait_frames(90, 15)  # more than the clip: it loops
    finally:
        await sub.stop()
        await pub.stop()
    assert arrays[-1] == (360, 640, 3)
    readable = [c for c in counters if c is not None]
    assert len(readable) > 60 and max(readable) <= 59
    assert any(b < a for a, b in zip(readable, readable[1:]))  # wrapped around: looped


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_cli_publish_and_play_report_json_and_stop_cleanly_on_ctrl_c(node):
    cmd = [sys.executable, "-m", "unbroken"]
    publish = subprocess.Popen(cmd + ["publish", node.url, "cli", "--codec", "vp8", "--json"],
                               stdout=subprocess.PIPE, text=True)
    play = subprocess.Popen(cmd + ["play", node.url, "cli", "--json", "--no-decode"],
                            stdout=subprocess.PIPE, text=True)
    try:
        for proc in (publish, play):
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
            assert json.loads(line)["kind"] in ("session", "stream", "stream_event")
        await asyncio.sleep(1.5)
        for proc in (play, publish):
            proc.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(asyncio.to_thread(proc.communicate), 15)
            assert proc.returncode == 0
            events = json_lines(out)
            assert events[-1]["kind"] == "session" and events[-1]["state"] == "DISCONNECTED"
            assert not any(e["kind"] in ("restoring", "gave_up") for e in events)
            assert all("t" in e for e in events)
    finally:
        for proc in (publish, play):
            if proc.poll() is None:
                proc.kill()


async def test_cli_refuses_bad_knobs():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "unbroken", "play", "http://127.0.0.1:9", "x", "--max-tries", "0",
        stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2 and b"max_tries" in err
