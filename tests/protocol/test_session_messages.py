"""Session-channel messages: field checks, builders, bounds and codes (no network)."""

import json

import pytest

from unbroken.protocol.endings import Ending
from unbroken.protocol import session as proto
from unbroken.protocol.session import ProtocolError, parse_client_message, parse_server_message

OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"


def parse(message) -> dict:
    return parse_client_message(json.dumps(message))


@pytest.mark.parametrize("message", [
    {"type": "hello", "version": 1},
    {"type": "hello", "version": 1, "ping_interval": 250, "missing_pings": 4, "token": "t",
     "client": "x/1"},
    {"type": "hello", "version": 1, "ping_interval": 125.5},
    {"type": "pong", "seq": 1},
    {"type": "ping", "seq": 0},
    {"type": "publish", "id": "p-1", "stream": "cam", "sdp": OFFER},
    {"type": "play", "id": "a.b:c_d-1", "stream": "cam", "sdp": OFFER},
    {"type": "stop", "id": "p-1"},
    {"type": "stop", "id": "p-1", "future_field": [1, 2]},  # unknown fields are ignored
])
def test_valid_client_messages(message):
    assert parse(message) == message


@pytest.mark.parametrize("text, code, field, ref", [
    ("not json", "bad_json", None, None),
    ("{\"type\": \"pong\", ", "bad_json", None, None),
    ("[1, 2]", "bad_message", None, None),
    ("\"hello\"", "bad_message", None, None),
    ("null", "bad_message", None, None),
    ("{}", "bad_field", "type", None),
    ("{\"type\": 7}", "bad_field", "type", None),
    ("{\"type\": \"explode\"}", "unknown_type", None, "explode"),
    ("{\"type\": \"welcome\"}", "unknown_type", None, "welcome"),  # a server message
    ("{\"type\": \"hello\"}", "bad_field", "version", "hello"),
    ("{\"type\": \"hello\", \"version\": \"1\"}", "bad_field", "version", "hello"),
    ("{\"type\": \"hello\", \"version\": true}", "bad_field", "version", "hello"),
    ("{\"type\": \"hello\", \"version\": 1, \"ping_interval\": \"fast\"}", "bad_field",
     "ping_interval", "hello"),
    ("{\"type\": \"hello\", \"version\": 1, \"ping_interval\": -5}", "bad_field",
     "ping_interval", "hello"),
    ("{\"type\": \"hello\", \"version\": 1, \"missing_pings\": 2.5}", "bad_field",
     "missing_pings", "hello"),
    ("{\"type\": \"hello\", \"version\": 1, \"token\": 5}", "bad_field", "token", "hello"),
    ("{\"type\": \"pong\"}", "bad_field", "seq", "pong"),
    ("{\"type\": \"pong\", \"seq\": \"1\"}", "bad_field", "seq", "pong"),
    ("{\"type\": \"pong\", \"seq\": -1}", "bad_field", "seq", "pong"),
    ("{\"type\": \"pong\", \"seq\": 1e300}", "bad_field", "seq", "pong"),
    ("{\"type\": \"publish\", \"stream\": \"a\", \"sdp\": \"x\"}", "bad_field", "id", "publish"),
    ("{\"type\": \"publish\", \"id\": 5, \"stream\": \"a\", \"sdp\": \"x\"}", "bad_field", "id",
     "publish"),
    ("{\"type\": \"publish\", \"id\": \"\", \"stream\": \"a\", \"sdp\": \"x\"}", "bad_field",
     "id", "publish"),
    ("{\"type\": \"publish\", \"id\": \"a b\", \"stream\": \"a\", \"sdp\": \"x\"}", "bad_field",
     "id", "publish"),
    ("{\"type\": \"publish\", \"id\": \"p1\", \"stream\": \"a\"}", "bad_field", "sdp", "p1"),
    ("{\"type\": \"play\", \"id\": \"p1\", \"stream\": null, \"sdp\": \"x\"}", "bad_field",
     "stream", "p1"),
    ("{\"type\": \"play\", \"id\": \"p1\", \"stream\": \"a\", \"sdp\": {}}", "bad_field", "sdp",
     "p1"),
    ("{\"type\": \"stop\"}", "bad_field", "id", "stop"),
    ("{\"type\": \"stop\", \"id\": [\"x\"]}", "bad_field", "id", "stop"),
])
def test_refused_client_messages(text, code, field, ref):
    with pytest.raises(ProtocolError) as refused:
        parse_client_message(text)
    assert refused.value.code == code
    assert refused.value.field == field
    assert refused.value.ref == ref
    assert refused.value.reason
    error = proto.error_from(refused.value)
    assert error["type"] == "error" and error["code"] == code and error["ref"] == ref


def test_bytes_and_deep_nesting_are_refused_cleanly():
    with pytest.raises(ProtocolError) as refused:
        parse_client_message(b"\xff\xfe")
    assert refused.value.code == "bad_json"
    with pytest.raises(ProtocolError) as refused:
        parse_client_message("[" * 100_000 + "]" * 100_000)
    assert refused.value.code in ("bad_json", "bad_message")
    assert parse_client_message(b'{"type": "ping", "seq": 3}')["seq"] == 3


def test_long_fields_are_refused():
    with pytest.raises(ProtocolError) as refused:
        parse({"type": "publish", "id": "x" * 65, "stream": "a", "sdp": "v=0"})
    assert refused.value.field == "id"
    with pytest.raises(ProtocolError) as refused:
        parse({"type": "publish", "id": "x", "stream": "a", "sdp": "v" * (64 * 1024 + 1)})
    assert refused.value.field == "sdp"


