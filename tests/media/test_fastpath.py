"""The native forwarding path: built here, byte-identical to the Python path, and the
Python path is what a process gets with UNBROKEN_NATIVE=0."""

import asyncio
import os
import socket
import subprocess
import sys

import types

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_RTPFB_NACK, HeaderExtensionsMap, RtcpRtpfbPacket, RtpPacket
from pylibsrtp import Policy, Session

from unbroken.media import fastpath
from unbroken.media.downtrack import DownTrack
from unbroken.media.packet import ForwardPacket, OutputProfile
from unbroken.media.rtc_internals import NativePacketWriter, PacketWriter
from unbroken.media.stream import Source, Stream

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
KEY = bytes(range(30))
GCM_KEY = bytes(range(28))


# the native path, loaded here whatever the process's own choice (UNBROKEN_NATIVE)
NATIVE, NATIVE_REASON = fastpath.load_native()


def test_the_native_extension_is_built():
    """CI builds it (gcc and CPython's headers): a silent fallback would fail here."""
    from unbroken.media import _fastpath  # noqa: F401

    assert NATIVE is not None, NATIVE_REASON


@pytest.mark.parametrize("value, path", [(None, "native"), ("0", "python"), ("1", "native")])
def test_unbroken_native_selects_the_path(value, path):
    """Native by default and with UNBROKEN_NATIVE=1; Python with UNBROKEN_NATIVE=0."""
    code = ("from unbroken.media import fastpath; "
            "w = fastpath.make_writer.__globals__['BATCH']; "
            "print(fastpath.PATH.name, w is None)")
    env = {k: v for k, v in os.environ.items() if k != fastpath.ENV}
    if value is not None:
        env[fastpath.ENV] = value
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.split() == [path, str(path == "python")]


def sessions(count: int, policy_args: dict) -> list[Session]:
    return [Session(Policy(ssrc_type=Policy.SSRC_ANY_OUTBOUND, **policy_args))
            for _ in range(count)]


def receive_all(sink: socket.socket, count: int) -> list[bytes]:
    return [sink.recv(4096) for _ in range(count)]


def template(size: int, marker: int = 1) -> bytes:
    packet = RtpPacket(payload_type=96, marker=marker, payload=bytes(range(256)) * (size // 256)
                       + b"\x07" * (size % 256))
    packet.extensions.mid = "0"
    return packet.serialize()


POLICIES = [pytest.param({"key": KEY}, id="aes128-cm-sha1-80"),
            pytest.param({"key": GCM_KEY, "srtp_profile": Policy.SRTP_PROFILE_AEAD_AES_128_GCM},
                         id="aead-aes128-gcm")]


@pytest.mark.parametrize("policy", POLICIES)
async def test_native_and_python_paths_send_identical_bytes(policy):
    """Three subscribers, each with its own key state: the same packets through the Python
    writers and through the native batch (plus single sends and RTX-style plain sends)
    give byte-identical datagrams, and the receiver unprotects them."""
    loop = asyncio.get_running_loop()
    sinks = []
    for _ in range(2):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(2)
        sinks.append(sink)
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
    batch = fastpath.SendBatch(NATIVE)
    try:
        python = [PacketWriter.on_socket(s, transport, sinks[0].getsockname())
                  for s in sessions(3, policy)]
        native = [NativePacketWriter.on_socket(s, transport, sinks[1].getsockname(), batch)
                  for s in sessions(3, policy)]
        sent = 0
        for i, size in enumerate((100, 1100, 12, 1200)):
            data = template(size, marker=i % 2)
            rows = [((65534 + i + k) & 0xFFFF, 3000 * i + 7 * k, 0x1000 + k) for k in range(3)]
            for writer, (seq, ts, ssrc) in zip(python, rows):
                assert writer.write(data, seq, ts, ssrc)
            batch.begin()
            for writer, (seq, ts, ssrc) in zip(native, rows):
                assert writer.write(data, seq, ts, ssrc)
            batch.flush()
            sent += 3
        plain = RtpPacket(payload_type=97, sequence_number=9, ssrc=0x2000,
                          payload=b"\x00\x01rtx").serialize()
        for writers in (python, native):
            assert writers[0].write_plain(plain)  # outside a batch: sent at once
            assert writers[1].write(template(300), 70, 80, 0x1001)
        sent += 2
        got_python = receive_all(sinks[0], sent)
        got_native = receive_all(sinks[1], sent)
        assert got_native == got_python
        rx = Session(Policy(ssrc_type=Policy.SSRC_ANY_INBOUND, **policy))
        first = RtpPacket.parse(rx.unprotect(got_native[0]))
        assert (first.sequence_number, first.timestamp, first.ssrc) == (65534, 0, 0x1000)
        assert all(w.packets == p.packets and w.dropped == 0 for w, p in zip(native, python))
    finally:
        transport.close()
        for sink in sinks:
            sink.close()


async def test_native_failures_are_counted_per_subscriber():
    """A packet libsrtp refuses (a repeated sequence number) is not sent and counts as
    dropped for its subscriber only; oversize packets are refused up front."""
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
    batch = fastpath.SendBatch(NATIVE)
    try:
        a, b = [NativePacketWriter.on_socket(s, transport, sink.getsockname(), batch)
                for s in sessions(2, {"key": KEY})]
        data = template(200)
        assert a.write(data, 5, 0, 1)
        batch.begin()
        a.write(data, 5, 0, 1)  # a replay for a's context
        b.write(data, 5, 0, 2)
        batch.flush()
        assert (a.packets, a.dropped, a.unsent) == (1, 1, 1)
        assert (b.packets, b.dropped, b.unsent) == (1, 0, 0)
        assert not a.write(bytes(PacketWriter.MAX_PLAINTEXT + 1), 6, 0, 1)
        with pytest.raises(ValueError):
            batch._sender.send(b"short", [])
        with pytest.raises(TypeError):
            batch._sender.send(data, [("not a target", 1, 2, 3)])
        assert not batch.collecting
    finally:
        transport.close()
        sink.close()


def vp8_packet(seq: int, ts: int, ssrc: int, keyframe: bool, arrival: float) -> ForwardPacket:
    """A VP8 packet: a keyframe's first packet, or a later one of a frame."""
    head = b"\x90\x80\x01\x00" if keyframe else b"\x80\x80\x01"
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, ssrc=ssrc,
                       marker=seq % 3 == 0, payload=head + bytes([seq & 0xFF]) * 900)
    return ForwardPacket(packet, keyframe, arrival)


