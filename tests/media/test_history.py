from aiortc.rtp import RtpPacket

from unbroken.media.history import PacketHistory
from unbroken.media.packet import ForwardPacket


def test_history_returns_what_was_sent_under_a_seq():
    h = PacketHistory(size=8)
    fps = [ForwardPacket(RtpPacket(sequence_number=i, payload=bytes([i])), False, 0.0)
           for i in range(20)]
    for i, fp in enumerate(fps):
        h.add(i, i * 10, fp)
    assert h.get(19) == (fps[19], 190)
    assert h.get(12) == (fps[12], 120)
    assert h.get(11) is None  # overwritten
    assert h.get(100) is None
