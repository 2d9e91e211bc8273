"""The forwarding data plane alone: CPU per forwarded packet, in one process.

A real Stream with N real DownTracks (munging, the stream's NACK history) and real
writers (libsrtp protect, UDP send from one socket, as the node's shared ICE socket, to a
sink socket on loopback) is fed packets shaped like a 1 Mbit/s 30 fps VP8 stream;
measured on the native path (unbroken.media._fastpath: one Sender.spread call per packet
for all armed subscribers, sendmmsg) and on the pure-Python path (each DownTrack's
PacketWriter). Baseline in the same run: the obvious way to
send the same packets with aiortc's own pieces (build an RtpPacket and serialize it,
pylibsrtp's Session.protect, asyncio's DatagramTransport.sendto) per subscriber.

    python bench/forwarding_path.py [--quick]

The node benchmark (forwarding.py) measures a whole node process instead: this one
shows what the data plane itself costs, without sessions' RTCP, ICE consent and the
event loop around it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
import types

from _harness import machine, table, write_results
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from unbroken.media import fastpath
from unbroken.media.downtrack import DownTrack
from unbroken.media.packet import ForwardPacket, OutputProfile
from unbroken.media.rtc_internals import NativePacketWriter, PacketWriter
from unbroken.media.stream import Source, Stream

PAYLOAD = 1100  # bytes: ~110 packets/s at 1 Mbit/s
PACKETS = 3000
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def extensions_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(types.SimpleNamespace(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri=MID),
        RTCRtpHeaderExtensionParameters(id=3, uri=ABS)]))
    return m


def source_packets() -> list[RtpPacket]:
    packets = []
    for i in range(PACKETS):
        p = RtpPacket(payload_type=96, marker=int(i % 4 == 3), sequence_number=i % 65536,
                      timestamp=(i // 4) * 3000, ssrc=5,
                      payload=(b"\x10\x00\x9d\x01\x2a" if i == 0 else b"\x00") + bytes(PAYLOAD))
        p.extensions.abs_send_time = i
        packets.append(p)
    return packets


def drain(sink: socket.socket) -> None:
    try:
        while True:
            sink.recv(4096)
    except BlockingIOError:
        pass


VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


async def measure_node_path(n: int, sink, transport, packets, native: bool) -> float:
    addr = sink.getsockname()
    ext = extensions_map()
    profile = OutputProfile.shared(96, "0", ext, ((1, MID), (3, ABS)))
    batch = fastpath.BATCH if native else None
    stream = Stream("bench")
    tracks = []
    for i in range(n):
        session = Session(Policy(key=bytes(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        writer = (NativePacketWriter.on_socket(session, transport, addr, batch) if native
                  else PacketWriter.on_socket(session, transport, addr))
        track = DownTrack("video", "video/vp8", profile, 1000 + i, 90000, writer, lambda: None,
                          history=stream.history("video"))
        stream.add_sink(track)
        tracks.append(track)
    receiver = types.SimpleNamespace(on_packet=None, on_codec_change=None,
                                     on_discontinuity=None, codec=VP8, last_packet_at=None,
                                     request_keyframe=lambda: None)
    native_batch, fastpath.BATCH = fastpath.BATCH, batch  # the stream takes its path here
    try:
        stream.attach(Source("publisher", {"video": receiver}))
    finally:
        fastpath.BATCH = native_batch
    forwarded = [ForwardPacket(p, i == 0, 0.0) for i, p in enumerate(packets)]
    spent = 0.0
    for fp in forwarded:
        start = time.process_time()
        receiver.on_packet(fp)
        spent += time.process_time() - start
        drain(sink)  # the receiving end's work, not timed
    assert all(t.sent == PACKETS for t in tracks), "packets were dropped"
    assert all(t.slot is not None for t in tracks) == native
    return spent / (PACKETS * n) * 1e6


async def measure_baseline(n: int, sink, transport, packets) -> float:
    addr = sink.getsockname()
    ext = extensions_map()
    sessions = [Session(Policy(key=bytes(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
                for _ in range(n)]
    spent = 0.0
    for p in packets:
        start = time.process_time()
        for i, session in enumerate(sessions):
            out = RtpPacket(payload_type=96, marker=p.marker, sequence_number=p.sequence_number,
                            timestamp=p.timestamp, ssrc=1000 + i, payload=p.payload)
            out.extensions = HeaderExtensions()
            out.extensions.mid = "0"
            out.extensions.abs_send_time = p.extensions.abs_send_time
            transport.sendto(session.protect(out.serialize(ext)), addr)
        spent += time.process_time() - start
        drain(sink)
    return spent / (PACKETS * n) * 1e6


def measure_send_floor(n: int, sink, packets) -> float:
    """What the kernel alone charges the sender: the same-sized datagrams, ready-made, sent
    with one plain `sendto` each (loopback also runs the receiving side in the sender's
    system call)."""
    addr = sink.getsockname()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    datagram = bytes(12 + 12 + len(packets[1].payload) + 10)  # header, extensions, payload, tag
    spent = 0.0
    for _ in packets:
        start = time.process_time()
        for _ in range(n):
            sender.sendto(datagram, addr)
        spent += time.process_time() - start
        drain(sink)
    sender.close()
    return spent / (PACKETS * n) * 1e6


async def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 16 only")
    args = parser.parse_args()
    steps = [1, 16] if args.quick else [1, 4, 16, 64]
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
    packets = source_packets()
    rows = []
    for n in steps:
        native = (await measure_node_path(n, sink, transport, packets, True)
                  if fastpath.BATCH is not None else None)
        python = await measure_node_path(n, sink, transport, packets, False)
        base = await measure_baseline(n, sink, transport, packets)
        floor = measure_send_floor(n, sink, packets)
        node = native if native is not None else python
        rows.append({"subscribers": n, "node_us_per_packet": round(node, 2),
                     "native_us_per_packet": round(native, 2) if native else None,
                     "python_us_per_packet": round(python, 2),
                     "baseline_us_per_packet": round(base, 2),
                     "send_floor_us_per_packet": round(floor, 2),
                     "speedup": round(base / node, 2)})
    transport.close()
    sink.close()
    # what one more subscriber costs per packet: the slope between the first and last step
    first, last = rows[0], rows[-1]
    marginal = ((last["node_us_per_packet"] * last["subscribers"]
                 - first["node_us_per_packet"] * first["subscribers"])
                / (last["subscribers"] - first["subscribers"]))
    return {"benchmark": "forwarding_path", "quick": args.quick, "machine": machine(),
            "forwarding_path": fastpath.PATH.name,
            "config": {"payload_bytes": PAYLOAD, "packets": PACKETS, "steps": steps},
            "target": {"us_per_packet": 10.0}, "rows": rows,
            "summary": {"marginal_us_per_packet": round(marginal, 2),
                        "meets_target": marginal <= 10.0}}


if __name__ == "__main__":
    results = asyncio.run(main())
    print(table([("subscribers", "N"), ("native_us_per_packet", "native µs/pkt"),
                 ("python_us_per_packet", "python µs/pkt"),
                 ("baseline_us_per_packet", "aiortc pieces µs/pkt"), ("speedup", "×"),
                 ("send_floor_us_per_packet", "sendto alone µs/pkt")],
                results["rows"]), file=sys.stderr)
    summary = results["summary"]
    print(f"marginal ({results['forwarding_path']} path): "
          f"{summary['marginal_us_per_packet']} µs per forwarded packet "
          f"(target ≤ 10: {summary['meets_target']})", file=sys.stderr)
    path = write_results("forwarding_path", results, results["quick"])
    print(f"written to {path}", file=sys.stderr)
    print(json.dumps(results))
