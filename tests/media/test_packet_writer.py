"""PacketWriter: patched header, real SRTP, real UDP socket; the receiver can unprotect it."""

import asyncio
import socket

from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from unbroken.media.rtc_internals import PacketWriter

KEY = bytes(range(30))


async def test_writer_patches_protects_and_sends():
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
    try:
        tx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        rx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
        writer = PacketWriter.on_socket(tx, transport, sink.getsockname())
        template = RtpPacket(payload_type=96, marker=1, payload=b"frame" * 100).serialize()
        for seq in (100, 101):
            assert writer.write(template, seq, 9000 + seq, 0xABCDEF)
        assert writer.write_plain(RtpPacket(payload_type=97, sequence_number=7, ssrc=0x1234,
                                            payload=b"\x00\x65rtx").serialize())
        received = [RtpPacket.parse(rx.unprotect(sink.recv(2048))) for _ in range(3)]
        assert [(p.sequence_number, p.timestamp, p.ssrc) for p in received[:2]] == [
            (100, 9100, 0xABCDEF), (101, 9101, 0xABCDEF)]
        assert received[0].payload == b"frame" * 100 and received[0].marker == 1
        assert (received[2].payload_type, received[2].ssrc) == (97, 0x1234)
        assert writer.packets == 3 and writer.dropped == 0
        assert not writer.write(bytes(PacketWriter.MAX_PLAINTEXT + 1), 1, 1, 1)
    finally:
        transport.close()
        sink.close()
