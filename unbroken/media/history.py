"""Packets recently sent to one subscriber track, by outgoing sequence number,
so NACKs can be answered (the sequencer: outgoing seq → original packet)."""

from __future__ import annotations

from .packet import ForwardPacket

__all__ = ["PacketHistory"]

HISTORY_SIZE = 1024


class PacketHistory:
    """The packets one downtrack sent, by outgoing sequence number (a ring), for NACK → RTX."""

    __slots__ = ("_entries", "_mask")

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        if size & (size - 1):
            raise ValueError("history size must be a power of two")
        self._entries: list[tuple[int, ForwardPacket, int] | None] = [None] * size
        self._mask = size - 1

    def add(self, seq: int, ts: int, packet: ForwardPacket) -> None:
        self._entries[seq & self._mask] = (seq, packet, ts)

    def get(self, seq: int) -> tuple[ForwardPacket, int] | None:
        """The packet sent as `seq` and its outgoing timestamp, if still held."""
        entry = self._entries[seq & self._mask]
        if entry is None or entry[0] != seq:
            return None
        return entry[1], entry[2]