def fake_source(name: str) -> tuple[Source, types.SimpleNamespace]:
    receiver = types.SimpleNamespace(on_packet=None, on_codec_change=None,
                                     on_discontinuity=None, codec=VP8, last_packet_at=None,
                                     request_keyframe=lambda: None)
    return Source(name, {"video": receiver}), receiver


# (seq, ts, ssrc, keyframe): a keyframe, in-order packets, one sent twice (libsrtp refuses
# the replay: a drop on both paths), one far too old, a wrap of the sequence numbers, then a new source that starts mid-frame (dropped:
# a keyframe is asked for) and continues at its keyframe
FEED = ([(65530, 1000, 1, True)] + [(65530 + i, 1000 + 3000 * (i // 3), 1, False)
                                    for i in range(1, 12)]
        + [(65535, 1000, 1, False), (60000, 1000, 1, False), (6, 13000, 1, False)]
        + [(500, 77, 2, False), (501, 3077, 2, True)]
        + [(501 + i, 3077 + 3000 * (i // 2), 2, False) for i in range(1, 9)])


@pytest.mark.parametrize("policy", POLICIES)
async def test_native_spread_and_python_downtracks_send_identical_bytes(policy, monkeypatch):
    """Whole streams, one on each path: three subscriber tracks each, the same packets in
    (reordered, too old, wrapping, a source change). The native stream's tracks arm
    their slots and Sender.spread sends (and rewrites) for them; every datagram is
    byte-identical to the Python path's, and so are the counts, the sender report
    values and a NACK's retransmission afterwards."""
    loop = asyncio.get_running_loop()
    sinks = []
    for _ in range(2):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(2)
        sinks.append(sink)
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
    batch = fastpath.SendBatch(NATIVE)
    profile = OutputProfile.shared(97, "1", HeaderExtensionsMap(), ())
    streams, tracks, starts = [], [], []
    try:
        for path, sink in (("python", sinks[0]), ("native", sinks[1])):
            monkeypatch.setattr(fastpath, "BATCH", batch if path == "native" else None)
            stream = Stream(path)
            own = []
            for k, session in enumerate(sessions(3, policy)):
                if path == "python":
                    writer = PacketWriter.on_socket(session, transport, sink.getsockname())
                else:
                    writer = NativePacketWriter.on_socket(session, transport,
                                                          sink.getsockname(), batch)
                track = DownTrack("video", "video/vp8", profile, 0x3000 + k, 90000, writer,
                                  lambda: None, rtx_payload_type=98, rtx_ssrc=0x4000 + k,
                                  history=stream.history("video"))
                if path == "python":
                    starts.append((track.munger.last_out_seq, track.munger.last_out_ts))
                else:  # the same random start as the Python path's twin
                    track.munger.last_out_seq, track.munger.last_out_ts = starts[k]
                stream.add_sink(track)
                own.append(track)
            streams.append(stream)
            tracks.append(own)
            first, first_receiver = fake_source("a")
            stream.attach(first)
            second, second_receiver = fake_source("b")
            for seq, ts, ssrc, keyframe in FEED:
                if ssrc == 2 and stream.source is first:
                    stream.attach(second)
                receiver = first_receiver if ssrc == 1 else second_receiver
                receiver.on_packet(vp8_packet(seq, ts, ssrc, keyframe, 10.0 + seq / 1000))
        python, native = tracks
        assert all(t.slot is not None and t.slot.armed and t.slot.packets for t in native)
        assert all(t.slot is None for t in python)
        for a, b in zip(python, native):
            assert (a.sent, a.octets, a.dropped) == (b.sent, b.octets, b.dropped)
            assert a.sender_report_values((5 << 32, 0)) == b.sender_report_values((5 << 32, 0))
            nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=a.ssrc)
            nack.lost = [(a.munger.last_out_seq - 2) & 0xFFFF]
            await a.handle_rtcp(nack)
            await b.handle_rtcp(nack)
            assert a.retransmits == b.retransmits == 1
        count = sum(t.sent for t in python) + 3
        got_python = receive_all(sinks[0], count)
        got_native = receive_all(sinks[1], count)
        assert got_native == got_python
        rx = Session(Policy(ssrc_type=Policy.SSRC_ANY_INBOUND, **policy))
        seqs = [RtpPacket.parse(rx.unprotect(d)).sequence_number for d in got_native
                if RtpPacket.parse(d).ssrc == 0x3000]
        gaps = {(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])}
        assert gaps <= {1, 0xFFFF}  # continuous through the wrap and the source change
        for track in native:
            track.close()
            assert track.slot is None and track.sent == python[0].sent
    finally:
        transport.close()
        for sink in sinks:
            sink.close()
