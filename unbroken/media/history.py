"""Packets recently sent to one subscriber track, by outgoing sequence number,
so NACKs can be answered (the sequencer: outgoing seq → original packet)."""

from __future__ import annotations

from .packet import ForwardPacket

HISTORY_SIZE = 1024


class PacketHistory:
    __slots__ = ("_seqs", "_packets", "_timestamps")

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._seqs: list[int] = [-1] * size
        self._packets: list[ForwardPacket | None] = [None] * size
        self._timestamps: list[int] = [0] * size

    def add(self, seq: int, ts: int, packet: ForwardPacket) -> None:
        i = seq % len(self._seqs)
        self._seqs[i] = seq
        self._packets[i] = packet
        self._timestamps[i] = ts

    def get(self, seq: int) -> tuple[ForwardPacket, int] | None:
        """The packet sent as `seq` and its outgoing timestamp, if still held."""
        i = seq % len(self._seqs)
        if self._seqs[i] != seq:
            return None
        return self._packets[i], self._timestamps[i]
