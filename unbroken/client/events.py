"""What SDK clients report: session and stream states (seed names), restores, give-ups."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from unbroken.protocol.states import SessionState, StreamState

# session and stream states (seed 004), as the protocol defines them
ESTABLISHED, DISCONNECTED, FAILED = SessionState
PUBLISHING, UNPUBLISHED, PLAYING, STOPPED = (StreamState.PUBLISHING, StreamState.UNPUBLISHED,
                                             StreamState.PLAYING, StreamState.STOPPED)


@dataclass
class RestoreReport:
    """One restore: what broke, how long finding it took, how long coming back took,
    and the media gap seen end to end (last media before the fault → first after).
    ``node``: the node id of the new session, when the URL source knows it (a stream
    manager's route names it)."""

    fault: str
    detect_ms: float
    restore_ms: float
    gap_ms: float
    tries: int
    url: str
    codec: str | None = None
    node: str | None = None


@dataclass
class ClientEvent:
    """`kind`: "session" | "stream" | "restoring" | "restored" | "gave_up" | "transport"."""

    kind: str
    state: str | None = None
    reason: str | None = None
    url: str | None = None
    report: RestoreReport | None = None
    t: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if v is not None and k != "report"}
        if self.report is not None:
            data.update(asdict(self.report))
        return data
