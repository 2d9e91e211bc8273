"""Baseline for the benchmarks: a minimal WHIP/WHEP server on aiortc's stock MediaRelay.

    python bench/relay_baseline.py --host 127.0.0.1 --port PORT [--bitrate BPS]

This is what a plain aiortc server does: the publisher's tracks are decoded once,
``MediaRelay.subscribe(track)`` hands the frames to each viewer, and each viewer's
sender encodes them again (one encoder per viewer). Viewers get the publisher's
video codec. Same paths as the node for what the benchmarks use: ``POST
/whip/{stream}``, ``POST /whep/{stream}``, ``DELETE`` on the ``Location``,
``GET /api/v1/sessions`` (packets/bytes sent per play session), ``GET /healthz``.
No auth, no trickle, no error bodies: a benchmark fixture, not a server.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.sdp import SessionDescription

from _agents import pin_encoder_bitrate


class Published:
    """One publisher's session: its tracks, their video codec and the relay."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.pc = pc
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.video_mime: str | None = None
        self.relay = MediaRelay()
        self.drains: list[asyncio.Task] = []

    def keep_draining(self, track: MediaStreamTrack) -> None:
        """Read the track even without viewers, so no decoded frames pile up and a new
        viewer starts on a current frame."""
        proxy = self.relay.subscribe(track, buffered=False)

        async def drain() -> None:
            while True:
                await proxy.recv()

        self.drains.append(asyncio.ensure_future(drain()))

    async def close(self) -> None:
        for task in self.drains:
            task.cancel()
        await self.pc.close()


class Baseline:
    def __init__(self) -> None:
        self.streams: dict[str, Published] = {}
        self.sessions: dict[str, tuple[str, RTCPeerConnection]] = {}  # id -> (kind, pc)

    async def whip(self, request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        offer = await request.text()
        pc = new_peer_connection()
        published = Published(pc)
        pc.on("track", lambda track: published.tracks.__setitem__(track.kind, track))
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        published.video_mime = answered_video_mime(pc.localDescription.sdp)
        for track in published.tracks.values():
            published.keep_draining(track)
        if name in self.streams:
            await self.streams.pop(name).close()
        self.streams[name] = published
        return self._created("whip", pc, name)

    async def whep(self, request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        published = self.streams.get(name)
        if published is None or not published.tracks:
            return web.Response(status=409, headers={"Retry-After": "1"}, text="not live")
        offer = await request.text()
        pc = new_peer_connection()
        offered = {m.kind for m in SessionDescription.parse(offer).media}
        for kind, track in published.tracks.items():
            if kind not in offered:
                continue
            transceiver = pc.addTransceiver(published.relay.subscribe(track),
                                            direction="sendonly")
            if kind == "video" and published.video_mime:
                transceiver.setCodecPreferences(codec_preferences(published.video_mime))
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return self._created("whep", pc, name)

    def _created(self, kind: str, pc: RTCPeerConnection, stream: str) -> web.Response:
        session_id = uuid.uuid4().hex
        self.sessions[session_id] = (kind, pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._end(session_id)

        return web.Response(status=201, text=pc.localDescription.sdp,
                            content_type="application/sdp",
                            headers={"Location": f"/session/{session_id}"})

    async def delete(self, request: web.Request) -> web.Response:
        await self._end(request.match_info["id"])
        return web.Response(status=200)

    async def _end(self, session_id: str) -> None:
        entry = self.sessions.pop(session_id, None)
        if entry is None:
            return
        kind, pc = entry
        for sender in pc.getSenders():
            if sender.track is not None:
                sender.track.stop()  # unsubscribes from the relay
        for name, published in list(self.streams.items()):
            if published.pc is pc:
                del self.streams[name]
                await published.close()
        await pc.close()

    async def list_sessions(self, request: web.Request) -> web.Response:
        out = []
        for session_id, (kind, pc) in list(self.sessions.items()):
            entry = {"id": session_id, "kind": kind, "connection": pc.connectionState}
            if kind == "whep":
                entry["kind"] = "play"
                entry["tracks"] = {}
                for sender in pc.getSenders():
                    for stat in (await sender.getStats()).values():
                        if stat.type == "outbound-rtp":
                            entry["tracks"][stat.kind] = {"packets": stat.packetsSent,
                                                          "bytes": stat.bytesSent}
            out.append(entry)
        return web.json_response({"sessions": out})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions)})

    async def close(self, app: web.Application) -> None:
        for session_id in list(self.sessions):
            await self._end(session_id)


def new_peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN on loopback


def answered_video_mime(answer_sdp: str) -> str | None:
    for media in SessionDescription.parse(answer_sdp).media:
        if media.kind == "video" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType
    return None


def codec_preferences(mime: str):
    """aiortc's video codecs of type ``mime``, then RTX."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return ([c for c in codecs if c.mimeType.lower() == mime.lower()]
            + [c for c in codecs if c.mimeType.lower() == "video/rtx"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--bitrate", type=int, default=1_000_000,
                        help="pin the per-viewer encoders' bitrate (bit/s, VP8 and H264)")
    args = parser.parse_args()
    pin_encoder_bitrate("vp8", args.bitrate)
    pin_encoder_bitrate("h264", args.bitrate)
    baseline = Baseline()
    app = web.Application()
    app.router.add_post("/whip/{stream}", baseline.whip)
    app.router.add_post("/whep/{stream}", baseline.whep)
    app.router.add_delete("/session/{id}", baseline.delete)
    app.router.add_get("/api/v1/sessions", baseline.list_sessions)
    app.router.add_get("/healthz", baseline.healthz)
    app.on_shutdown.append(baseline.close)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
