"""A node's admin API, what the stream manager (or an operator) may ask of a node with
the cluster's node token: drain and exit.

`POST /api/v1/drain` (`Authorization: Bearer NODE_TOKEN`, optional JSON body
`{"timeout_s": S}`) does what SIGTERM does — the node takes no new sessions, tells
every client where to go (make-before-break), waits until they left or `timeout_s`
(default: its own `--drain-timeout`) ran out, closes what is left and exits — and
answers 202 at once with `{"status": "draining", "node_id", "timeout_s"}` (the seconds
left). A second request may shorten the deadline, never lengthen it. A node without a
node token (not in a cluster) answers 403: drain it with SIGTERM.

Any manager holding the node token can so drain any node, whoever started it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DRAIN_PATH", "MAX_DRAIN_TIMEOUT_S", "drain_request", "parse_drain_request"]

DRAIN_PATH = "/api/v1/drain"
MAX_DRAIN_TIMEOUT_S = 3600.0


def drain_request(timeout_s: float | None = None) -> dict[str, Any]:
    """The request body: drain for at most `timeout_s` (None: the node's own timeout)."""
    return {} if timeout_s is None else {"timeout_s": round(max(0.0, timeout_s), 3)}


def parse_drain_request(data: Any) -> float | None:
    """The timeout a request body asks for (None: the node's own); ValueError if malformed."""
    if data is None or data == {}:
        return None
    if not isinstance(data, dict) or set(data) - {"timeout_s"}:
        raise ValueError('the body must be {"timeout_s": seconds}')
    value = data.get("timeout_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("timeout_s must be a number")
    if not 0 <= value <= MAX_DRAIN_TIMEOUT_S:
        raise ValueError(f"timeout_s must be between 0 and {MAX_DRAIN_TIMEOUT_S:g}")
    return float(value)