def test_stream_names_follow_the_http_rule():
    assert proto.check_stream_name("cam-1") is None
    for bad in ("", "a/b", "../x", "a" * 129, ".x"):
        assert proto.check_stream_name(bad)


def test_ping_bounds():
    assert proto.clamp_ping_interval(None) == proto.DEFAULT_PING_INTERVAL_MS == 250
    assert proto.clamp_ping_interval(10) == 100
    assert proto.clamp_ping_interval(150.4) == 150
    assert proto.clamp_ping_interval(10 ** 9) == 5000
    assert proto.clamp_missing_pings(None) == proto.clamp_missing_pings(0) == 4
    assert proto.clamp_missing_pings(1) == 1
    assert proto.clamp_missing_pings(10 ** 6) == 20


def test_server_messages_have_the_documented_fields():
    welcome = proto.welcome("sid", 250, 4, {"max_streams": 8})
    assert welcome == {"type": "welcome", "version": 1, "session": "sid", "ping_interval": 250,
                       "missing_pings": 4, "limits": {"max_streams": 8}, "draining": False,
                       "resumed": False, "proxied": False}
    assert proto.welcome("sid", 250, 4, {}, resume_token="t", resumed=True)["resume_token"] == "t"
    assert proto.hello(resume=("sid", "t")) == {"type": "hello", "version": 1, "resume": "sid",
                                                "resume_token": "t"}
    assert proto.answer("p1", "cam", "v=0", "m1", "/whip/cam/m1") == {
        "type": "answer", "id": "p1", "stream": "cam", "sdp": "v=0", "session": "m1",
        "resource": "/whip/cam/m1"}
    assert proto.stream_state("p1", "cam", "FAILED", "not_live", "why") == {
        "type": "stream_state", "id": "p1", "stream": "cam", "state": "FAILED",
        "code": "not_live", "reason": "why"}
    assert proto.stream_event("p1", "cam", "viewercount", viewercount=3) == {
        "type": "stream_event", "id": "p1", "stream": "cam", "event": "viewercount",
        "viewercount": 3}
    assert proto.node_draining(ends_in=5.0) == {
        "type": "node_draining", "code": "draining", "reason": "node is draining",
        "redirect": None, "ends_in": 5.0}
    assert proto.node_draining(redirect="/ws")["redirect"] == "/ws"
    for absolute in ("http://other:8080/ws", "wss://x/ws", "//x/ws"):
        with pytest.raises(ValueError):
            proto.draining_data(redirect=absolute)
    assert proto.session_closing("ping_timeout", "4 pings without a pong") == {
        "type": "session_closing", "code": "ping_timeout", "reason": "4 pings without a pong"}
    assert proto.error("bad_json", "x") == {"type": "error", "code": "bad_json", "reason": "x",
                                            "ref": None}
    for message in (welcome, proto.ping(1, 5), proto.pong(1),
                    proto.session_closing("a", "b"), proto.error("a", "b")):
        assert parse_server_message(proto.encode(message)) == message


def test_client_builders_make_messages_the_server_accepts():
    for message in (proto.hello(), proto.hello(250, 4, "tok", "me"), proto.pong(7),
                    proto.ping(1), proto.publish("p1", "cam", OFFER),
                    proto.play("v1", "cam", OFFER), proto.stop("p1")):
        assert parse_client_message(proto.encode(message)) == message
    assert proto.hello() == {"type": "hello", "version": proto.PROTOCOL_VERSION}


def test_parse_server_message_refuses_unknown_types():
    with pytest.raises(ProtocolError):
        parse_server_message('{"type": "hello", "version": 1}')


def test_close_codes():
    assert proto.close_code("ping_timeout") == 4000
    assert proto.close_code("node_shutdown") == 1001
    assert proto.close_code("message_too_big") == 1009
    assert proto.close_code("unheard_of") == 1008
    assert len(set(proto.CLOSE_CODES.values())) == len(proto.CLOSE_CODES)
    assert all(c in (1000, 1001, 1008, 1009, 1011) or 4000 <= c <= 4999
               for c in proto.CLOSE_CODES.values())
    assert len(proto.close_reason("é" * 100).encode()) <= 123


@pytest.mark.parametrize("kind, ending, state, code", [
    ("publish", Ending.STOPPED, "UNPUBLISHED", "stopped"),
    ("play", Ending.STOPPED, "STOPPED", "stopped"),
    ("play", Ending.SESSION_CLOSED, "STOPPED", "session_closed"),
    ("publish", Ending.REPLACED, "UNPUBLISHED", "replaced"),
    ("play", Ending.PEER_CLOSED, "STOPPED", "peer_closed"),
    ("publish", Ending.MEDIA_TIMEOUT, "FAILED", "media_timeout"),
    ("publish", Ending.CONNECT_TIMEOUT, "FAILED", "connect_timeout"),
    ("play", Ending.CODEC_CHANGED, "FAILED", "codec_changed"),
    ("play", Ending.CONNECTION_FAILED, "FAILED", "connection_failed"),
    ("publish", Ending.NODE_SHUTDOWN, "FAILED", "node_shutdown"),
    ("play", Ending.SESSION_LOST, "FAILED", "session_lost"),
    ("play", Ending.CLOSED, "FAILED", "closed"),
])
def test_final_states_of_media_sessions(kind, ending, state, code):
    assert (ending.final_state(kind), ending) == (state, code)
