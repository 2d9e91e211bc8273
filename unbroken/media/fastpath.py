"""Which forwarding path this process uses: the native one or the pure-Python one.

The native path is the C extension `unbroken.media._fastpath` (built by `pip install`
when a C compiler and CPython's headers are there; optional). For one forwarded packet
one call (Sender.spread) rewrites sequence number and timestamp, SRTP-protects and sends
the copy of every subscriber track that is connected and anchored on the packet's
source (its "armed" Slot), with sendmmsg(2); tracks in any other state go through their
Python `write`, which arms them again. It calls the srtp_protect of the libsrtp inside
pylibsrtp (the very library and sessions aiortc uses), through the function pointer
pylibsrtp's binding exports: no second libsrtp is linked.

It is the default. UNBROKEN_NATIVE=0 in the environment, or a missing extension, gives
the Python path: each subscriber's PacketWriter protects and sends in Python
(rtc_internals.PacketWriter), the same bytes on the wire for more CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from . import rtc_internals
from .rtc_internals import NativePacketWriter, PacketWriter

__all__ = ["BATCH", "FanOut", "ForwardingPath", "PATH", "SendBatch", "load_native",
           "make_writer"]

log = logging.getLogger("unbroken.media.fastpath")

ENV = "UNBROKEN_NATIVE"


@dataclass(frozen=True)
class ForwardingPath:
    """Which path forwards packets here (`name`: "native" or "python") and why."""

    name: str
    reason: str

    @property
    def native(self) -> bool:
        return self.name == "native"


def load_native() -> tuple[Any, str]:
    """The native extension, ready to protect with pylibsrtp's libsrtp, or None; and why."""
    try:
        from . import _fastpath
    except ImportError as exc:
        return None, f"the native extension is not built ({exc})"
    try:
        rtc_internals.check_hooks()
        _fastpath.set_protect(rtc_internals.srtp_protect_address())
    except Exception as exc:  # a pylibsrtp whose binding does not fit: stay in Python
        return None, f"pylibsrtp's srtp_protect does not fit: {exc}"
    return _fastpath, "unbroken.media._fastpath: SRTP with pylibsrtp's libsrtp, sendmmsg"


def _load() -> tuple[Any, ForwardingPath]:
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, ForwardingPath("python", f"{ENV}=0 in the environment")
    native, reason = load_native()
    return native, ForwardingPath("native" if native is not None else "python", reason)


class SendBatch:
    """The packets of one forwarded packet's fan-out, sent together by the native path.

    The stream opens it (`begin`) before handing a packet to its sinks and sends it
    (`flush`) after: each NativePacketWriter queues its subscriber's copy meanwhile.
    Entries are grouped by template (one per output profile); each group is one native
    call that protects every copy and sends them with one sendmmsg per socket.
    Outside a fan-out (retransmissions) `send_now` sends one packet at once."""

    __slots__ = ("_native", "_sender", "_groups", "_template", "_entries", "_writers",
                 "collecting")

    def __init__(self, native: Any) -> None:
        self._native = native
        self._sender = native.Sender()
        self._groups: list[tuple[bytes, list, list]] = []
        self._template: bytes | None = None
        self._entries: list = []
        self._writers: list = []
        self.collecting = False

    def target(self, srtp: int, fd: int, host: str, port: int, owner: object) -> Any:
        """A native Target: the srtp_t at `srtp` (kept alive by `owner`), socket `fd`,
        destination (host, port)."""
        return self._native.Target(srtp, fd, host, port, owner)

    def slot(self, srtp: int, fd: int, host: str, port: int, owner: object, ssrc: int,
             shared: bool) -> Any:
        """A native Slot (see FanOut): the srtp_t at `srtp` (kept alive by `owner`), socket
        `fd` (a duplicate of its own unless the socket is `shared`, which outlives every
        slot), destination (host, port), outgoing SSRC `ssrc`."""
        return self._native.Slot(srtp, fd, host, port, owner, ssrc, dup=not shared)

    def spread(self, template: bytes, slots: tuple, packet, now: float) -> list[int]:
        """Send `packet` (a ForwardPacket serialized as `template`) through every armed
        slot anchored on its source; the indices of the slots Python must handle."""
        return self._sender.spread(template, slots, packet.ssrc, packet.sequence_number,
                                   packet.timestamp, len(packet.payload), now)

    def begin(self) -> None:
        self.collecting = True

    def add(self, template: bytes, entry: tuple, writer: NativePacketWriter) -> None:
        if template is not self._template:
            self._template = template
            self._entries = []
            self._writers = []
            self._groups.append((template, self._entries, self._writers))
        self._entries.append(entry)
        self._writers.append(writer)

    def flush(self) -> None:
        """Send everything queued since `begin`."""
        self.collecting = False
        groups = self._groups
        if not groups:
            return
        self._groups = []
        self._template = None
        self._entries = self._writers = []
        for template, entries, writers in groups:
            try:
                failed = self._sender.send(template, entries)
            except Exception:  # a bad entry: this group is lost, the others still go
                log.exception("the native path could not send a batch")
                failed = [(index, 0) for index in range(len(writers))]
            for index, _status in failed:
                writers[index].not_sent(queued=True)

    def send_now(self, data: bytes, entry: tuple, writer: NativePacketWriter,
                 patch: bool) -> bool:
        if self._sender.send(data, (entry,), patch):
            writer.not_sent(queued=False)
            return False
        writer.packets += 1
        return True


class FanOut:
    """One stream kind's sinks as the native path forwards a packet to them: per output
    profile the sinks that have a Slot (one Sender.spread for all of them, which hands
    back those not armed for the packet's source), and the sinks without one (each
    through its `write`). Built from a snapshot of the sinks; rebuilt when a sink gains
    a slot or the sinks change."""

    __slots__ = ("groups", "others")

    def __init__(self, sinks) -> None:
        by_profile: dict[Any, tuple[list, list]] = {}
        others = []
        for sink in sinks:
            slot = getattr(sink, "slot", None)
            if slot is None:
                others.append(sink)
            else:
                slots, owners = by_profile.setdefault(sink.profile, ([], []))
                slots.append(slot)
                owners.append(sink)
        self.groups = tuple((profile, tuple(slots), tuple(owners))
                            for profile, (slots, owners) in by_profile.items())
        self.others = tuple(others)


_native, PATH = _load()
# the process's batch (one event loop thread forwards): None on the Python path
BATCH: SendBatch | None = SendBatch(_native) if _native is not None else None


def make_writer(dtls) -> PacketWriter:
    """The writer for one subscriber's DTLS transport on this process's path."""
    if BATCH is not None:
        return NativePacketWriter(dtls, BATCH)
    return PacketWriter(dtls)
