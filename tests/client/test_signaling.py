"""Signaling turns what the session channel says into an attempt's events and faults."""

import time

import pytest

from unbroken.client.options import RestoreOptions
from unbroken.client.signaling import Signaling
from unbroken.protocol.faults import Fault


def signaling(kind: str = "session") -> tuple[Signaling, list, list]:
    events, faults = [], []
    s = Signaling(kind, "http://node", "cam", None, RestoreOptions(),
                  lambda e, d: events.append((e, d)), lambda f, t: faults.append((f, t)))
    return s, events, faults


def test_only_known_signaling_kinds():
    with pytest.raises(ValueError):
        signaling("carrier-pigeon")


def test_stream_events_and_drain_notices_are_events():
    s, events, faults = signaling()
    inactive = {"type": "stream_event", "event": "inactive", "id": "play-1"}
    draining = {"type": "node_draining", "code": "draining"}
    s.on_channel_message(inactive)
    s.on_channel_message(draining)
    s.on_channel_message({"type": "ping", "seq": 1})
    assert events == [("inactive", inactive), ("reconnect", draining)] and not faults


def test_a_failed_stream_is_a_fault_under_its_code():
    s, events, faults = signaling()
    before = time.monotonic()
    s.on_channel_message({"type": "stream_state", "state": "FAILED", "code": "codec_changed"})
    s.on_channel_message({"type": "stream_state", "state": "FAILED"})
    s.on_channel_message({"type": "stream_state", "state": "PLAYING"})
    assert [name for name, _ in faults] == ["codec_changed", Fault.STREAM_FAILED]
    assert all(t >= before for _, t in faults) and not events


def test_a_failed_session_is_a_fault_under_its_code():
    s, _, faults = signaling()
    s.on_channel_state("ESTABLISHED", None, None)
    s.on_channel_state("FAILED", "node_shutdown", "bye")
    s.on_channel_state("FAILED", None, None)
    assert faults == [("node_shutdown", None), (Fault.SESSION_FAILED, None)]


def test_nothing_heard_before_listening():
    s, _, _ = signaling("http")
    assert s.last_heard() is None
