"""The native forwarding path: built here, byte-identical to the Python path, and the
Python path is what a process gets with UNBROKEN_NATIVE=0."""

import asyncio
import os
import socket
import subprocess
import sys

import pytest
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from unbroken.media import fastpath
from unbroken.media.rtc_internals import NativePacketWriter, PacketWriter

KEY = bytes(range(30))
GCM_KEY = bytes(range(28))


# the native path, loaded here whatever the process's own choice (it is opt-in)
NATIVE, NATIVE_REASON = fastpath.load_native()


def test_the_native_extension_is_built():
    """CI builds it (gcc and CPython's headers): a silent fallback would fail here."""
    from unbroken.media import _fastpath  # noqa: F401

    assert NATIVE is not None, NATIVE_REASON


@pytest.mark.parametrize("value, path", [(None, "python"), ("0", "python"), ("1", "native")])
def test_unbroken_native_selects_the_path(value, path):
    """Python by default and with UNBROKEN_NATIVE=0; native with UNBROKEN_NATIVE=1."""
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
